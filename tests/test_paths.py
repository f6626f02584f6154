"""Nothing outside the run directory is written or deleted, whatever a config says."""

from __future__ import annotations

import pytest

from sightsound import pipeline
from sightsound.cli import main as cli
from sightsound.config import ConfigError, load_config
from sightsound.manifest import open_stage
from sightsound.stages.grpo import GRPOConfig
from sightsound.stages.sft import SFTConfig


@pytest.mark.parametrize("subdir", ["''", ".", "..", "../elsewhere", "/tmp/x", "a/b"])
def test_training_folders_are_plain_names(subdir):
    for cls in (SFTConfig, GRPOConfig):
        with pytest.raises(ConfigError, match="'subdir' must be a plain folder name"):
            load_config(cls, None, [f"subdir={subdir}"])


def test_an_empty_subdir_deletes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text("{}\n")
    (tmp_path / "precious.txt").write_text("keep me")
    for subdir in ("''", ".."):
        assert cli(["sft", "--out", str(run_dir), f"subdir={subdir}"]) == 2
        assert "plain folder name" in capsys.readouterr().err
    assert (run_dir / "samples.jsonl").exists() and (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_stage_refuses_outputs_outside_its_run_directory(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside.jsonl"
    run_dir.mkdir()
    outside.write_text("keep me")
    for path in (outside, run_dir, run_dir / ".." / "outside.jsonl"):
        with pytest.raises(ValueError, match="not inside the run directory"):
            open_stage(run_dir, "teach", SFTConfig(), {}, [path])
    assert outside.read_text() == "keep me" and not (run_dir / "manifests").exists()


@pytest.mark.parametrize("text, message", [
    ("benchmarks: {'../up': {dataset: synth}}\nprepare: {dataset: synth}\n", r"benchmarks\.\.\./up"),
    ("benchmarks: {val: {dataset: synth}}\neval: {models: [{name: ../../x, model: m}]}\n", r"models\[0\]\.name"),
])
def test_benchmark_and_model_names_stay_under_eval(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        pipeline.load_plan(path)
