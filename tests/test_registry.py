"""A stage added through the registry alone: `sightsound run` runs it (and skips it when done),
`--dry-run` shows it, its subcommand and `--help` exist, and the report has its line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from sightsound import registry
from sightsound.cli import main as cli
from sightsound.manifest import open_stage, read_manifest
from sightsound.records import Sample
from sightsound.registry import Stage
from sightsound.store import JsonlWriter, read_jsonl, sha256_file


@dataclass
class CountConfig:
    out: str = "runs/demo"  # the run directory
    word: str = "sound"  # the word counted in each question


def count_main(cfg: CountConfig) -> dict:
    run_dir = Path(cfg.out)
    samples_path, counts_path = run_dir / "samples.jsonl", run_dir / "counts.jsonl"
    stage = open_stage(run_dir, "count", cfg, {str(samples_path): sha256_file(samples_path)}, [counts_path])
    if stage.done:
        return stage.manifest
    with JsonlWriter(counts_path) as out:
        for sample in read_jsonl(samples_path, Sample):
            out.write({"id": sample.id, "mentions": sample.question.lower().split().count(cfg.word)})
    rows = list(read_jsonl(counts_path))
    return stage.finish({"questions": len(rows), "mentions": sum(r["mentions"] for r in rows)})


def count_summary(manifest: dict) -> str:
    c = manifest["counts"]
    return f"{c['mentions']} mentions in {c['questions']} questions"


@pytest.fixture
def count_stage(monkeypatch):
    stage = Stage("count", CountConfig, count_main, "count a word in every question", reads=("samples.jsonl",),
                  writes=("counts.jsonl",), flags=("out", "word"), summary=count_summary)
    monkeypatch.setitem(registry.STAGES, "count", stage)
    return stage


@pytest.fixture
def config(world, tmp_path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"run: {{out: {tmp_path / 'run'}}}\n"
                    f"prepare: {{dataset: synth, root: {world}, num_frames: 0, progress: false}}\n"
                    "count: {word: sound}\n")
    return path


def test_a_registered_stage_runs_in_the_pipeline_and_the_report(count_stage, config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli(["run", str(config), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "count: samples.jsonl → counts.jsonl" in plan and not run_dir.exists()
    assert cli(["run", str(config), "--dry-run", "--from", "count"]) == 0
    assert "prepare" not in capsys.readouterr().out  # exactly the stages --from selects

    assert cli(["run", str(config)]) == 0
    rows = list(read_jsonl(run_dir / "counts.jsonl"))
    samples = list(read_jsonl(run_dir / "samples.jsonl", Sample))
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert sum(r["mentions"] for r in rows) == sum(s.question.lower().split().count("sound") for s in samples) > 0
    manifest = read_manifest(run_dir, "count")
    assert manifest["counts"]["questions"] == len(samples)
    assert (run_dir / "config" / "count.yaml").exists()
    report = (run_dir / "report.md").read_text()
    assert f"| count | {count_summary(manifest)} |" in report
    timings = json.loads((run_dir / "manifests" / "run.json").read_text())["stages"]
    assert [(t["stage"], t["status"]) for t in timings] == [("prepare", "ran"), ("count", "ran")]

    capsys.readouterr()
    assert cli(["run", str(config), "--from", "count"]) == 0  # finished: skipped
    assert "run: count already done" in capsys.readouterr().out
    assert cli(["run", str(config), "count.word=flute"]) == 0  # another config: run again
    assert read_manifest(run_dir, "count")["config_hash"] != manifest["config_hash"]


def test_a_registered_stage_has_its_subcommand_and_help(count_stage, config, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["count", "--help"])
    help_text = capsys.readouterr().out
    assert "count a word in every question" in help_text
    assert 'word = "sound"  # the word counted in each question' in help_text
    assert cli(["run", str(config), "--until", "prepare"]) == 0
    assert cli(["count", "--out", str(tmp_path / "run"), "--word", "zebra"]) == 0
    assert read_manifest(tmp_path / "run", "count")["counts"]["mentions"] == 0
