import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from sightsound.cli import main as cli


def test_help_lists_the_stages(capsys):
    try:
        cli(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "prepare", "teach", "tiny-models", "score"):
        assert command in out


def test_score_command_writes_the_result(tmp_path, capsys):
    lines = [{"id": "a", "response": "<answer>B</answer>", "options": ["x", "y"], "answer": 1, "category": "sound"},
             {"id": "b", "response": "<answer>(A)</answer>", "options": ["x", "y"], "answer": "y", "category": "music"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert cli(["score", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["accuracy"] == 0.5 and result["per_category"]["sound"]["accuracy"] == 1.0
    assert [r["pred_index"] for r in result["records"]] == [1, 0]
    assert cli(["score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r.json")]) == 1  # runtime
    assert "missing.jsonl" in capsys.readouterr().err


def test_version_and_the_packaged_configs(capsys):
    import sightsound

    try:
        cli(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"sightsound {sightsound.__version__}"
    assert cli(["configs"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "demo-table2", "sightsound-r1", "ablations/sft"):
        assert f"  {name} " in out
    assert "accelerate/" not in out  # launcher settings are not pipeline configs
    # a description is its whole first sentence, wrapped, even when the comment breaks it across lines
    assert "The built-in demo: the whole SightSound-R1 pipeline on this" in out
    assert all(len(line) <= 100 for line in out.splitlines()[1:])


def test_a_missing_predictions_file_says_what_writes_one(tmp_path, capsys):
    assert cli(["score", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r.json")]) == 1
    assert "no such predictions file; `sightsound eval` writes one" in capsys.readouterr().err


def test_configs_are_found_by_path_or_by_name_from_any_folder(tmp_path, monkeypatch):
    import pytest

    from sightsound.config import PACKAGED, ConfigError, find_config, with_packaged_paths

    monkeypatch.chdir(tmp_path)  # an empty folder: no configs/ here
    assert find_config("demo") == PACKAGED / "demo.yaml"
    assert find_config("configs/sightsound-r1.yaml") == PACKAGED / "sightsound-r1.yaml"
    assert find_config("ablations/sft") == PACKAGED / "ablations" / "sft.yaml"
    (tmp_path / "mine.yaml").write_text("run: {out: runs/x}\n")
    assert find_config("mine.yaml") == Path("mine.yaml")
    with pytest.raises(ConfigError, match="sightsound configs"):
        find_config("nonesuch")
    command = with_packaged_paths("accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 6")
    assert f"--config_file {PACKAGED / 'accelerate' / 'ddp.yaml'} --num_processes 6" in command


def test_usage_errors_exit_2_before_anything_is_created_and_failures_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["run", "configs/demo.yaml", "--out", str(out), "--from", "sfft"]) == 2
    assert "unknown stage 'sfft'" in capsys.readouterr().err and not out.exists()
    assert cli(["run", "configs/demo.yaml", "--out", str(out), "--dry-run", "--until", "sfft"]) == 2
    assert cli(["run", "configs/demo.yaml", "--out", str(out), "sft.stepz=3"]) == 2
    assert not out.exists()
    capsys.readouterr()
    assert cli(["report", str(tmp_path / "nonexistent")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent: no such run directory or result.json file" in err[-1]


def test_a_plain_install_runs_the_packaged_demo_config_from_an_empty_folder(tmp_path):
    """`pip install .` (a wheel, not editable) carries the configs: synth → prepare from the packaged
    demo config, in a folder that has no configs/ of its own."""
    import os
    import subprocess
    import sys

    import shutil

    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"  # built from a copy: no build/ here
    shutil.copytree(root / "sightsound", source / "sightsound", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True)
    wheel = next((tmp_path / "wheel").glob("sightsound-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-m", "sightsound", "run", "--from", "synth", "--until", "prepare",
                           "synth.clips=4", "synth.val_fraction=0.5", "synth.progress=false",
                           "prepare.progress=false"], cwd=empty, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (empty / "runs" / "demo" / "samples.jsonl").exists()
    used = subprocess.run([sys.executable, "-c", "import sightsound; print(sightsound.__file__)"], cwd=empty, env=env,
                          capture_output=True, text=True, check=True).stdout
    assert used.startswith(str(tmp_path / "site"))  # the installed wheel ran, not the checkout


def _conflicting(stage, key, tmp_path):
    """A value for the flag unlike any config's, and the command-line string for it."""
    kind = str({f.name: f.type for f in dataclasses.fields(stage.config)}[key])
    if key == "out":
        return str(tmp_path / "from-the-flag")
    if kind.startswith("int"):
        return "7"
    if kind.startswith("float"):
        return "0.125"
    return {"dataset": "jsonl", "checker": "local", "method": "direct"}.get(key, str(tmp_path / f"flag-{key}"))


@pytest.mark.parametrize("config", ["pipeline", "stage"])
def test_every_flag_beats_the_config_file_for_every_subcommand(tmp_path, monkeypatch, config):
    from sightsound import registry

    seen = {}
    for name, stage in registry.STAGES.items():
        monkeypatch.setitem(registry.STAGES, name, dataclasses.replace(stage, main=lambda cfg, name=name: seen.update({name: cfg})))
    for name, stage in registry.STAGES.items():
        if config == "pipeline" and name in ("prepare", "eval", "sft", "grpo"):
            continue  # in the demo these are several runs (benchmarks, variants): `sightsound run` runs them
        for key in stage.flags:
            value = _conflicting(stage, key, tmp_path)
            path = "demo" if config == "pipeline" else tmp_path / f"{name}.yaml"
            if config == "stage":  # a file that sets the same key otherwise
                other = {"out": str(tmp_path / "from-the-file"), "dataset": "avqa", "checker": "api",
                         "method": "zero_shot_cot"}.get(key, 3 if value == "7" else 0.5 if value == "0.125"
                                                        else str(tmp_path / "file-value"))
                path.write_text(yaml.safe_dump({key: other}))
            cli([name, "--config", str(path), f"--{key}", value])
            got = getattr(seen.pop(name), key)
            if key == "out" and config == "pipeline" and stage.folder:  # a stage inside the run directory
                assert Path(got).parent == Path(value), (name, key, got)
            elif key == "out" and config == "pipeline":
                assert got == value or Path(got) == Path(value), (name, key, got)
            else:
                assert str(got) == value or got == type(got)(value), (name, key, got)
