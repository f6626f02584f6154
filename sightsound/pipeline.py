"""run: the whole pipeline from one config file, stage after stage, in one run directory.

    sightsound run                                     # configs/demo.yaml: the built-in CPU demo
    sightsound run configs/sightsound-r1.yaml --out runs/r1
    sightsound run configs/demo.yaml --from sft --until grpo sft.steps=50

Stages, in order (STAGES): bootstrap → synth → prepare → teach → verify → sft → grpo → eval → report.
A stage takes part when the config has its section (`bootstrap` and `synth` are the demo's: its
tiny models and its synthetic world; an ablation without `grpo` skips GRPO); `--from` / `--until`
narrow the range. Every stage skips itself when its manifest shows it finished with the same
config and inputs, runs again when either changed, and resumes when it was interrupted — so a
rerun of a finished run redoes nothing, and a killed one picks up where it stopped.

Fixed names in the run directory (`run.out`, or `--out`): `samples.jsonl`, `skipped.jsonl`,
`traces.jsonl`, `consensus.jsonl`, `verdicts.jsonl`, `corpus.jsonl`, `sft/`, `grpo/`,
`eval/<benchmark>/samples.jsonl` and `eval/<benchmark>/<model>/result.json`, `manifests/`,
`config/<stage>.yaml` (the resolved config of every stage), `report.md` / `report.html` / `plots/`.
So the stage sections hold no `out`; in any string value, `{run}` stands for the run directory
and `{models}` for the folder of the demo's bootstrapped models (`bootstrap.out`).
A config may start from another (`extends: sightsound-r1.yaml`): the ablations in configs/ablations/.

`benchmarks` maps a name to prepare settings (and, under `eval:`, EvalConfig keys for it alone,
e.g. `scorer: mmau`); each is prepared into `eval/<name>/` by the prepare stage, so training can
validate on one. The `eval` section holds what every evaluation shares (EvalConfig keys) and
`models`, a list of {name, model, method, label, ...}: each is evaluated on every benchmark. `run.launch` maps a stage to the
command that starts it in its own processes — `{sft: "accelerate launch --config_file
configs/accelerate/ddp.yaml"}` runs `accelerate launch ... -m sightsound sft --config
RUN/config/sft.launch.yaml` (multi-GPU training); stages not named there run in this process.
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sightsound.config import ConfigError, from_dict, read_yaml, save_config, set_dotted
from sightsound.records import manifest_path, write_json

STAGES = ("bootstrap", "synth", "prepare", "teach", "verify", "sft", "grpo", "eval", "report")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class StageIncomplete(RuntimeError):
    """A stage returned without its manifest (some of its work failed and is retried by a rerun)."""


@dataclass
class RunConfig:
    out: str = "runs/demo"  # the run directory
    # stage → the command that starts it in its own processes, e.g.
    # {sft: "accelerate launch --config_file configs/accelerate/ddp.yaml"}; other stages run in-process
    launch: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """A config file, read and checked: the run settings and each stage's resolved config."""
    run: RunConfig
    stages: dict  # stage → its config (eval: a list of (benchmark/model, EvalConfig))
    benchmarks: dict  # name → PrepareConfig (prepared with the training data, so training can validate on them)


def load_plan(path: str | Path, overrides=(), out: str | None = None) -> Plan:
    """Read a pipeline config: `key=value` overrides use section.key (`sft.steps=10`); `out`
    replaces run.out; `{run}` is replaced everywhere; every section is checked now, before anything runs."""
    from sightsound import bootstrap
    from sightsound.stages import SECTIONS

    data = read_pipeline_yaml(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    unknown = [k for k in data if k not in ("run", "benchmarks", *STAGES)]
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r} (known: run, benchmarks, {', '.join(STAGES)})")
    run = from_dict(RunConfig, data.get("run") or {}, f"{path} [run]")
    if out is not None:
        run.out = out
    models = (data.get("bootstrap") or {}).get("out", bootstrap.BootstrapConfig.out)
    data = _substitute(data, {"{run}": run.out, "{models}": models})
    classes = {**SECTIONS, "bootstrap": bootstrap.BootstrapConfig}
    benchmarks = _benchmarks(data, run.out, str(path))
    stages = {}
    for stage in STAGES:
        if stage not in data or stage == "report":
            continue
        section = dict(data[stage] or {})
        source = f"{path} [{stage}]"
        if stage == "eval":
            stages[stage] = _evaluations(section, benchmarks, source)
            continue
        if "out" in section and stage != "bootstrap":
            raise ConfigError(f"{source}: 'out' is fixed by the runner (the run directory, {run.out})")
        if stage != "bootstrap":
            section["out"] = str(Path(run.out) / "world") if stage == "synth" else run.out
        stages[stage] = from_dict(classes[stage], section, source)
    if "report" in data or stages:
        stages["report"] = None
    return Plan(run, stages, {name: prepared for name, (prepared, _) in benchmarks.items()})


def is_pipeline_config(path: str | Path) -> bool:
    data = read_pipeline_yaml(path)
    return "run" in data


def stage_config(path: str | Path, stage: str, overrides=(), flags: dict | None = None):
    """One stage's config as `sightsound run` resolves it (run directory, `{run}`), for running that
    stage on its own; `flags` are the stage subcommand's options (`out` names the run directory)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    out = flags.pop("out", None)
    extra = [f"{stage}.{o}" for o in overrides] + [f"{stage}.{k}={json.dumps(v)}" for k, v in flags.items()]
    plan = load_plan(path, extra, out=out)
    if stage == "eval" or stage not in plan.stages:
        raise ConfigError(f"{path}: no single {stage} stage here; use `sightsound run {path} --from {stage} "
                          f"--until {stage}`")
    return plan.stages[stage]


def read_pipeline_yaml(path: str | Path) -> dict:
    """A config file's mapping; with `extends: OTHER.yaml` (relative to the file) it is laid over
    that file's: sections merge key by key, and a section set to null is dropped (an ablation
    without GRPO says `grpo: null`)."""
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = read_pipeline_yaml(Path(path).parent / parent)
    for section, values in data.items():
        if values is None:
            base.pop(section, None)
        elif isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return base


def _benchmarks(data: dict, run_dir: str, source: str) -> dict[str, tuple[object, dict]]:
    """name → (its PrepareConfig, EvalConfig keys for it alone, e.g. {scorer: mmau})."""
    from sightsound.stages import PrepareConfig

    out = {}
    for name, settings in (data.get("benchmarks") or {}).items():
        settings = dict(settings or {})
        overrides = settings.pop("eval", None) or {}
        if "out" in settings:
            raise ConfigError(f"{source} [benchmarks.{name}]: 'out' is fixed by the runner (eval/{name}/)")
        settings["out"] = str(Path(run_dir) / "eval" / name)
        out[name] = (from_dict(PrepareConfig, settings, f"{source} [benchmarks.{name}]"), overrides)
    return out


def _evaluations(section: dict, benchmarks: dict, source: str) -> list[tuple[str, object]]:
    """(benchmark/model, EvalConfig) for every model on every benchmark."""
    from sightsound.stages import EvalConfig

    entries = section.pop("models", None) or []
    if not benchmarks or not entries:
        raise ConfigError(f"{source}: needs a `benchmarks` section and `models` (a list) here")
    plan = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        model_name = entry.pop("name", None)
        if not model_name:
            raise ConfigError(f"{source}: models[{i}] needs a `name` (its folder under eval/<benchmark>/)")
        model = entry.pop("model", None)
        for bench, (prepared, overrides) in benchmarks.items():
            merged = {**copy.deepcopy(section), **overrides, **entry}
            if isinstance(model, str):
                merged["model"] = {**merged.get("model", {}), "model": model}
            elif isinstance(model, dict):
                merged["model"] = {**merged.get("model", {}), **model}
            folder = Path(prepared.out)
            merged.update(samples=str(folder / "samples.jsonl"), out=str(folder / model_name))
            plan.append((f"{bench}/{model_name}", from_dict(EvalConfig, merged, f"{source} models[{i}]")))
    return plan


def _substitute(value, names: dict[str, str]):
    if isinstance(value, str):
        for name, replacement in names.items():
            value = value.replace(name, replacement)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def selected(plan: Plan, start: str | None, until: str | None) -> list[str]:
    """The plan's stages from `start` to `until` (inclusive), in pipeline order."""
    for name in (start, until):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    lo = STAGES.index(start) if start else 0
    hi = STAGES.index(until) if until else len(STAGES) - 1
    return [s for s in STAGES if s in plan.stages and lo <= STAGES.index(s) <= hi]


def run(plan: Plan, start: str | None = None, until: str | None = None) -> Path:
    """Run the selected stages in order; returns the run directory."""
    run_dir = Path(plan.run.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for stage in selected(plan, start, until):
        began = time.time()
        if stage == "report":
            ran = any(t["status"] == "ran" for t in timings) or not (run_dir / "report.md").exists()
            if ran:
                write_json(run_dir / "manifests" / "run.json", {"stages": timings})
                _report(run_dir)
        else:
            before = _manifest_times(plan, stage)
            _run_stage(plan, stage)
            after = _manifest_times(plan, stage)
            if None in after:  # e.g. teach with requests that failed: retried by the next run
                raise StageIncomplete(f"stage {stage} did not finish (no manifest; its messages above say why); "
                                   "run the same command again to resume it")
            ran = after != before
        timings.append({"stage": stage, "status": "ran" if ran else "skipped",
                        "seconds": round(time.time() - began, 2)})
        print(f"run: {stage} {'done' if ran else 'already done'} ({timings[-1]['seconds']:.1f} s)")
    total = sum(t["seconds"] for t in timings)
    print(f"run: finished in {total:.1f} s → {run_dir}" + (f" ({run_dir / 'report.md'})" if "report" in
                                                          plan.stages else ""))
    return run_dir


def _run_stage(plan: Plan, stage: str) -> None:
    from sightsound import bootstrap
    from sightsound.stages import MAINS, evaluate, prepare

    run_dir = Path(plan.run.out)
    cfg = plan.stages[stage]
    if stage == "bootstrap":
        save_config(cfg, run_dir / "config" / "bootstrap.yaml")
        bootstrap.main(cfg)
        _copy_manifest(cfg.out, run_dir, "bootstrap")
    elif stage == "prepare":
        prepare.main(cfg)
        for name, bench in plan.benchmarks.items():
            save_config(bench, run_dir / "config" / f"prepare-{name}.yaml")
            prepare.main(bench)
    elif stage == "eval":
        for name, item in cfg:
            save_config(item, run_dir / "config" / f"eval-{name.replace('/', '-')}.yaml")
            evaluate.main(item)
    elif stage in plan.run.launch:
        path = run_dir / "config" / f"{stage}.launch.yaml"
        save_config(cfg, path)
        command = shlex.split(plan.run.launch[stage]) + ["-m", "sightsound", stage, "--config", str(path)]
        print("run: " + " ".join(shlex.quote(c) for c in command))
        subprocess.run(command, check=True)
    else:
        MAINS[stage](cfg)
        if stage == "synth":
            save_config(cfg, run_dir / "config" / "synth.yaml")
            _copy_manifest(cfg.out, run_dir, "synth")


def _copy_manifest(folder, run_dir: Path, stage: str) -> None:
    """A stage that writes elsewhere (the cached models, the world) gets a copy of its manifest in the
    run directory, for the report; an identical copy is left untouched."""
    source, target = manifest_path(folder, stage), manifest_path(run_dir, stage)
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _manifest_times(plan: Plan, stage: str) -> list:
    """When each manifest the stage writes was last written (None: not there), to tell ran from skipped."""
    run_dir = Path(plan.run.out)
    if stage == "bootstrap":
        paths = [manifest_path(plan.stages[stage].out, "bootstrap")]
    elif stage == "synth":
        paths = [manifest_path(run_dir / "world", "synth")]
    elif stage == "eval":
        paths = [manifest_path(item.out, "eval") for _, item in plan.stages[stage]]
    elif stage == "prepare":
        paths = [manifest_path(run_dir, stage)] + [manifest_path(b.out, "prepare") for b in plan.benchmarks.values()]
    else:
        paths = [manifest_path(run_dir, stage)]
    return [p.stat().st_mtime_ns if p.exists() else None for p in paths]


def _report(run_dir: Path) -> None:
    from sightsound import report

    report.write_run_report(run_dir)
    print(f"report: {run_dir / 'report.md'}, {run_dir / 'report.html'}")


def describe(plan: Plan) -> str:
    """The plan, one line per stage (for --dry-run)."""
    lines = [f"run directory: {plan.run.out}"]
    for stage, cfg in plan.stages.items():
        if stage == "prepare":
            lines += ["  prepare"] + [f"  prepare: benchmark {name}" for name in plan.benchmarks]
        elif stage == "eval":
            lines += [f"  eval: {name}" for name, _ in cfg]
        else:
            lines.append(f"  {stage}")
    return "\n".join(lines)

