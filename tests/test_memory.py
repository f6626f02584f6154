"""`sightsound estimate`: parameter counts from a meta-device model, launchers, and the arithmetic."""

import pytest

from sightsound import cli
from sightsound.config import ConfigError
from sightsound.training import memory
from sightsound.training.student import LoraConfig

GB = 1e9


@pytest.fixture(scope="module")
def paper_student():
    return memory.model_config("Qwen/Qwen2-Audio-7B-Instruct")


def test_the_paper_student_has_its_published_size(paper_student):
    full = memory.count_parameters(paper_student, LoraConfig(enabled=False))
    assert 8.35 * GB < full.total < 8.45 * GB and full.trainable == full.total  # "about 8.4 B"
    assert 0.6 * GB < full.audio_trainable < 0.7 * GB  # the Whisper-large-sized encoder
    frozen = memory.count_parameters(paper_student, LoraConfig(enabled=False), freeze=["audio_tower"])
    assert frozen.audio_trainable == 0 and frozen.trainable == full.total - full.audio_trainable
    # LoRA rank 8 on the decoder's seven projections: 8 x (in + out) each, 32 layers
    lora = memory.count_parameters(paper_student, LoraConfig(rank=8))
    per_layer = 8 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert lora.trainable == 32 * per_layer and lora.audio_trainable == 0


def test_counts_match_the_loaded_tiny_model(tiny_models):
    from sightsound.models.loading import load_model

    model, _ = load_model(str(tiny_models["student"]), "float32", training=True)
    counts = memory.count_parameters(memory.model_config(str(tiny_models["student"])), LoraConfig(enabled=False))
    assert counts.total == sum(p.numel() for p in model.parameters())


def test_launchers_are_read_from_the_accelerate_configs():
    assert memory.launcher_of(None) == ("single", 1, False)
    assert memory.launcher_of("accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 6") == (
        "ddp", 6, False)
    assert memory.launcher_of("accelerate launch --config_file configs/accelerate/zero3.yaml") == ("zero3", 8, False)
    assert memory.launcher_of("accelerate launch --config_file=configs/accelerate/zero2.yaml") == ("zero2", 8, False)
    assert memory.launcher_of("accelerate launch --config_file configs/accelerate/fsdp.yaml") == ("fsdp", 8, False)
    with pytest.raises(ValueError, match="nowhere.yaml not found"):
        memory.launcher_of("accelerate launch --config_file nowhere.yaml")


def test_what_each_launcher_holds_per_device(paper_student):
    counts = memory.count_parameters(paper_student, LoraConfig(enabled=False))
    P = counts.total

    def held(**settings):
        parts = memory.estimate(paper_student, counts, memory.Setup(stage="grpo", reference=True, **settings))
        return parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["reference"], parts

    ddp, _ = held(launcher="ddp", processes=6)
    assert ddp == pytest.approx(P * (2 + 2 + 4 + 2))  # bf16 weights, grads, two AdamW states, reference: ~84 GB
    zero2, _ = held(launcher="zero2", processes=6)
    assert zero2 == pytest.approx(P * 2 + P * (2 + 12) / 6 + P * 2)
    zero3, parts = held(launcher="zero3", processes=6)  # the reference sharded as the policy is
    assert zero3 == pytest.approx(P * (2 + 2 + 12) / 6 + P * 2 / 6)
    offloaded, _ = held(launcher="zero3", processes=6, offload_optimizer=True)
    assert offloaded == pytest.approx(P * (2 + 2) / 6 + P * 2 / 6)
    fsdp, _ = held(launcher="fsdp", processes=6)  # fp32 trainable weights, gradients and states; bf16 reference
    assert fsdp == pytest.approx(P * (4 + 4 + 8) / 6 + P * 2 / 6)
    assert parts["total"] == pytest.approx(zero3 + max(parts["activations"] + parts["logits"], parts["rollout_cache"]))
    with pytest.raises(ValueError, match="launcher 'megatron'"):
        memory.estimate(paper_student, counts, memory.Setup(launcher="megatron"))


def test_checkpointing_and_encoding_each_clip_once_shrink_activations(paper_student):
    counts = memory.count_parameters(paper_student, LoraConfig(enabled=False))
    base = dict(stage="grpo", sequences=32, completion_tokens=256)
    plain = memory.estimate(paper_student, counts, memory.Setup(clips=32, **base))["activations"]
    once = memory.estimate(paper_student, counts, memory.Setup(clips=4, **base))["activations"]
    checkpointed = memory.estimate(paper_student, counts, memory.Setup(clips=4, gradient_checkpointing=True,
                                                                       **base))["activations"]
    assert checkpointed < once / 4 < plain / 4
    frozen = memory.count_parameters(paper_student, LoraConfig(enabled=False), freeze=["audio_tower"])
    no_encoder = memory.estimate(paper_student, frozen, memory.Setup(clips=4, **base))["activations"]
    assert no_encoder < once  # a frozen encoder keeps nothing for backward
    grouped = memory.estimate(paper_student, counts, memory.Setup(clips=4, grouped=True, **base))["activations"]
    assert grouped < 0.65 * once  # each prompt (250 audio + 100 text tokens) through the decoder once, not 8 times


def test_the_estimate_groups_grpo_scoring_for_the_models_that_do(paper_student):
    from sightsound.stages.grpo import GRPOConfig

    result = memory.stage_estimates("grpo", GRPOConfig(model="Qwen/Qwen2-Audio-7B-Instruct"), None, audio_seconds=30,
                                    prompt_tokens=100, response_tokens=256)
    assert result["setup"].grouped and "each prompt once for its group" in memory.describe(result)


def test_gradient_checkpointing_auto_turns_on_only_when_the_gpu_needs_it(monkeypatch):
    """`gradient_checkpointing: auto` on the paper's shapes: SFT checkpoints on a 48 GB A40 and not
    on a 141 GB H200; full-parameter GRPO with its reference checkpoints on both; off on a CPU;
    true and false are kept as configured."""
    from types import SimpleNamespace

    import torch
    from accelerate.utils import DistributedType

    from sightsound.stages import grpo, sft

    shapes = lambda: {"prompt_tokens": 120, "response_tokens": 512, "audio_seconds": 10.0}  # noqa: E731
    one_gpu = SimpleNamespace(device=torch.device("cuda"), distributed_type=DistributedType.NO, num_processes=1,
                              state=SimpleNamespace(deepspeed_plugin=None))
    paper = dict(model="Qwen/Qwen2-Audio-7B-Instruct", dtype="bfloat16", gradient_checkpointing="auto")
    sft_cfg = sft.SFTConfig(**paper, batch_size=8)
    grpo_cfg = grpo.GRPOConfig(**paper, lora=LoraConfig(enabled=False), max_completion_tokens=512)
    decisions = {}
    for gpu, gib in (("A40", 44.4), ("H200", 139.8)):
        monkeypatch.setattr(memory, "device_memory", lambda device, gib=gib: int(gib * 1024 ** 3))
        decisions[gpu] = [memory.checkpointing(stage, cfg, one_gpu, shapes)[0]
                          for stage, cfg in (("sft", sft_cfg), ("grpo", grpo_cfg))]
    assert decisions == {"A40": [True, True], "H200": [False, True]}
    on_cpu = SimpleNamespace(device=torch.device("cpu"))
    assert memory.checkpointing("sft", sft_cfg, on_cpu, shapes) == (False, "auto: not on a GPU")
    assert memory.checkpointing("sft", sft.SFTConfig(gradient_checkpointing=True), one_gpu, shapes)[0] is True
    with pytest.raises(ConfigError, match="true, false or auto"):
        sft.SFTConfig(gradient_checkpointing="sometimes")


def test_training_shapes_are_the_longest_prompt_response_and_clip(tiny_models):
    import numpy as np

    from sightsound.models.loading import load_model, render

    _, processor = load_model(tiny_models["student"])
    turns = [[{"role": "user", "content": [{"type": "audio", "audio": np.zeros(16_000 * seconds, np.float32)},
                                           {"type": "text", "text": text}]}]
             for seconds, text in ((2, "Which?"), (3, "Which of these is sounding, and how many are there?"))]
    shapes = memory.shapes_of(processor, turns, ["<answer>flute</answer>", 7])
    assert shapes["audio_seconds"] == 3.0
    assert shapes["prompt_tokens"] == len(processor.tokenizer(render(processor, turns[1])).input_ids)
    assert shapes["response_tokens"] == max(7, len(processor.tokenizer("<answer>flute</answer>").input_ids))


def test_estimate_command_prints_both_stages_for_the_paper_config(capsys):
    assert cli.main(["estimate", "configs/sightsound-r1.yaml", "--gpu-gib", "48"]) == 0
    out = capsys.readouterr().out
    assert "sft: Qwen/Qwen2-Audio-7B-Instruct" in out and "grpo: Qwen/Qwen2-Audio-7B-Instruct" in out
    assert "8.40 B parameters" in out or "8.39 B parameters" in out
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "rollout_cache", "total"):
        assert part in out
    assert out.count("fits in 48 GiB") == 2  # the paper config's launchers make both stages fit


def test_the_gpu_check_runs_its_steps_on_a_tiny_model_on_cpu(tiny_models, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = gpu_check.main(["--smoke", "--config", str(tiny_models["student"]), "--audio-seconds", "2",
                              "--prompt-tokens", "20", "--response-tokens", "8", "--sft-batch", "2", "--prompts", "2",
                              "--group", "2", "--completion-tokens", "4", "--steps", "1"])
    assert results["sft"]["tokens"] > 0 and results["grpo"]["rollout_seconds"] > 0 and results["grpo"]["seconds"] > 0
    out = capsys.readouterr().out
    assert "sft :" in out and "grpo:" in out and "tokens/s" in out and "estimate" in out
