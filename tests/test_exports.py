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
    grpo = lines(exports.export(run_dir, "trl", "grpo"))[0]
    assert set(grpo) == {"prompt", "solution", "audio", "id"} and grpo["solution"] == prompts.label_text(
        ["flute", "drum", "bell"], 0, "letter")


def test_every_export_loads_with_datasets(run_dir):
    from datasets import load_dataset

    for fmt, what in (("swift", "sft"), ("swift", "grpo"), ("llamafactory", "sft"), ("trl", "sft"), ("trl", "grpo")):
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
