import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sightsound.records import Sample, Trace
from sightsound.store import JsonlWriter, read_jsonl
from sightsound.manifest import mark_started, read_manifest, stage_status, write_manifest


def sample(i: int) -> Sample:
    return Sample(id=f"s{i}", dataset="synth", split="train", question=f"q{i}?", options=["a", "b"],
                  answer=i % 2, answer_text="ab"[i % 2], category="Which")


def test_round_trip_and_resume_skips_stored_ids(tmp_path):
    path = tmp_path / "samples.jsonl"
    with JsonlWriter(path) as out:
        assert all(out.write(sample(i)) for i in range(3))
    with JsonlWriter(path) as out:
        assert "s1" in out and sample(2) in out and "s9" not in out
        assert not out.write(sample(1))
        assert out.write(sample(3))
    loaded = list(read_jsonl(path, Sample))
    assert [s.id for s in loaded] == ["s0", "s1", "s2", "s3"]
    assert loaded[1] == sample(1)


def test_trace_ids_are_sample_and_index(tmp_path):
    path = tmp_path / "traces.jsonl"
    with JsonlWriter(path) as out:
        out.write(Trace("s0", 0, "<think>x</think><answer>A</answer>", 0))
        out.write(Trace("s0", 1, "y", None))
    with JsonlWriter(path) as out:
        assert "s0#1" in out
        assert not out.write(Trace("s0", 1, "y again", None))
    assert [t.index for t in read_jsonl(path, Trace)] == [0, 1]


def test_torn_last_line_is_cut_and_rewritten(tmp_path):
    path = tmp_path / "samples.jsonl"
    with JsonlWriter(path) as out:
        out.write(sample(0))
    with path.open("ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"id": "s1", "dataset": "syn')
    assert [s["id"] for s in read_jsonl(path)] == ["s0"]  # readers ignore the torn tail
    with JsonlWriter(path) as out:
        assert "s1" not in out
        out.write(sample(1))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["s0", "s1"]


def test_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl: line 2"):
        list(read_jsonl(path))


WRITER = """
import sys, time
from sightsound.store import JsonlWriter
path, total = sys.argv[1], int(sys.argv[2])
with JsonlWriter(path) as out:
    for i in range(total):
        if f"r{i}" in out:
            continue
        out.write({"id": f"r{i}", "payload": "x" * (i % 4096)})
        if len(sys.argv) > 3:
            time.sleep(0.0005)
print("finished")
"""


def test_killed_writer_resumes_without_duplicates_or_losses(tmp_path):
    path = tmp_path / "out.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    total = 20_000
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(total), "slow"])
    deadline = time.time() + 60
    while (not path.exists() or path.stat().st_size < 200_000) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = path.read_bytes().count(b"\n")
    assert 0 < written_before < total, "the writer must be killed part-way"

    done = subprocess.run([sys.executable, str(script), str(path), str(total)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {f"r{i}" for i in range(total)}


def test_manifest_status_cycle(tmp_path):
    inputs = {"meta.json": "abc"}
    assert stage_status(tmp_path, "prepare", "h1", inputs) == "new"
    mark_started(tmp_path, "prepare", "h1", inputs)
    assert stage_status(tmp_path, "prepare", "h1", inputs) == "resume"
    assert stage_status(tmp_path, "prepare", "h2", inputs) == "new"
    assert stage_status(tmp_path, "prepare", "h1", {"meta.json": "changed mid-run"}) == "new"  # not resumed
    write_manifest(tmp_path, "prepare", config_hash="h1", inputs=inputs, counts={"samples": 3}, started=time.time())
    assert stage_status(tmp_path, "prepare", "h1", inputs) == "done"
    assert stage_status(tmp_path, "prepare", "h1", {"meta.json": "changed"}) == "stale"
    assert stage_status(tmp_path, "prepare", "h2", inputs) == "stale"
    manifest = read_manifest(tmp_path, "prepare")
    assert manifest["counts"] == {"samples": 3} and manifest["seconds"] >= 0
    mark_started(tmp_path, "prepare", "h2", inputs)  # starting again removes the old manifest first
    assert read_manifest(tmp_path, "prepare") is None
    assert not list(Path(tmp_path, "manifests").glob("*.tmp"))


def test_model_inputs_change_when_a_model_is_retrained_in_place_not_when_copied(tmp_path):
    import json
    import os

    from sightsound.manifest import model_inputs

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    first = model_inputs(str(adapter), "Qwen/Qwen2-Audio-7B-Instruct", None)
    assert set(first) == {f"model:{adapter}", f"model:{base}"}  # the hub id and None are left out
    assert model_inputs(str(adapter)) == first  # unchanged files, same fingerprint
    os.utime(base / "model.safetensors", ns=(1, 1))  # copied (another modification time): the same model
    assert model_inputs(str(adapter)) == first
    (base / "model.safetensors").write_bytes(b"weighty")  # the base trained again (same size, other bytes)
    assert model_inputs(str(adapter))[f"model:{base}"] != first[f"model:{base}"]


def test_media_inside_a_run_are_written_relative_to_it_and_read_back_absolute(tmp_path):
    from sightsound.records import Sample
    from sightsound.store import JsonlWriter, read_jsonl

    run, elsewhere = tmp_path / "run", tmp_path / "data" / "clip.mp4"
    frames = run / "media" / "c.4x56.frames.npy"
    sample = Sample("1", "synth", "train", "q?", ["a", "b"], 0, "a", "Which", audio=str(run / "media" / "c.wav"),
                    video=str(elsewhere), meta={"frames": str(frames)})
    with JsonlWriter(run / "samples.jsonl") as out:
        out.write(sample)
    stored = next(read_jsonl(run / "samples.jsonl"))
    assert (stored["audio"], stored["video"], stored["meta"]["frames"]) == (
        "media/c.wav", str(elsewhere), "media/c.4x56.frames.npy")
    moved = tmp_path / "moved"
    run.rename(moved)
    again = next(read_jsonl(moved / "samples.jsonl", Sample))
    assert again.audio == str(moved / "media" / "c.wav") and again.video == str(elsewhere)
    assert again.meta["frames"] == str(moved / "media" / "c.4x56.frames.npy")
