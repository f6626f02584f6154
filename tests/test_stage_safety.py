"""A run directory under stress: two processes on one stage, outputs damaged after a stage ended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from sightsound import manifest
from sightsound.manifest import StageBusy, open_stage
from sightsound.store import JsonlWriter, read_jsonl


@dataclass
class Cfg:
    value: int = 1


HOLD = """
import sys, time
from dataclasses import dataclass
from pathlib import Path
from sightsound.manifest import open_stage
@dataclass
class Cfg:
    value: int = 1
run = Path(sys.argv[1])
open_stage(run, "teach", Cfg(), {}, [run / "traces.jsonl"])
(run / "holding").write_text("yes")
time.sleep(60)
"""


def hold_stage(run_dir):
    """A child process that opens the teach stage and keeps it."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)])
    for _ in range(300):
        if (run_dir / "holding").exists():
            return child
        time.sleep(0.1)
    child.kill()
    raise AssertionError("the child never opened the stage")


def test_a_second_process_on_a_running_stage_is_refused_with_the_holder_named(tmp_path):
    child = hold_stage(tmp_path)
    try:
        with pytest.raises(StageBusy, match=rf"teach stage is already running \(pid {child.pid} on .*since"):
            open_stage(tmp_path, "teach", Cfg(), {}, [tmp_path / "traces.jsonl"])
        assert not (tmp_path / "manifests" / "teach.json").exists()
    finally:
        child.send_signal(signal.SIGKILL)  # dies holding the lock: the OS frees it
        child.wait()
    stage = open_stage(tmp_path, "teach", Cfg(), {}, [tmp_path / "traces.jsonl"])  # a dead holder's lock is taken
    assert not stage.done
    stage.finish({})
    assert open_stage(tmp_path, "teach", Cfg(), {}, [tmp_path / "traces.jsonl"]).done


def test_one_process_may_reopen_a_stage_it_left_after_an_error(tmp_path):
    open_stage(tmp_path, "verify", Cfg(), {}, [])  # opened, then (say) an exception: never finished
    stage = open_stage(tmp_path, "verify", Cfg(), {}, [])
    stage.finish({})
    assert not manifest._HELD  # finishing frees it


def test_a_file_two_writers_shared_is_repaired_keeping_the_first_of_each_id(tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 1}, {"id": "a", "v": 2}, {"id": "b", "v": 2}, {"id": "c", "v": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with JsonlWriter(path) as out:
        assert out.ids == {"a", "b", "c"} and not out.write({"id": "a", "v": 3})
    assert list(read_jsonl(path)) == [rows[0], rows[1], rows[4]]
    assert "2 duplicate records removed" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete", "folder"])
def test_already_done_holds_only_while_the_outputs_are_as_the_stage_left_them(tmp_path, capsys, damage):
    traces, model = tmp_path / "traces.jsonl", tmp_path / "sft" / "final" / "model.safetensors"
    stage = open_stage(tmp_path, "teach", Cfg(), {}, [traces, tmp_path / "sft"])
    traces.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(100)))
    model.parent.mkdir(parents=True)
    model.write_bytes(os.urandom(300_000))
    stage.finish({"samples": 100})
    assert open_stage(tmp_path, "teach", Cfg(), {}, [traces, tmp_path / "sft"]).done
    os.utime(traces, (1, 1))  # a copied run has new modification times: still done
    assert open_stage(tmp_path, "teach", Cfg(), {}, [traces, tmp_path / "sft"]).done
    capsys.readouterr()

    if damage == "truncate":
        traces.write_text(traces.read_text()[:500])
    elif damage == "empty":
        model.write_bytes(b"")
    elif damage == "delete":
        traces.unlink()
    else:
        import shutil
        shutil.rmtree(tmp_path / "sft")
    again = open_stage(tmp_path, "teach", Cfg(), {}, [traces, tmp_path / "sft"])
    assert not again.done
    said = capsys.readouterr().out
    expected = {"truncate": "traces.jsonl changed (", "empty": "sft changed (300,000 → 0 bytes)",
                "delete": "traces.jsonl is gone", "folder": "sft is gone"}[damage]
    assert expected in said and "running it again, keeping what is intact" in said
    if damage == "truncate":
        assert traces.exists() and len(list(read_jsonl(traces))) < 100  # kept, to be resumed, not wiped


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_an_interrupted_command_says_so_in_one_line_and_a_rerun_resumes_identically(world, tmp_path, monkeypatch,
                                                                                     capsys, how, code):
    from sightsound import media
    from sightsound.cli import main as cli

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    command = ["prepare", "--dataset", "synth", "--root", str(world), "num_frames=0", "chunk=1", "progress=false"]
    assert cli(command + ["--out", str(whole)]) == 0
    decode, calls = media.decode, []

    def interrupted(*args, **kw):  # the third clip's decoding is interrupted
        calls.append(1)
        if len(calls) == 3:
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return decode(*args, **kw)

    monkeypatch.setattr(media, "decode", interrupted)
    capsys.readouterr()
    assert cli(command + ["--out", str(cut)]) == code
    err = capsys.readouterr().err
    assert err.strip() == "sightsound prepare: interrupted; run the same command to resume"
    kept = len(list(read_jsonl(cut / "samples.jsonl")))  # two clips' questions
    assert 0 < kept < len(list(read_jsonl(whole / "samples.jsonl"))) and not (cut / "manifests" / "prepare.json").exists()
    monkeypatch.setattr(media, "decode", decode)
    assert cli(command + ["--out", str(cut)]) == 0
    strip = lambda path: [{**r, "audio": os.path.basename(r["audio"])} for r in read_jsonl(path)]  # noqa: E731
    assert strip(cut / "samples.jsonl") == strip(whole / "samples.jsonl")


def test_a_damaged_manifest_is_named_and_the_stage_runs_again(tmp_path, capsys):
    open_stage(tmp_path, "eval", Cfg(), {}, []).finish({})
    (tmp_path / "manifests" / "eval.json").write_text('{"stage": "eval",\n')
    again = open_stage(tmp_path, "eval", Cfg(), {}, [])
    assert not again.done
    assert f"eval: {tmp_path / 'manifests' / 'eval.json'}: not valid JSON (" in capsys.readouterr().out
    again.finish({})
    assert open_stage(tmp_path, "eval", Cfg(), {}, []).done


def test_a_bug_keeps_its_traceback_and_says_it_is_one(monkeypatch, capsys):
    from sightsound import cli as cli_module

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli_module, "_configs", broken)
    assert cli_module.main(["configs"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err and "this is a bug in sightsound" in err
