"""`sightsound export`: the corpus and the GRPO prompts in ms-swift's, LLaMA-Factory's and TRL's schemas."""

import json

import pytest

from sightsound import exports, prompts
from sightsound.cli import main as cli
from sightsound.config import ConfigError
from sightsound.records import Consensus, CorpusRow, Sample
from sightsound.store import read_jsonl, to_json


@pytest.fixture
def run_dir(tmp_path):
    """Two questions on two clips; the first has two accepted traces and a unanimous vote."""
    run = tmp_path / "run"
    run.mkdir()
    samples = []
    for i in range(2):
        wav = run / f"clip{i}.wav"
        wav.write_bytes(b"RIFF")
        samples.append(Sample(str(i), "synth", "train", "Which object is making a sound in the video?",
                              ["flute", "drum", "bell"], i, ["flute", "drum", "bell"][i], "Which", audio=str(wav)))
    first = samples[0]
    corpus = [CorpusRow(f"0#{k}", "0", k, first.dataset, first.split, first.category, first.audio, first.question,
                        first.options, f"<think>I hear a flute ({k}).</think><answer>A</answer>", 0, "flute")
              for k in range(2)]
    consensus = [Consensus("0", [0, 0], True, 0, "flute", True, "Which"),
                 Consensus("1", [0, 1], False, None, None, None, "Which")]
    for name, rows in (("samples", samples), ("corpus", corpus), ("consensus", consensus)):
        rows = [to_json(r) for r in rows]
        (run / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_swift_rows_carry_one_audio_tag_per_audio(run_dir):
    rows = lines(exports.export(run_dir, "swift"))
    assert len(rows) == 2 and rows[0]["audios"] == [str(run_dir / "clip0.wav")]
    user, assistant = rows[0]["messages"]
    assert user["role"] == "user" and user["content"].startswith("<audio>") and user["content"].count("<audio>") == 1
    assert "A. flute" in user["content"] and "<think>" in user["content"]  # the student's CoT prompt, lettered options
    assert assistant == {"role": "assistant", "content": "<think>I hear a flute (0).</think><answer>A</answer>"}
    grpo = lines(exports.export(run_dir, "swift", "grpo"))
    assert len(grpo) == 1 and [m["role"] for m in grpo[0]["messages"]] == ["user"] and grpo[0]["solution"] == "A"
    assert lines(exports.export(run_dir, "swift", "grpo", answer="text"))[0]["solution"] == "flute"


def test_llamafactory_rows_are_sharegpt_and_registered(run_dir):
    """LLaMA-Factory's documented dataset schema (hiyouga/LLaMA-Factory, data/README.md, "Sharegpt
    Format" with an `audios` column): a `dataset_info.json` entry with `file_name`, `formatting:
    sharegpt`, `columns` {messages, audios} and the role tags; one `<audio>` tag in the messages per
    audio file. (LLaMA-Factory pins older transformers and torch releases than ours.)"""
    path = exports.export(run_dir, "llamafactory", out=run_dir / "lf" / "avqa_cot.jsonl")
    info = json.loads((path.parent / "dataset_info.json").read_text())["avqa_cot"]
    assert info["file_name"] == "avqa_cot.jsonl" and info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "messages", "audios": "audios"} and info["tags"]["user_tag"] == "user"
    row = lines(path)[0]
    assert set(row) >= {"messages", "audios"} and row["messages"][0]["content"].count("<audio>") == len(row["audios"])
    with pytest.raises(ConfigError, match="no GRPO trainer"):
        exports.export(run_dir, "llamafactory", "grpo")


def test_trl_rows_are_conversational_prompt_completion(run_dir):
    row = lines(exports.export(run_dir, "trl"))[0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    sample = next(read_jsonl(run_dir / "samples.jsonl", Sample))
    assert row["prompt"][0]["content"] == exports.prompt_text(sample, "letter")  # the audio variant of the question
    assert "in the video" not in row["prompt"][0]["content"]
    assert row["audio"] == str(run_dir / "clip0.wav")
    with pytest.raises(ConfigError, match="no audio"):  # TRL's GRPOTrainer passes images only
        exports.export(run_dir, "trl", "grpo")


def test_trl_sft_trainer_feeds_the_audio_through_our_collator(run_dir, tiny_models, tmp_path):
    """TRL's own SFTTrainer, on our TRL export, with the collator its documentation allows for
    other modalities (skip_prepare_dataset, remove_unused_columns=False): a step trains, the
    audio tower encodes every row's clip, and only the completion is in the loss."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from sightsound.models.loading import load_model
    from sightsound.training.trl_audio import AudioCollator
    from tests.conftest import make_wav

    for i in range(2):
        make_wav(run_dir / f"clip{i}.wav", freq=300 + 200 * i, rate=16_000)
    rows = load_dataset("json", data_files=str(exports.export(run_dir, "trl")))["train"]
    model, processor = load_model(tiny_models["student"], training=True)
    heard = []
    tower = next(module for module in model.modules() if type(module).__name__ == "Qwen2AudioEncoder")
    tower.register_forward_hook(lambda module, args, out: heard.append(args[0].shape[0]))
    collator = AudioCollator(processor)
    batch = collator([rows[0]])
    assert "input_features" in batch and (batch["labels"] != -100).sum() < batch["attention_mask"].sum()
    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2,
                     remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
                     report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=processor.tokenizer,
                         data_collator=collator)
    try:
        trainer.train()
    finally:  # TRL's trainer leaves accelerate's process-wide state set (it changed later tests' SFT losses)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    assert sum(heard) == 2 and trainer.state.log_history[0]["loss"] > 0


def test_every_export_loads_with_datasets(run_dir):
    from datasets import load_dataset

    for fmt, what in (("swift", "sft"), ("swift", "grpo"), ("llamafactory", "sft"), ("trl", "sft")):
        path = exports.export(run_dir, fmt, what)
        table = load_dataset("json", data_files=str(path), split="train")
        assert table.num_rows == (2 if what == "sft" else 1), (fmt, what)


def test_export_command_and_its_errors(run_dir, tmp_path, capsys):
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(tmp_path / "t.jsonl")]) == 0
    assert "2 sft rows in trl's format" in capsys.readouterr().out and (tmp_path / "t.jsonl").exists()
    (run_dir / "corpus.jsonl").unlink()
    assert cli(["export", str(run_dir), "--format", "swift"]) == 1
    assert "run `sightsound verify`" in capsys.readouterr().err
    assert cli(["export", str(run_dir), "--format", "llamafactory", "--what", "grpo"]) == 2


def test_an_export_never_replaces_the_runs_own_files_nor_an_existing_file_unless_forced(run_dir, tmp_path, capsys):
    samples = (run_dir / "samples.jsonl").read_bytes()
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(run_dir / "samples.jsonl")]) == 2
    assert "is one of the run directory's own files" in capsys.readouterr().err
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(run_dir / "samples.jsonl"), "--force"]) == 2
    assert (run_dir / "samples.jsonl").read_bytes() == samples

    mine = tmp_path / "mine.jsonl"
    mine.write_text("keep me\n")
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(mine)]) == 2
    assert "exists; pass --force to replace it" in capsys.readouterr().err and mine.read_text() == "keep me\n"
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(mine), "--force"]) == 0
    assert cli(["export", str(run_dir), "--format", "trl", "--out", str(run_dir / "export" / "x.jsonl")]) == 0


def test_damaged_registries_and_unknown_samples_are_named(run_dir, tmp_path):
    out = tmp_path / "lf" / "corpus.jsonl"
    out.parent.mkdir()
    for damaged in ("{not json", "[1, 2]"):
        (out.parent / "dataset_info.json").write_text(damaged)
        with pytest.raises(ValueError, match=r"dataset_info\.json: "):
            exports.export(run_dir, "llamafactory", out=out, force=True)
    with (run_dir / "consensus.jsonl").open("a") as fh:
        row = json.loads((run_dir / "consensus.jsonl").read_text().splitlines()[0])
        fh.write(json.dumps({**row, "id": "ghost", "unanimous": True}) + "\n")
    with pytest.raises(ValueError, match=r"consensus.jsonl: 1 rows name samples .* \(first: id .ghost.\)"):
        exports.export(run_dir, "swift", "grpo")


def test_the_default_answer_form_is_the_runs_own_and_prompts_agree_with_answers(run_dir):
    (run_dir / "config").mkdir()
    (run_dir / "config" / "grpo.yaml").write_text("answer: text\n")
    row = lines(exports.export(run_dir, "swift", "grpo"))[0]  # the run's grpo asked for text
    assert row["solution"] == "flute" and "words of the option" in row["messages"][0]["content"]
    assert lines(exports.export(run_dir, "swift", "grpo", answer="letter", force=True))[0]["solution"] == "A"

    (run_dir / "config" / "sft.yaml").write_text("answer: letter\n")
    row = lines(exports.export(run_dir, "swift"))[0]  # traces answer "A", the prompt asks for a letter
    assert row["messages"][-1]["content"].endswith("<answer>A</answer>")
    assert "option's letter" in row["messages"][0]["content"] or "letter" in row["messages"][0]["content"]
    with pytest.raises(ConfigError, match="traces answer with the option letter, but --answer text"):
        exports.export(run_dir, "swift", answer="text", force=True)


def _load_swift_plugin(path):
    """Import a written plugin file as ms-swift's `--external_plugins` does (by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sightsound_swift_rewards_under_test", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_swift_grpo_export_writes_a_reward_plugin_ms_swift_registers(run_dir, monkeypatch):
    """ms-swift's custom rewards, as its documentation and code define them: a plugin file passed
    with `--external_plugins` adds classes to the `orms` registry (ms-swift 4: `swift.rewards`,
    swift/rewards/orm.py; 3.x: `swift.plugin`), each subclassing `ORM` (its `__init__(args=None,
    **kwargs)`), built as `orms[name](args=args)` and called as `reward(completions, **columns)`
    with the dataset's columns batched (swift/rl_core/grpo_algorithm.py, compute_rewards_per_func).
    This stands in for that registry; the test below uses ms-swift's own where it is installed."""
    import sys
    import types

    class ORM:  # ms-swift's base class, as documented
        def __init__(self, args=None, **kwargs):
            self.args = args

    registry = types.ModuleType("swift.rewards")
    registry.ORM, registry.orms = ORM, {"accuracy": object}
    monkeypatch.setitem(sys.modules, "swift", types.ModuleType("swift"))
    monkeypatch.setitem(sys.modules, "swift.rewards", registry)
    path = exports.export(run_dir, "swift", "grpo", answer="text")
    plugin = path.parent / exports.SWIFT_PLUGIN
    assert "--reward_funcs sightsound_accuracy sightsound_format" in plugin.read_text()
    _load_swift_plugin(plugin)
    assert {"sightsound_accuracy", "sightsound_format", "accuracy"} == set(registry.orms)
    rows = lines(path)
    columns = {"solution": [rows[0]["solution"]] * 3, "options": [rows[0]["options"]] * 3, "trainer_state": None}
    completions = ["<think>a flute</think><answer>flute</answer>", "<think>x</think><answer>drum</answer>", "flute"]
    accuracy = registry.orms["sightsound_accuracy"](args=None)
    assert accuracy(completions, **columns) == [1.0, 0.0, 0.0]  # the stock reward read "flute" as no number: 0
    assert registry.orms["sightsound_format"]()(completions, **columns) == [1.0, 1.0, 0.0]


def test_swift_reward_plugin_in_ms_swift_itself(run_dir):
    """Where ms-swift is installed (a throwaway environment: it pins transformers < 5.20, trl < 1),
    its own scorer (`compute_rewards_per_func`, what its GRPO trainer calls) pays our registered
    rewards on sampled completions of the export's rows, reading `solution` and `options`."""
    pytest.importorskip("swift.rewards", reason="ms-swift is not installed in this environment")
    from swift.rewards import orms
    from swift.rl_core.data import GRPOSample
    from swift.rl_core.grpo_algorithm import compute_rewards_per_func

    path = exports.export(run_dir, "swift", "grpo", answer="text")
    _load_swift_plugin(path.parent / exports.SWIFT_PLUGIN)
    row = lines(path)[0]
    said = ["<think>I hear a flute.</think><answer>flute</answer>", "<think>I hear a drum.</think><answer>drum</answer>"]
    samples = [GRPOSample(messages=[*row["messages"], {"role": "assistant", "content": text}], audios=row["audios"],
                          extra={"solution": row["solution"], "options": row["options"]}) for text in said]
    rewards = compute_rewards_per_func(samples, [orms["sightsound_accuracy"](), orms["sightsound_format"]()],
                                       None, "cpu")
    assert rewards.tolist() == [[1.0, 1.0], [0.0, 1.0]]
