"""Fuzzing the inputs a user hands us: metadata records, config values, media files and command
lines, each mutated in many ways. Every case states its expected outcome — a clear error naming
the file, record and field; a skip with its reason; or accepted — and nothing may end in a
traceback or another outcome.

The expectations come from the dataset formats and the meaning of each setting (the SPEC tables
below), not from the code under test. Cases are generated from a fixed list of mutations, so a
failure names its case and reproduces exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sightsound import datasets, media
from sightsound.cli import main as cli
from sightsound.config import ConfigError, load_config
from sightsound.datasets.reading import DatasetError, Entry, Skip
from sightsound.store import read_jsonl
from tests.conftest import make_corrupt, make_wav

# --- metadata records -----------------------------------------------------------------------------

VALID = {
    "avqa": {"id": 7, "video_name": "clipA_000030", "video_id": 3, "question_text": "What makes the sound?",
             "multi_choice": ["dog", "cat", "bird", "cow"], "answer": 1, "question_relation": "Sound",
             "question_type": "Which"},
    "mmau": {"id": "q7", "audio_id": "./test-mini-audios/q7.wav", "question": "Who speaks?",
             "choices": ["Man", "Woman"], "answer": "Woman", "dataset": "x", "task": "speech",
             "split": "test-mini", "category": "Reasoning", "sub-category": "s", "difficulty": "easy"},
    "music-avqa": {"video_id": "00000093", "question_id": 7, "type": '["Audio", "Counting"]',
                   "question_content": "How many instruments?", "templ_values": "[]", "question_deleted": 0,
                   "anser": "two"},
    "jsonl": {"id": "q7", "question": "What plays?", "options": ["piano", "drum"], "answer": 0, "audio": "a.wav"},
}
FILES = {"avqa": "val_qa.json", "mmau": "mmau-test-mini.json", "music-avqa": "avqa-test.json", "jsonl": "test.jsonl"}
ID_KEY = {"avqa": "id", "mmau": "id", "music-avqa": "question_id", "jsonl": "id"}

# Per dataset, each field the format requires and the values it admits (a predicate on the value).
SPEC = {
    "avqa": {"id": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
             "video_name": lambda v: isinstance(v, str),
             "question_text": lambda v: isinstance(v, str),
             "multi_choice": lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(o, str) for o in v),
             "answer": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 4,
             "question_type": lambda v: isinstance(v, str)},
    "mmau": {"id": lambda v: isinstance(v, str), "audio_id": lambda v: isinstance(v, str),
             "question": lambda v: isinstance(v, str),
             "choices": lambda v: isinstance(v, list) and 2 <= len(v) <= 8 and all(isinstance(o, str) for o in v)
             and "Woman" in v,
             "answer": lambda v: v == "Woman", "task": lambda v: isinstance(v, str)},
    "music-avqa": {"question_id": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
                   "video_id": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
                   "type": lambda v: v in ('["Audio", "Counting"]', '["Visual", "Location"]'),
                   "question_content": lambda v: isinstance(v, str) and "<" not in v,
                   "templ_values": lambda v: v == "[]", "anser": lambda v: isinstance(v, str)},
    "jsonl": {"id": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
              "question": lambda v: isinstance(v, str),
              "options": lambda v: v in ([], None) or (isinstance(v, list) and len(v) >= 2
                                                          and all(isinstance(o, str) for o in v)),
              "answer": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2),
              "audio": lambda v: isinstance(v, str) and v != ""},
}
MUTATIONS = {"missing": ..., "null": None, "true": True, "int": -1, "float": 1.5, "string": "x", "empty": "",
             "list": ["x"], "dict": {"k": 1}, "long list": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}


def _record_cases():
    for dataset, fields in SPEC.items():
        for name, admits in fields.items():
            for mutation, value in MUTATIONS.items():
                if mutation == "missing":
                    # a missing optional field is fine where the format has a default
                    accepted = dataset == "jsonl" and name in ("options", "answer")
                else:
                    accepted = admits(value)
                yield pytest.param(dataset, name, mutation, value, accepted, id=f"{dataset}-{name}-{mutation}")
        yield pytest.param(dataset, "extra_field", "string", "x", True, id=f"{dataset}-extra-field")


RECORD_CASES = list(_record_cases())


@pytest.mark.parametrize("dataset, name, mutation, value, accepted", RECORD_CASES)
def test_a_mutated_record_is_accepted_or_skipped_naming_file_record_and_field(tmp_path, dataset, name, mutation,
                                                                              value, accepted):
    record = dict(VALID[dataset])
    if mutation == "missing":
        record.pop(name, None)
    else:
        record[name] = value
    if dataset == "jsonl" and name == "options" and accepted and not record.get("options"):
        record["answer_text"] = "piano"  # open-ended: the answer is text
        record.pop("answer", None)
    if dataset == "jsonl" and name == "answer" and accepted and record.get("answer") is None:
        record["answer_text"] = "piano"
    path = tmp_path / FILES[dataset]
    if dataset == "jsonl":
        path.write_text(json.dumps(VALID[dataset] | {"id": "good"}) + "\n" + json.dumps(record) + "\n")
    else:
        good = VALID[dataset] | {ID_KEY[dataset]: "good" if dataset != "avqa" else 99}
        path.write_text(json.dumps([good, record]))
    entries = list(datasets.read(dataset, tmp_path).entries)
    assert isinstance(entries[0], Entry), entries[0]  # the good record is never affected
    outcome = entries[1]
    if accepted:
        assert isinstance(outcome, Entry), outcome
        return
    assert isinstance(outcome, Skip), f"expected a skip, got {outcome}"
    assert FILES[dataset] in outcome.reason and (name in outcome.reason or "placeholder" in outcome.reason), \
        outcome.reason


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2", b"\xff\xfe", b'{"records": []}', b"null", b"42",
                                     b"[" * 50_000, b'"just a string"'], ids=repr)
def test_an_unreadable_metadata_file_is_one_error_naming_it(tmp_path, content):
    for dataset in ("avqa", "mmau", "music-avqa"):
        (tmp_path / FILES[dataset]).write_bytes(content)
        with pytest.raises(DatasetError, match=FILES[dataset]):
            list(datasets.read(dataset, tmp_path).entries)


# --- config values ----------------------------------------------------------------------------------

# (stage config, key, value, accepted): what each setting means decides what it admits.
CONFIG_CASES = [
    ("teach", "n", v, v >= 1) for v in (-5, -1, 0, 1, 8)
] + [
    ("teach", "chunk", v, v >= 1) for v in (-1, 0, 1, 64)
] + [
    ("teach", "limit", v, v is None or v >= 1) for v in (-3, 0, 1, None)
] + [
    ("teach", "temperature", v, v >= 0) for v in (-0.5, 0.0, 0.7, 2.0)
] + [
    ("teach", "top_p", v, 0 <= v <= 1) for v in (-0.1, 0.0, 0.9, 1.0, 1.5)
] + [
    ("verify", "threshold", v, 0 <= v <= 1) for v in (-0.1, 0.0, 0.5, 1.0, 1.01)
] + [
    ("sft", "lr", v, v > 0) for v in (-1e-5, 0.0, 5e-5)
] + [
    ("sft", "steps", v, v >= 1) for v in (0, -10, 1)
] + [
    ("grpo", "group_size", v, v >= 2) for v in (0, 1, 2, 8)
] + [
    ("grpo", "beta", v, v >= 0) for v in (-0.04, 0.0, 0.04)
] + [
    ("prepare", "num_frames", v, v >= 0) for v in (-1, 0, 8)
] + [
    ("prepare", "max_audio_seconds", v, v is None or v > 0) for v in (-1.0, 0.0, 30.0, None)
]
BAD_TYPES = [(stage, key, value) for stage, key in (("teach", "n"), ("sft", "lr"), ("verify", "checker"),
                                                     ("eval", "method"), ("prepare", "split"))
             for value in ("many", [1], {"a": 1}, True)]


def _stage_config(stage):
    from sightsound.registry import STAGES

    return STAGES[stage].config


@pytest.mark.parametrize("stage, key, value, accepted", CONFIG_CASES,
                         ids=[f"{s}-{k}-{v}" for s, k, v, _ in CONFIG_CASES])
def test_a_config_value_out_of_its_range_is_refused_naming_the_key(stage, key, value, accepted):
    override = f"{key}={json.dumps(value)}"
    if accepted:
        assert getattr(load_config(_stage_config(stage), None, [override]), key) == value
    else:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(_stage_config(stage), None, [override])


@pytest.mark.parametrize("stage, key, value", BAD_TYPES, ids=[f"{s}-{k}-{v!r}" for s, k, v in BAD_TYPES])
def test_a_config_value_of_the_wrong_type_is_refused_naming_the_key(stage, key, value):
    text_keys = {"checker", "method", "split"}  # strings: a number is the wrong type, a word may not be
    if key in text_keys and isinstance(value, str):
        return  # any word parses; whether it names a checker or method is the stage's to say
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(_stage_config(stage), None, [f"{key}={json.dumps(value)}"])


# --- media -------------------------------------------------------------------------------------------


def _media_cases(folder: Path):
    """(file, expected kind of the skip, or None when the clip is usable)."""
    import soundfile as sf

    make_wav(folder / "good.wav")
    cases = [("good.wav", None)]
    (folder / "empty.wav").write_bytes(b"")
    cases.append(("empty.wav", "media-corrupt"))
    make_corrupt(folder / "garbage.mp4")
    cases.append(("garbage.mp4", "media-corrupt"))
    (folder / "text.wav").write_text("this is not audio")
    cases.append(("text.wav", "media-corrupt"))
    good = (folder / "good.wav").read_bytes()
    for size in (10, 44, 100):
        (folder / f"cut{size}.wav").write_bytes(good[:size])
        cases.append((f"cut{size}.wav", "media-corrupt"))
    sf.write(str(folder / "nan.wav"), np.full(8000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    cases.append(("nan.wav", "media-corrupt"))
    sf.write(str(folder / "inf.wav"), np.full(8000, np.inf, dtype=np.float32), 16_000, subtype="FLOAT")
    cases.append(("inf.wav", "media-corrupt"))
    sf.write(str(folder / "silence.wav"), np.zeros(8000, dtype=np.float32), 16_000)
    cases.append(("silence.wav", None))  # silent audio is audio
    cases.append(("nowhere.wav", "media-missing"))
    return cases


def test_bad_media_are_skipped_with_their_reason_and_the_run_goes_on(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    cases = _media_cases(folder)
    lines = [json.dumps({"id": name, "question": "q?", "answer_text": "x", "audio": name}) for name, _ in cases]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    assert cli(["prepare", "--dataset", "jsonl", "--root", str(folder / "test.jsonl"), "--out", str(tmp_path / "run"),
                "num_frames=0", "progress=false"]) == 0
    samples = {json.loads(line)["id"] for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()}
    skipped = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "skipped.jsonl").read_text().splitlines())}
    for name, kind in cases:
        if kind is None:
            assert name in samples, name
        else:
            assert skipped[name]["kind"] == kind and name.split(".")[0] in skipped[name]["reason"], skipped[name]
    assert media.wav_seconds(tmp_path / "run" / "media" / next(
        p.name for p in (tmp_path / "run" / "media").iterdir() if p.name.startswith("good"))) > 0


# --- command lines -----------------------------------------------------------------------------------

COMMAND_LINES = [
    ["teach", "--out"], ["teach", "n=0"], ["teach", "n"], ["teach", "nn=4"], ["teach", "model.nope=1"],
    ["verify", "--checker", "psychic", "--out", "{tmp}"], ["sft", "target=vibes", "--out", "{tmp}"],
    ["eval", "--samples", "{tmp}/none.jsonl", "--out", "{tmp}/e"], ["eval", "method=guess"],
    ["prepare", "--dataset", "vggsound", "--root", "{tmp}"], ["prepare", "--config", "{tmp}/missing.yaml"],
    ["run", "{tmp}/missing.yaml"], ["run", "--from", "sfft", "--dry-run"], ["run", "tech.n=1", "--dry-run"],
    ["score", "{tmp}/none.jsonl", "--out", "{tmp}/r.json"], ["report", "{tmp}/none.json", "--out", "{tmp}/r.md"],
    ["synth", "--clips", "-3", "--out", "{tmp}/w"], ["synth", "--clips", "many"], ["nonsense"], [],
    ["teach", "model.base_url=http://127.0.0.1:99999/v1", "--out", "{tmp}"],
    ["grpo", "group_size=1", "--out", "{tmp}"], ["sft", "subdir=..", "--out", "{tmp}"],
]


# What failed: the work, on input that is missing (exit 1); every other line is a usage error (exit 2).
RUNTIME_FAILURES = [["eval", "--samples", "{tmp}/none.jsonl", "--out", "{tmp}/e"],
                    ["score", "{tmp}/none.jsonl", "--out", "{tmp}/r.json"],
                    ["report", "{tmp}/none.json", "--out", "{tmp}/r.md"]]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=lambda a: " ".join(a) or "(nothing)")
def test_a_bad_command_line_is_one_clear_error_never_a_traceback(tmp_path, capsys, argv):
    expected = 1 if argv in RUNTIME_FAILURES else 2
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = cli(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err and err.strip(), err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err


def test_the_fuzz_suite_is_at_least_a_hundred_cases():
    assert len(RECORD_CASES) + len(CONFIG_CASES) + len(BAD_TYPES) + len(COMMAND_LINES) + 9 + 12 >= 100


# --- damaged intermediate files -------------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] + b"\x00\xff{not json\n" + data[len(data) // 3:])


DAMAGES = {"truncated": _truncate, "zero-byte": lambda p: p.write_bytes(b""), "invalid": _garble}
# Each stage's outputs, and the damage done to them; a glob picks the first file it names.
DAMAGED_OUTPUTS = [
    ("samples.jsonl", "truncated"), ("samples.jsonl", "zero-byte"), ("samples.jsonl", "invalid"),
    ("skipped.jsonl", "invalid"), ("media/*.wav", "zero-byte"), ("media/*.frames.npy", "invalid"),
    ("traces.jsonl", "truncated"), ("traces.jsonl", "invalid"), ("consensus.jsonl", "zero-byte"),
    ("verdicts.jsonl", "truncated"), ("corpus.jsonl", "zero-byte"), ("corpus.jsonl", "invalid"),
    ("manifests/teach.json", "invalid"), ("manifests/sft.json", "zero-byte"),
    ("sft/final/adapter_model.safetensors", "zero-byte"), ("sft/checkpoint-*/state/optimizer.bin", "zero-byte"),
    ("grpo/final/model.safetensors", "truncated"), ("eval/in-domain/sft/predictions.jsonl", "truncated"),
    ("eval/in-domain/samples.jsonl", "invalid"), ("config/teach.yaml", "invalid"),
]


QUICK = {("samples.jsonl", "truncated"), ("media/*.wav", "zero-byte"), ("traces.jsonl", "invalid"),
         ("consensus.jsonl", "zero-byte"), ("corpus.jsonl", "invalid"), ("manifests/teach.json", "invalid"),
         ("sft/final/adapter_model.safetensors", "zero-byte"), ("eval/in-domain/sft/predictions.jsonl", "truncated")}


@pytest.mark.parametrize("name, damage", [
    pytest.param(n, d, id=f"{n}-{d}", marks=() if (n, d) in QUICK else pytest.mark.slow) for n, d in DAMAGED_OUTPUTS])
def test_a_damaged_output_is_repaired_by_a_rerun_or_named_never_a_traceback(demo_run, tmp_path, capsys, name, damage):
    """The reduced demo's own run directory, damaged in place (a copy elsewhere would be another run:
    its paths are in its config), rerun, compared with a backup, then restored as it was."""
    import shutil

    from tests.conftest import ROOT, reduced

    run_dir, backup = demo_run["dir"], tmp_path / "backup"
    shutil.copytree(run_dir, backup, symlinks=True)  # copy2: contents and modification times
    try:
        target = sorted(run_dir.glob(name))[0]
        DAMAGES[damage](target)
        capsys.readouterr()
        code = cli(["run", str(ROOT / "configs" / "demo.yaml"), *reduced(run_dir, demo_run["models"])])
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "this is a bug" not in err, err
        if code == 0:  # repaired: the run is whole again, every record as before
            for records in ("samples.jsonl", "consensus.jsonl", "corpus.jsonl"):
                rows = lambda d: sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(d / records))  # noqa: E731
                assert rows(run_dir) == rows(backup), records
        else:  # named: one line with the damaged file's name and where in it
            assert code == 1 and len(err.strip().splitlines()) == 1 and target.name in err, err
    finally:
        shutil.rmtree(run_dir)
        shutil.copytree(backup, run_dir, symlinks=True)
