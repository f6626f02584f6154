"""run: the whole pipeline from one config file, stage after stage, in one run directory.

    sightsound run                                     # configs/demo.yaml: the built-in CPU demo
    sightsound run configs/sightsound-r1.yaml --out runs/r1
    sightsound run configs/demo.yaml --from sft --until grpo sft.steps=50

Stages run in the registry's order (`sightsound.registry.STAGES`), then the report; a stage takes
part when the config has its section, `--from` / `--until` narrow the range, and a stage whose
manifest shows the same config and inputs is skipped (an interrupted one resumes). Stage sections
hold no `out`: the run directory's file names are fixed, defined once in `sightsound/rundir.py`
(`RunDir`). `run.launch` starts a stage in its own processes (multi-GPU training).
Details: docs/reference.md, "sightsound/pipeline.py".
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from sightsound import report, rundir
from sightsound.config import (PACKAGED, ConfigError, apply_overrides, find_config, from_dict, read_yaml, save_config,
                               with_packaged_paths)
from sightsound.engine import EngineConfig
from sightsound.registry import STAGES, Context, Stage
from sightsound.rundir import RunDir
from sightsound.store import write_json

DEFAULT_CONFIG = PACKAGED / "demo.yaml"


def order() -> tuple[str, ...]:
    """The registry's stages, then the report (the runner's own last step, written from the run directory)."""
    return (*STAGES, "report")


class StageIncomplete(RuntimeError):
    """A stage returned without its manifest (some of its work failed and is retried by a rerun)."""


@dataclass
class RunConfig:
    out: str = "runs/demo"  # the run directory
    # stage → the command that starts it in its own processes, e.g.
    # {sft: "accelerate launch --config_file configs/accelerate/ddp.yaml"}; other stages run in-process
    launch: dict[str, str] = field(default_factory=dict)
    # where prepare, teach, verify and eval run their work (sightsound/engine.py): local, or a Ray
    # cluster; a stage's own `engine:` wins
    engine: EngineConfig = field(default_factory=EngineConfig)
    # two or more: the whole run once per seed k in OUT/seed-<k>, every stage's `seed` (the synthetic
    # worlds' too) offset by k and the bootstrapped models in <bootstrap.out>-seed<k> (k > 0); then
    # one report in OUT pooling them (sightsound/report/pooled.py)
    seeds: list[int] = field(default_factory=list)


@dataclass
class Plan:
    """A config file, read and checked: the run settings and each stage's runs, (label, config) with
    label None for the stage's own run (prepare's benchmarks and eval's models are labelled)."""

    run: RunConfig
    stages: dict[str, list[tuple[str | None, object]]]
    report: report.ReportConfig = field(default_factory=report.ReportConfig)

    def config(self, stage: str):
        """The stage's own run's config."""
        return next(cfg for label, cfg in self.stages[stage] if label is None)


def load_plan(path: str | Path, overrides=(), out: str | None = None) -> Plan:
    """Read a pipeline config: `key=value` overrides use section.key (`sft.steps=10`); `out`
    replaces run.out; placeholders are replaced everywhere; every section is checked now, before
    anything runs."""
    data = apply_overrides(read_pipeline_yaml(path), overrides, sections=True)
    unknown = [k for k in data if k not in ("run", "benchmarks", *order())]
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r} (known: run, benchmarks, {', '.join(order())})")
    run = from_dict(RunConfig, data.get("run") or {}, f"{path} [run]")
    if out is not None:
        run.out = out
    names = {"{run}": run.out}
    for stage in STAGES.values():
        if stage.placeholder:
            names[stage.placeholder] = (data.get(stage.name) or {}).get("out", stage.config().out)
    data = _substitute(data, names)
    context = Context(run.out, data.get("benchmarks") or {}, str(path))
    stages = {name: stage.resolve(data[name] or {}, context) for name, stage in STAGES.items() if name in data}
    for runs in stages.values():  # run.engine for every map stage that does not name its own
        for _, cfg in runs:
            if getattr(cfg, "engine", None) == EngineConfig():
                cfg.engine = run.engine
    if "report" in data or stages:
        stages["report"] = []
    settings = from_dict(report.ReportConfig, data.get("report") or {}, f"{path} [report]")
    if not settings.rows:  # the table's rows in the order the eval section lists its models
        settings.rows = [m.get("name") for m in (data.get("eval") or {}).get("models") or [] if isinstance(m, dict)]
    return Plan(run, stages, settings)


def seed_plans(path: str | Path, overrides=(), out: str | None = None) -> dict[int, Plan]:
    """One plan per seed of `run.seeds` (see RunConfig), each checked as `load_plan` checks."""
    plan = load_plan(path, overrides, out=out)
    data = apply_overrides(read_pipeline_yaml(path), overrides, sections=True)
    plans = {}
    for k in plan.run.seeds:
        extra = ["run.seeds=[]"]
        for name, stage in STAGES.items():
            section = data.get(name)
            if isinstance(section, dict) and "seed" in {f.name for f in fields(stage.config)}:
                extra.append(f"{name}.seed={section.get('seed', getattr(stage.config(), 'seed')) + k}")
        bootstrap = data.get("bootstrap")
        if isinstance(bootstrap, dict) and k:
            defaults = STAGES["bootstrap"].config()
            world_seed = (bootstrap.get("world") or {}).get("seed", defaults.world.seed)
            extra += [f"bootstrap.world.seed={world_seed + k}",
                      f"bootstrap.out={bootstrap.get('out', defaults.out)}-seed{k}"]
        plans[k] = load_plan(path, [*overrides, *extra], out=str(Path(plan.run.out) / f"seed-{k}"))
    return plans


def run_seeds(plan: Plan, plans: dict[int, Plan], start: str | None = None, until: str | None = None) -> Path:
    """Run the pipeline once per seed, then write the pooled report in the run directory."""
    for k, seed_plan in plans.items():
        print(f"run: seed {k} → {seed_plan.run.out}")
        run(seed_plan, start=start, until=until)
    if "report" in plan.stages and "report" in selected(plan, start, until):
        from sightsound.report.pooled import write_pooled_report

        write_pooled_report(plan.run.out, {k: Path(p.run.out) for k, p in plans.items()}, plan.report)
        print(f"report: {RunDir(plan.run.out).report('.md')} (pooled over seeds {', '.join(map(str, plans))})")
    return Path(plan.run.out)


def is_pipeline_config(path: str | Path) -> bool:
    data = read_pipeline_yaml(path)
    return "run" in data


def stage_config(path: str | Path, stage: str, overrides=(), flags: dict | None = None):
    """One stage's config as `sightsound run` resolves it (run directory, placeholders), for running
    that stage on its own; `flags` are the stage subcommand's options (`out` names the run directory)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    # `--out` names the run directory, but for a stage whose `out` is its own (bootstrap's models)
    out = flags.pop("out", None) if STAGES[stage].folder is not None else None
    extra = [f"{stage}.{o}" for o in overrides] + [f"{stage}.{k}={json.dumps(v)}" for k, v in flags.items()]
    plan = load_plan(path, extra, out=out)
    own = [cfg for label, cfg in plan.stages.get(stage, []) if label is None]
    if not own:
        raise ConfigError(f"{path}: no single {stage} stage here; use `sightsound run {path} --from {stage} "
                          f"--until {stage}`")
    return own[0]


def read_pipeline_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping; with `extends: OTHER.yaml` (relative to the file) it is laid over
    that file's: sections merge key by key, and a section set to null is dropped (an ablation
    without GRPO says `grpo: null`)."""
    path = find_config(path)
    chain = (*_chain, Path(path).resolve())
    if chain[-1] in _chain:
        raise ConfigError(f"{path}: `extends` goes round in a circle: {' → '.join(p.name for p in chain)}")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` names one config file, not {parent!r}")
    base = read_pipeline_yaml(Path(path).parent / parent, chain)
    for section, values in data.items():
        if values is None:
            base.pop(section, None)
        elif isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return base


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
    stages = order()
    for name in (start, until):
        if name is not None and name not in stages:
            raise ConfigError(f"unknown stage {name!r} (stages: {', '.join(stages)})")
    lo = stages.index(start) if start else 0
    hi = stages.index(until) if until else len(stages) - 1
    return [s for s in stages if s in plan.stages and lo <= stages.index(s) <= hi]


def run(plan: Plan, start: str | None = None, until: str | None = None) -> Path:
    """Run the selected stages in order; returns the run directory."""
    stages = selected(plan, start, until)  # stage names checked before anything is created
    run_dir, run = Path(plan.run.out), RunDir(plan.run.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for name in stages:
        began = time.time()
        if name == "report":
            changed = save_config(plan.report, run.config("report"))
            ran = changed or any(t["status"] == "ran" for t in timings) or not run.report(".md").exists()
            if ran:  # a run that redid nothing keeps the timings of the one that did the work
                write_json(run.manifest(rundir.RUN_MANIFEST), {"stages": timings})
            report.write_run_report(run_dir)  # always (a second): in step with this version's code;
            print(f"report: {run.report('.md')}, {run.report('.html')}")  # files left alone if unchanged
        else:
            ran = _run_stage(plan, STAGES[name])
        timings.append({"stage": name, "status": "ran" if ran else "skipped",
                        "seconds": round(time.time() - began, 2)})
        print(f"run: {name} {'done' if ran else 'already done'} ({timings[-1]['seconds']:.1f} s)")
    total = sum(t["seconds"] for t in timings)
    print(f"run: finished in {total:.1f} s → {run_dir}" + (f" ({run.report('.md')})" if "report" in stages
                                                          else f" (stages {', '.join(stages)}; no report yet)"))
    return run_dir


def _run_stage(plan: Plan, stage: Stage) -> bool:
    """Run each of a stage's runs (in this process, or as `run.launch` says); whether any of them
    ran, i.e. wrote its manifest anew. Each run's resolved config is saved as
    `config/<stage>[-<label>].yaml`; a stage that writes outside the run directory (`folder`) gets
    a copy of its manifest in `manifests/`, for the report."""
    run = RunDir(plan.run.out)
    runs = plan.stages[stage.name]
    before = [_mtime(stage.manifest_file(cfg)) for _, cfg in runs]
    for label, cfg in runs:
        name = stage.name if label is None else f"{stage.name}-{label.replace('/', '-')}"
        save_config(cfg, run.config(name))
        if stage.name in plan.run.launch:
            path = run.config(name, launch=True)
            save_config(cfg, path)
            command = shlex.split(with_packaged_paths(plan.run.launch[stage.name])) + [
                "-m", "sightsound", stage.name, "--config", str(path)]
            print("run: " + " ".join(shlex.quote(c) for c in command))
            subprocess.run(command, check=True)
        else:
            stage.main(cfg)
        if stage.folder != "" and label is None:
            _copy_manifest(stage.manifest_file(cfg), run.manifest(stage.name))
    after = [_mtime(stage.manifest_file(cfg)) for _, cfg in runs]
    if None in after:  # e.g. teach with requests that failed: retried by the next run
        raise StageIncomplete(f"stage {stage.name} did not finish (no manifest; its messages above say why); "
                              "run the same command again to resume it")
    return after != before


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _copy_manifest(source: Path, target: Path) -> None:
    """An identical copy is left untouched (so a rerun touches no file)."""
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def describe(plan: Plan, stages: list[str] | None = None) -> str:
    """The plan (or its `stages`), one line per run, with the files each reads and writes (for --dry-run)."""
    run_dir = Path(plan.run.out)
    lines = [f"run directory: {plan.run.out}"]
    for name, runs in plan.stages.items():
        if stages is not None and name not in stages:
            continue
        if name == "report":
            lines.append(f"  report: {', '.join(RunDir('').report(s).name for s in ('.md', '.html', '.csv'))}, "
                         f"{rundir.PLOTS}/")
            continue
        stage = STAGES[name]
        for label, cfg in runs:
            where = Path(cfg.out)
            where = where.relative_to(run_dir) if where.is_relative_to(run_dir) else where
            files = ", ".join(stage.writes) if label is None else f"{getattr(cfg, 'subdir', where)}/"  # variants: their folder
            reads = f"{', '.join(stage.reads)} → " if stage.reads and label is None else ""
            lines.append(f"  {name}{f': {label}' if label else ''}: {reads}{files}")
    return "\n".join(lines)
