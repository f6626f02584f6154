"""`sightsound run`: the pipeline runner, every shipped pipeline config, and a reduced demo end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sightsound import pipeline
from sightsound.config import ConfigError
from sightsound.inference import scorer_for
from sightsound.store import read_jsonl
from sightsound.manifest import read_manifest
from tests.conftest import ROOT, kill_when_written, reduced

PIPELINES = [ROOT / "configs" / "demo.yaml", ROOT / "configs" / "demo-table2.yaml", ROOT / "configs" / "sightsound-r1.yaml",
             *sorted((ROOT / "configs" / "ablations").glob("*.yaml"))]

def own_runs(plan: pipeline.Plan) -> dict:
    """Each stage's own run's config (eval has none: its runs are per model and benchmark)."""
    return {name: cfg for name, runs in plan.stages.items() for label, cfg in runs if label is None}


# --- configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_config_loads(path):
    plan = pipeline.load_plan(path)
    assert {"prepare", "eval", "report"} <= set(plan.stages) and {"teach", "sft"} & set(plan.stages)
    for name, cfg in plan.stages["eval"]:
        assert cfg.samples.endswith(f"eval/{name.split('/')[0]}/samples.jsonl")
        assert Path(cfg.out).parent.parent.name == "eval"


def test_paper_config_has_the_papers_setup():
    plan = pipeline.load_plan(ROOT / "configs" / "sightsound-r1.yaml")
    s = {**own_runs(plan), "eval": plan.stages["eval"]}
    assert s["teach"].model.model == "Qwen/Qwen2.5-VL-32B-Instruct"
    assert (s["prepare"].dataset, s["prepare"].split) == ("avqa", "train")
    assert s["verify"].checker == "api" and s["verify"].model.model.startswith("gpt-4o")
    sft, grpo = s["sft"], s["grpo"]
    assert sft.model == "Qwen/Qwen2-Audio-7B-Instruct" and sft.target == "cot"
    assert (sft.lora.rank, sft.lora.alpha, sft.lr, sft.steps) == (8, 16, 5e-5, 2000)
    assert (grpo.group_size, grpo.lr, grpo.temperature, grpo.beta, grpo.steps) == (8, 1e-6, 1.0, 0.04, 1000)
    assert not grpo.lora.enabled and grpo.model == "runs/sightsound-r1/sft/merged"
    assert {(p.dataset, p.split) for label, p in plan.stages["prepare"] if label} == {
        ("avqa", "val"), ("mmau", "test-mini"), ("music-avqa", "test")}
    assert all(scorer_for(cfg, "mmau") == "mmau" for name, cfg in s["eval"] if name.startswith("mmau/"))
    assert set(plan.run.launch) == {"sft", "grpo"}


def test_ablations_are_the_rows_of_table_2():
    def plan(name):
        return own_runs(pipeline.load_plan(ROOT / "configs" / "ablations" / f"{name}.yaml"))

    sft_only = plan("sft")  # distilled CoT, one trace per clip, unchecked
    assert sft_only["teach"].n == 1 and sft_only["verify"].checker == "none" and "grpo" not in sft_only
    agfv = plan("agfv-sft")
    assert agfv["teach"].n == 1 and agfv["verify"].checker == "api" and "grpo" not in agfv
    tts = plan("tts-agfv-sft")
    assert tts["teach"].n > 1 and tts["verify"].checker == "api" and "grpo" not in tts
    assert plan("sft-gt-label")["sft"].target == "gt_label"
    assert plan("sft-distilled-label")["sft"].target == "teacher_label"
    grpo_label = plan("grpo-distilled-label")
    assert "sft" not in grpo_label and "verify" not in grpo_label
    assert grpo_label["grpo"].model == "Qwen/Qwen2-Audio-7B-Instruct"
    assert grpo_label["grpo"].rewards == {"accuracy": 1.0}
    for name in ("sft", "agfv-sft", "tts-agfv-sft", "sft-gt-label", "sft-distilled-label", "grpo-distilled-label"):
        assert pipeline.load_plan(ROOT / "configs" / "ablations" / f"{name}.yaml").run.out.endswith(name)


# --- the runner's rules ----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_run_placeholder_extends_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", """
run: {out: runs/base}
prepare: {dataset: synth, root: "{run}/world"}
teach: {n: 4, model: {model: "{run}/teacher"}}
grpo: {steps: 5}
""")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nteach: {n: 1}\ngrpo: null\n")
    plan = pipeline.load_plan(child, ["teach.temperature=0.5"], out=str(tmp_path / "r"))
    assert plan.run.out == str(tmp_path / "r")
    assert plan.config("prepare").root == f"{tmp_path / 'r'}/world" and plan.config("prepare").out == str(tmp_path / "r")
    assert (plan.config("teach").n, plan.config("teach").temperature) == (1, 0.5)
    assert plan.config("teach").model.model == f"{tmp_path / 'r'}/teacher"
    assert "grpo" not in plan.stages
    assert pipeline.selected(plan, "teach", None) == ["teach", "report"]
    assert pipeline.selected(plan, None, "prepare") == ["prepare"]


@pytest.mark.parametrize("text, message", [
    ("teach: {out: x}\n", "'out' is fixed"),
    ("tech: {n: 1}\n", "unknown section 'tech'"),
    ("teach: {nn: 1}\n", "unknown key 'nn'"),
    ("eval: {method: direct}\n", "needs a `benchmarks` section"),
])
def test_bad_configs_are_named(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=message):
        pipeline.load_plan(path)


def test_a_stage_subcommand_reads_a_pipeline_config_as_run_does(tmp_path):
    cfg = pipeline.stage_config(ROOT / "configs" / "sightsound-r1.yaml", "verify", ["chunk=8"],
                                {"out": str(tmp_path), "checker": "local"})
    assert (cfg.out, cfg.checker, cfg.chunk) == (str(tmp_path), "local", 8)
    assert pipeline.stage_config(ROOT / "configs" / "demo.yaml", "teach").model.model == "runs/demo-models/teacher/final"
    with pytest.raises(ConfigError, match="--from eval --until eval"):
        pipeline.stage_config(ROOT / "configs" / "demo.yaml", "eval")


def test_the_table2_config_shares_teach_and_trains_one_model_per_row():
    plan = pipeline.load_plan(ROOT / "configs" / "demo-table2.yaml")
    assert len(plan.stages["teach"]) == len(plan.stages["verify"]) == 1
    sft = dict(plan.stages["sft"])
    assert list(sft) == ["sft-gt-label", "sft-label", "sft-cot", "sft-agfv", "sft"]
    assert (sft["sft-cot"].corpus, sft["sft-agfv"].corpus, sft["sft"].corpus) == (
        "corpus-n1.jsonl", "corpus-agfv-n1.jsonl", "corpus.jsonl")
    assert {cfg.subdir for cfg in sft.values()} == set(sft) and sft["sft"].steps == 100  # shared keys kept
    grpo = dict(plan.stages["grpo"])
    assert grpo["grpo-label"].model.endswith("student/final") and grpo["grpo"].model.endswith("sft/final")
    assert plan.report.rows[:2] == ["teacher", "student-direct"] and plan.report.in_domain == "in-domain"
    assert own_runs(plan)["verify"].corpora["agfv-n1"] == {"tts": False, "agfv": True}


def test_each_seed_is_a_whole_run_with_its_own_worlds_models_and_sampling():
    plans = pipeline.seed_plans(ROOT / "configs" / "demo-table2.yaml", out="runs/t2")
    assert list(plans) == [0, 1, 2]
    for k, plan in plans.items():
        bootstrap = plan.config("bootstrap")
        assert plan.run.out == f"runs/t2/seed-{k}" and plan.run.seeds == []
        assert (bootstrap.seed, bootstrap.world.seed, plan.config("synth").seed, plan.config("teach").seed) == (
            k, 1 + k, k, k)
        assert {cfg.seed for _, cfg in plan.stages["sft"] + plan.stages["grpo"]} == {k}
        models = "runs/demo-models" + (f"-seed{k}" if k else "")  # seed 0 is the demo's own models
        assert bootstrap.out == models and plan.config("teach").model.model == f"{models}/teacher/final"


@pytest.mark.parametrize("text,message", [
    ("sft: {variants: [{target: cot}]}\n", "its own `subdir`"),
    ("sft: {variants: [{subdir: a}, {subdir: a}]}\n", "share a subdir"),
])
def test_bad_variants_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.load_plan(write(tmp_path / "bad.yaml", text))


def test_unknown_stage_and_bad_override(tmp_path):
    plan = pipeline.load_plan(write(tmp_path / "c.yaml", "prepare: {dataset: synth}\n"))
    with pytest.raises(ConfigError, match="unknown stage 'teech'"):
        pipeline.selected(plan, "teech", None)
    with pytest.raises(ConfigError, match="section.key=value"):
        pipeline.load_plan(tmp_path / "c.yaml", ["steps=3"])


# --- a reduced demo, end to end ------------------------------------------------------------------


def test_reduced_demo_writes_every_file(demo_run):
    run_dir = demo_run["dir"]
    for name in ("samples.jsonl", "traces.jsonl", "consensus.jsonl", "verdicts.jsonl", "corpus.jsonl",
                 "sft/final/adapter_config.json", "grpo/final/config.json", "report.md", "report.html",
                 "report.csv", "plots/sft_loss.png", "plots/grpo.png", "config/teach.yaml", "config/sft-sft.launch.yaml",
                 "config/bootstrap.yaml", "config/report.yaml", "eval/in-domain/samples.jsonl",
                 "eval/acoustic/samples.jsonl", "plots/accuracy.png"):
        assert (run_dir / name).exists(), name
    for model in ("teacher", "student-direct", "sft", "grpo"):
        result = json.loads((run_dir / "eval" / "in-domain" / model / "result.json").read_text())
        assert result["count"] > 0 and result["benchmark"] == "in-domain" and len(result["ci95"]) == 2
    assert not (run_dir / "eval" / "acoustic" / "teacher").exists()  # the teacher is asked only what vision answers
    categories = {json.loads(line)["category"] for line in (run_dir / "eval" / "acoustic" / "samples.jsonl").open()}
    assert categories <= {"Louder", "Pitch"}
    assert [s["stage"] for s in demo_run["first"]["stages"]] == [
        "bootstrap", "synth", "prepare", "teach", "verify", "sft", "grpo", "eval"]
    assert all(s["status"] == "ran" for s in demo_run["first"]["stages"])
    report = (run_dir / "report.md").read_text()
    for heading in ("Pipeline", "Bootstrapped roles", "Training curves", "Evaluation", "The paper's premise"):
        assert heading in report
    bootstrap = read_manifest(demo_run["models"], "bootstrap")["counts"]
    assert set(bootstrap) >= {"teacher", "checker", "student", "training"}
    assert bootstrap["training"]["teacher"]["last_loss"] < bootstrap["training"]["teacher"]["first_loss"]


def test_rerunning_the_demo_redoes_nothing(demo_run):
    run_dir = demo_run["dir"]
    changed = [str(p.relative_to(run_dir)) for p, stamp in demo_run["stamps"].items() if p.stat().st_mtime_ns != stamp]
    assert changed == []
    assert not [p for p in run_dir.rglob("*") if p.is_file() and p not in demo_run["stamps"]]


def test_rerunning_a_finished_run_rewrites_a_stale_report_and_keeps_the_timings(demo_run, tmp_path):
    """A report written by an older version is brought up to date by the next `sightsound run`,
    though no stage runs: the report costs a second, and the run manifest keeps the timings of the
    run that did the work (`test_rerunning_the_demo_redoes_nothing`: unchanged files keep their times)."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run["dir"], copy)
    (copy / "report.md").write_text("a report from an older version\n")
    (copy / "plots" / "accuracy.png").unlink()
    timings = (copy / "manifests" / "run.json").read_text()
    pipeline.run(pipeline.load_plan(ROOT / "configs" / "demo.yaml", reduced(copy, demo_run["models"])))
    assert (copy / "report.md").read_text().startswith("# SightSound-R1 run")
    assert (copy / "plots" / "accuracy.png").stat().st_size > 0
    assert (copy / "manifests" / "run.json").read_text() == timings


def test_write_if_changed_leaves_a_file_that_already_holds_the_data(tmp_path):
    from sightsound.store import write_if_changed

    path = tmp_path / "a" / "report.md"
    assert write_if_changed(path, "one\n") and path.read_text() == "one\n"
    stamp = path.stat().st_mtime_ns
    assert not write_if_changed(path, "one\n") and path.stat().st_mtime_ns == stamp
    assert write_if_changed(path, b"two\n") and path.read_bytes() == b"two\n"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]  # no temporary file left


def test_a_moved_run_is_still_done_and_exports_its_own_media(demo_run, tmp_path, capsys):
    """Move a finished run (the original hidden, so nothing can point back at it): rerunning its
    config at the new place redoes no stage, and its exports name the media where they are now."""
    from sightsound import exports

    original, moved = demo_run["dir"], tmp_path / "elsewhere" / "run"
    shutil.copytree(original, moved)
    hidden = original.with_name("hidden")
    original.rename(hidden)
    try:
        assert '"audio": "media/' in (moved / "samples.jsonl").read_text()  # named relative to the run
        capsys.readouterr()
        pipeline.run(pipeline.load_plan(ROOT / "configs" / "demo.yaml", reduced(moved, demo_run["models"])))
        said = capsys.readouterr().out
        assert [line for line in said.splitlines() if line.startswith("run: ") and " done (" in line
                and "already done" not in line] == []
        for fmt, what in (("swift", "sft"), ("trl", "sft"), ("swift", "grpo")):
            rows = list(read_jsonl(exports.export(moved, fmt, what)))
            audio = [row.get("audio") or row["audios"][0] for row in rows]
            assert audio and all(Path(a).is_file() and Path(a).is_relative_to(moved.resolve()) for a in audio)
        relative = list(read_jsonl(exports.export(moved, "swift", out=tmp_path / "r.jsonl", media_root=moved)))
        assert {Path(row["audios"][0]).parts[0] for row in relative} == {"media"}
    finally:
        hidden.rename(original)


def test_lora_grpo_keeps_its_adapter_beside_the_merged_model(demo_run):
    """The demo's LoRA GRPO saves final/ merged and final/adapter/, whose base is the SFT model it
    started from (itself a LoRA adapter: our loader merges it first)."""
    from sightsound.models.loading import load_model

    final, sft_final = demo_run["dir"] / "grpo" / "final", demo_run["dir"] / "sft" / "final"
    settings = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == str(sft_final.resolve())
    assert (final / "config.json").exists() and not (final / "adapter_config.json").exists()  # merged
    assert type(load_model(final / "adapter")[0]).__name__ == "PeftModel"


def test_a_merged_lora_model_keeps_an_adapter_peft_loads_on_its_start(tiny_models, tmp_path):
    """save_model(merged_from=…): the merged model, and in adapter/ the adapter, which PEFT puts on
    the model it was trained on to give the merged model's logits (the adapter made non-zero)."""
    import torch
    from accelerate import Accelerator
    from peft import PeftModel

    from sightsound.models.loading import load_model
    from sightsound.training.loop import save_model
    from sightsound.training.student import LoraConfig, add_lora

    start = tiny_models["student"]
    model, processor = load_model(start)
    model = add_lora(model, LoraConfig(enabled=True, rank=4, alpha=8))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    save_model(Accelerator(cpu=True), model, processor, tmp_path / "final", merged_from=str(start))
    ids = torch.tensor([[11, 12, 13, 14, 15, 16]])
    with torch.no_grad():
        merged = load_model(tmp_path / "final")[0](input_ids=ids).logits
        before = load_model(start)[0](input_ids=ids).logits
        on_start = PeftModel.from_pretrained(load_model(start)[0], str(tmp_path / "final" / "adapter"))
        ours = load_model(tmp_path / "final" / "adapter")[0]
        moved = (merged - before).abs().max()
        assert moved > 1e-3
        for loaded in (on_start, ours):
            assert (loaded(input_ids=ids).logits - merged).abs().max() < moved / 100


RUN_UNTIL_TEACH = """
import sys
from sightsound import pipeline
plan = pipeline.load_plan(sys.argv[1], sys.argv[2:])
pipeline.run(plan, until="teach")
"""


def test_killed_during_teach_the_rerun_ends_with_the_same_records(demo_run, tmp_path):
    script = write(tmp_path / "run.py", RUN_UNTIL_TEACH)
    config = str(ROOT / "configs" / "demo.yaml")

    def command(run_dir):
        return [sys.executable, str(script), config, *reduced(run_dir, demo_run["models"], "synth.clips=16")]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(command(clean), check=True, capture_output=True)
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when_written(proc, killed / "consensus.jsonl", 3)
    assert read_manifest(killed, "teach") is None, "the run must be killed during teach"
    subprocess.run(command(killed), check=True, capture_output=True)
    for name in ("traces.jsonl", "consensus.jsonl"):
        rows = lambda d: sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(d / name))
        assert rows(killed) == rows(clean), name
        assert len(rows(killed)) == len(set(rows(killed))), f"{name}: duplicates"
    assert read_manifest(killed, "teach")["counts"] == read_manifest(clean, "teach")["counts"]


def test_report_command_rebuilds_a_run_directorys_report(demo_run, tmp_path):
    import shutil

    from sightsound.cli import main as cli

    copy = tmp_path / "run"
    shutil.copytree(demo_run["dir"], copy)
    for name in ("report.md", "report.html", "report.csv"):
        (copy / name).unlink()
    assert cli(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (demo_run["dir"] / "report.md").read_text()
    assert "data:image/png;base64," in (copy / "report.html").read_text()
