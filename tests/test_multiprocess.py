"""SFT and GRPO on two CPU processes (DDP over gloo, loopback only): the ranks split each global
batch, and after training every rank holds the same weights as the folder the main process saved.

The stages save on the main process only, so each rank's view comes from LAUNCHER, a script run
under `accelerate launch` that wraps a few of the stage's functions before calling the CLI:
`save_model` also dumps this rank's trainable parameters when it saves `final/`, and what the rank
trained on (SFT examples, GRPO sample ids) is recorded as it is handed to `build_batch` /
`grpo_step`.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sightsound.store import read_jsonl
from sightsound.manifest import read_manifest
from sightsound.stages import grpo, sft
from sightsound.models.loading import load_model
from sightsound.training.loop import Batches
from tests.test_training import toy_run  # noqa: F401  (the fixture: 16 samples, CoT traces, unanimous labels)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "accelerate" / "cpu2.yaml"
PROCESSES = 2

LAUNCHER = '''
import json
import sys
from pathlib import Path

import torch

from sightsound import cli, rl
from sightsound.stages import grpo, sft
from sightsound.training import loop

dump = Path(sys.argv[1])
seen = []  # what this rank trained on, one entry per micro-batch (SFT) or step (GRPO)

# The untrained tiny student never writes the answer format, so with the accuracy and format rewards
# every group has the same reward, the advantages are 0, and GRPO would not move the weights at all
# (the ranks would agree trivially). This reward varies within a group from the first step.
rl.REWARDS["length"] = lambda completion, label, options: len(completion) / 100


def recording_save(original):
    def save_model(accelerator, model, processor, path, merge=False, merged_from=None):
        original(accelerator, model, processor, path, merge=merge, merged_from=merged_from)
        if Path(path).name == "final":
            rank = accelerator.process_index
            weights = {name: p.detach().cpu().clone()
                       for name, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
            torch.save(weights, dump / f"rank{rank}.pt")
            (dump / f"rank{rank}.json").write_text(json.dumps({
                "process_index": rank, "num_processes": accelerator.num_processes,
                "distributed_type": str(accelerator.distributed_type), "seen": seen}))
    return save_model


def recording_build_batch(original):
    def build_batch(processor, examples):
        seen.append([json.dumps(e, sort_keys=True) for e in examples])
        return original(processor, examples)
    return build_batch


def recording_grpo_step(original):
    def grpo_step(accelerator, policy, reference, processor, optimizer, trainable, batch, cfg, step, *log):
        seen.append([sample.id for sample, _ in batch])
        return original(accelerator, policy, reference, processor, optimizer, trainable, batch, cfg, step, *log)
    return grpo_step


loop.save_model = recording_save(loop.save_model)
sft.build_batch = recording_build_batch(sft.build_batch)
grpo.grpo_step = recording_grpo_step(grpo.grpo_step)
sys.exit(cli.main(sys.argv[2:]))
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ranks_env(**extra: str) -> dict:
    """The environment of CPU ranks on loopback: each Accelerator picks MULTI_CPU (gloo), this
    checkout is importable, and gloo talks over `lo`."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", **extra, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def launch(tmp_path: Path, name: str, args: list[str]) -> list[dict]:
    """`sightsound ARGS` on two CPU processes; each rank's {info, weights}, by rank."""
    script, dump = tmp_path / "launcher.py", tmp_path / f"ranks-{name}"
    script.write_text(LAUNCHER)
    dump.mkdir()
    # accelerate 1.x launches a MULTI_CPU config through its single-process launcher (it fans out
    # only through mpirun with --mpirun_hostfile), so `--multi_gpu` picks torch's elastic launcher
    # (what DDP on GPUs uses), and ACCELERATE_USE_CPU makes each rank's Accelerator choose
    # MULTI_CPU with gloo. The config gives 2 processes on 127.0.0.1; gloo stays on loopback too.
    env = cpu_ranks_env()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--multi_gpu",
               "--main_process_port", str(free_port()), str(script), str(dump), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    ranks = []
    for rank in range(PROCESSES):
        info = json.loads((dump / f"rank{rank}.json").read_text())
        assert info["process_index"] == rank and info["num_processes"] == PROCESSES, info
        assert info["distributed_type"].endswith("MULTI_CPU"), info  # not two independent single-process runs
        ranks.append({**info, "weights": torch.load(dump / f"rank{rank}.pt")})
    return ranks


def assert_same_weights(ranks: list[dict]) -> dict[str, torch.Tensor]:
    first = ranks[0]["weights"]
    assert first
    for other in ranks[1:]:
        assert other["weights"].keys() == first.keys()
        differing = [k for k in first if not torch.equal(first[k], other["weights"][k])]
        assert not differing, f"rank {other['process_index']} differs from rank 0 in {differing[:5]}"
    return first


SFT_STEPS, SFT_BATCH, SFT_ACCUM = 3, 2, 2


@pytest.fixture(scope="module")
def sft_on_two_ranks(toy_run, tiny_models, tmp_path_factory):  # noqa: F811
    """LoRA SFT, 3 steps of 2 micro-batches of 2 examples per rank (gradient accumulation under DDP)."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    run = tmp / "run"
    run.mkdir()
    for name in ("samples.jsonl", "corpus.jsonl", "consensus.jsonl"):
        (run / name).write_bytes((toy_run / name).read_bytes())
    ranks = launch(tmp, "sft", ["sft", "--out", str(run), f"model={tiny_models['student']}", "target=cot",
                                f"steps={SFT_STEPS}", f"batch_size={SFT_BATCH}", f"grad_accum={SFT_ACCUM}",
                                "lr=1e-3", "log_every=1", "save_every=2", "progress=false"])
    return run, ranks


def test_sft_ranks_split_the_batches_and_end_with_the_same_weights(sft_on_two_ranks):
    run, ranks = sft_on_two_ranks
    out = run / "sft"
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, SFT_STEPS + 1))
    assert read_manifest(run, "sft")["counts"]["steps"] == SFT_STEPS
    assert (out / "final" / "adapter_config.json").exists() and (out / f"checkpoint-{SFT_STEPS}").exists()

    # each global batch is split between the ranks, not duplicated on both
    examples, _ = sft.load_examples(run, sft.SFTConfig(target="cot"))
    order = Batches(len(examples), SFT_BATCH * PROCESSES, seed=0)
    for micro in range(SFT_STEPS * SFT_ACCUM):
        indices = order.next()
        for rank in ranks:
            mine = indices[rank["process_index"]::PROCESSES]
            assert rank["seen"][micro] == [json.dumps(examples[i], sort_keys=True) for i in mine]
    assert all(len(rank["seen"]) == SFT_STEPS * SFT_ACCUM for rank in ranks)

    weights = assert_same_weights(ranks)
    assert all("lora_" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # trained: B starts at zero
    from safetensors.torch import load_file

    saved = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert saved.keys() == {k.replace(".default", "") for k in weights}
    assert all(torch.equal(saved[k.replace(".default", "")], v) for k, v in weights.items())


GRPO_STEPS, GRPO_PROMPTS = 2, 1


def test_full_parameter_grpo_ranks_split_the_prompts_and_end_with_the_same_weights(sft_on_two_ranks, tmp_path):
    run, _ = sft_on_two_ranks
    start = run / "sft" / "final"
    ranks = launch(tmp_path, "grpo", ["grpo", "--out", str(run), f"model={start}", f"steps={GRPO_STEPS}",
                                      "group_size=3", f"prompts_per_step={GRPO_PROMPTS}", "lr=1e-4",
                                      "max_completion_tokens=8", "save_every=1", "progress=false",
                                      "lora.enabled=false", "rewards={length: 1.0, format: 1.0}"])
    out = run / "grpo"
    rows = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, GRPO_STEPS + 1))
    assert rows[-1]["kl"] > 0  # the policy has moved away from the reference
    assert read_manifest(run, "grpo")["counts"]["steps"] == GRPO_STEPS

    items, _ = grpo.load_prompts(run)
    order = Batches(len(items), GRPO_PROMPTS * PROCESSES, seed=0)
    for step in range(GRPO_STEPS):
        indices = order.next()
        for rank in ranks:
            assert rank["seen"][step] == [items[i][0].id for i in indices[rank["process_index"]::PROCESSES]]
    assert all(len(rank["seen"]) == GRPO_STEPS for rank in ranks)

    weights = assert_same_weights(ranks)
    initial, _ = load_model(start)
    initial = dict(initial.merge_and_unload().named_parameters())
    assert weights.keys() == initial.keys()  # full-parameter: every weight is trained
    assert any(not torch.equal(weights[k], initial[k]) for k in weights)
    final, _ = load_model(out / "final")
    final = dict(final.named_parameters())
    assert final.keys() == weights.keys() and all(torch.equal(final[k], v) for k, v in weights.items())


def test_two_nodes_share_the_run_directory_and_only_global_rank_0_writes(toy_run, tiny_models, tmp_path):  # noqa: F811
    """Two "nodes" (two launchers on loopback, one process each, node ranks 0 and 1) train SFT into
    one run directory, as on shared storage: every file is written once, by global rank 0 (node 1's
    process is its node's local main process, and writes nothing), and both end with its weights."""
    run, dump = tmp_path / "run", tmp_path / "ranks"
    run.mkdir()
    dump.mkdir()
    for name in ("samples.jsonl", "corpus.jsonl", "consensus.jsonl"):
        (run / name).write_bytes((toy_run / name).read_bytes())
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    env = cpu_ranks_env()
    port = str(free_port())
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--multi_gpu",
         "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(node), "--main_process_ip", "127.0.0.1",
         "--main_process_port", port, str(script), str(dump), "sft", "--out", str(run),
         f"model={tiny_models['student']}", "target=cot", "steps=2", "batch_size=2", "lr=1e-3", "log_every=1",
         "save_every=1", "progress=false"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    infos = [json.loads((dump / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [i["process_index"] for i in infos] == [0, 1] and all(i["num_processes"] == 2 for i in infos)
    assert [r["step"] for r in read_jsonl(run / "sft" / "metrics.jsonl")] == [1, 2]  # once, not once per node
    assert read_manifest(run, "sft")["counts"]["steps"] == 2
    assert sorted(p.name for p in (run / "sft").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert_same_weights([{**info, "weights": torch.load(dump / f"rank{info['process_index']}.pt")} for info in infos])
    assert sum("sft: 2 steps" in output for output in outputs) == 1  # only global rank 0 reports
