"""The one stage registry: every stage's name, config class, main function and the files it reads
and writes. The runner (`sightsound run`, `--from/--until`, `--dry-run`, timings), the command line
(one subcommand per stage, its flags and the help of every config key) and the report's stage
table are all derived from `STAGES`; its order is the pipeline's.

To add a stage: write `sightsound/stages/<name>.py` with a config dataclass, `main(cfg)` (open the
stage with `manifest.open_stage`, do the work, `stage.finish(counts)`) and, if you like, a
`summary(manifest)` line for the report; then add one `Stage(...)` entry below. A pipeline config
runs it when it has a section named after it.

How a pipeline section becomes the stage's runs (`runs`): by default one run whose `out` is the run
directory (or `folder` inside it; with `folder=None` the section names its own `out`, as the demo's
cached models do). prepare also prepares every benchmark into `eval/<name>/`, eval is one run
per model and benchmark, and sft and grpo run once per entry of their `variants` (if any).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sightsound import bootstrap, rundir
from sightsound.config import ConfigError, check_name, from_dict
from sightsound.datasets.synth.world import SynthConfig
from sightsound.manifest import manifest_path
from sightsound.rundir import RunDir
from sightsound.stages import evaluate, grpo, prepare, sft, synth, teach, verify


@dataclass(frozen=True)
class Context:
    """What a stage's runs are resolved against: the run directory, the pipeline config's
    `benchmarks` section, and the config file's name (for errors)."""

    run_dir: str
    benchmarks: dict
    source: str


@dataclass(frozen=True)
class Stage:
    name: str  # the pipeline section and the subcommand
    config: type  # its config dataclass
    main: Callable[[Any], dict]  # runs it; writes the manifest last
    help: str  # one line for `sightsound --help`
    reads: tuple[str, ...] = ()  # files it reads, relative to its `out`
    writes: tuple[str, ...] = ()  # files it writes there
    flags: tuple[str, ...] = ("out",)  # config keys its subcommand also takes as --flags
    folder: str | None = ""  # its `out` inside the run directory ("": the run directory); None: the config's own
    placeholder: str | None = None  # stands for its `out` in every string of a pipeline config, e.g. "{models}"
    summary: Callable[[dict], str] | None = None  # the report's one line about a finished run, from its manifest
    runs: Callable[["Stage", dict, Context], list] | None = None  # the section → [(label, config)]; default: one
    manifest: Callable[[Any], Path] | None = None  # where a run's manifest is; default: OUT/manifests/<name>.json

    def resolve(self, section: dict, context: Context) -> list[tuple[str | None, Any]]:
        """The runs a pipeline section asks for: (label, config), label None for the stage's own run."""
        return (self.runs or single_run)(self, section, context)

    def manifest_file(self, cfg) -> Path:
        return self.manifest(cfg) if self.manifest else manifest_path(cfg.out, self.name)


def single_run(stage: Stage, section: dict, context: Context) -> list:
    """One run, its `out` fixed by the runner (unless the stage keeps its own `folder=None`)."""
    source = f"{context.source} [{stage.name}]"
    section = dict(section)
    if stage.folder is not None:
        if "out" in section:
            raise ConfigError(f"{source}: 'out' is fixed by the runner (the run directory, {context.run_dir})")
        section["out"] = str(Path(context.run_dir) / stage.folder) if stage.folder else context.run_dir
    return [(None, from_dict(stage.config, section, source))]


def variant_runs(stage: Stage, section: dict, context: Context) -> list:
    """One run, or with `variants` — a list of key mappings, each with its own `subdir` — one run per
    variant, labelled by its subdir, each the section's other keys overlaid with the variant's (so
    one config trains the several SFT or GRPO models of the paper's Table 2 in one run directory)."""
    section = dict(section)
    variants = section.pop("variants", None)
    if not variants:
        return single_run(stage, section, context)
    source = f"{context.source} [{stage.name}]"
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v.get("subdir") for v in variants):
        raise ConfigError(f"{source}: `variants` must be a list of mappings, each with its own `subdir`")
    subdirs = [v["subdir"] for v in variants]
    if len(set(subdirs)) < len(subdirs):
        raise ConfigError(f"{source}: two variants share a subdir ({', '.join(subdirs)})")
    return [(variant["subdir"], cfg) for variant in variants
            for _, cfg in single_run(stage, _overlay(section, variant), context)]


def _overlay(base: dict, top: dict) -> dict:
    """`base` with `top`'s keys laid over it, mappings merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        merged[key] = _overlay(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


def benchmarks(context: Context) -> dict[str, tuple[prepare.PrepareConfig, dict]]:
    """name → (its PrepareConfig into `eval/<name>/`, eval keys for it alone, e.g. {scorer: mmau})."""
    out = {}
    for name, settings in context.benchmarks.items():
        settings = dict(settings or {})
        overrides = settings.pop("eval", None) or {}
        source = f"{context.source} [benchmarks.{name}]"
        _check_name(f"benchmarks.{name}", name, source)
        if "out" in settings:
            raise ConfigError(f"{source}: 'out' is fixed by the runner (eval/{name}/)")
        settings["out"] = str(RunDir(context.run_dir).benchmark(name).root)
        out[name] = (from_dict(prepare.PrepareConfig, settings, source), overrides)
    return out


def prepare_runs(stage: Stage, section: dict, context: Context) -> list:
    """The training data, then every benchmark (so training can validate on one)."""
    return single_run(stage, section, context) + [(name, cfg) for name, (cfg, _) in benchmarks(context).items()]


def eval_runs(stage: Stage, section: dict, context: Context) -> list:
    """(benchmark/model, EvalConfig) for every model in `models` on every benchmark (or on those its
    `benchmarks` list names); the section's other keys are shared by all of them."""
    source = f"{context.source} [{stage.name}]"
    section = dict(section)
    entries = section.pop("models", None) or []
    prepared = benchmarks(context)
    if not prepared or not entries:
        raise ConfigError(f"{source}: needs a `benchmarks` section and `models` (a list) here")
    runs = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        model_name = entry.pop("name", None)
        if not model_name:
            raise ConfigError(f"{source}: models[{i}] needs a `name` (its folder under eval/<benchmark>/)")
        _check_name(f"models[{i}].name", model_name, source)
        model = entry.pop("model", None)
        only = entry.pop("benchmarks", None) or list(prepared)  # a model may be evaluated on some only
        unknown = [b for b in only if b not in prepared]
        if unknown:
            raise ConfigError(f"{source}: models[{i}].benchmarks names {unknown[0]!r}, not in `benchmarks` "
                              f"({', '.join(prepared)})")
        for bench, (bench_cfg, overrides) in prepared.items():
            if bench not in only:
                continue
            merged = {**copy.deepcopy(section), **overrides, **entry}
            if isinstance(model, str):
                merged["model"] = {**merged.get("model", {}), "model": model}
            elif isinstance(model, dict):
                merged["model"] = {**merged.get("model", {}), **model}
            merged.update(samples=str(RunDir(bench_cfg.out).samples), benchmark=bench,
                          out=str(RunDir(context.run_dir).eval(bench, model_name).root))
            runs.append((f"{bench}/{model_name}", from_dict(stage.config, merged, f"{source} models[{i}]")))
    return runs


def _check_name(key: str, name, source: str) -> None:
    """Benchmark and model names become folders under eval/: plain names only."""
    try:
        check_name(key, name)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _subdir_manifest(cfg) -> Path:
    """SFT and GRPO name their manifest after the folder they train into (`subdir`)."""
    return manifest_path(cfg.out, cfg.subdir)


STAGES: dict[str, Stage] = {stage.name: stage for stage in [
    Stage("bootstrap", bootstrap.BootstrapConfig, bootstrap.main,
          "train the demo's tiny models into the paper's roles (teacher, checker, student); cached",
          writes=(f"{rundir.WORLD}/", f"teacher/{rundir.FINAL}/", "checker/", f"student/{rundir.FINAL}/"),
          folder=None, placeholder="{models}", summary=bootstrap.summary),
    Stage("synth", SynthConfig, synth.main, "generate the synthetic audio-visual world (clips, questions, facts)",
          writes=(f"{rundir.VIDEOS}/", rundir.TRAIN_QA, rundir.VAL_QA, rundir.FACTS), flags=("out", "clips", "seed"),
          folder=rundir.WORLD, summary=synth.summary),
    Stage("prepare", prepare.PrepareConfig, prepare.main, "benchmark metadata + media → samples.jsonl / skipped.jsonl",
          writes=(rundir.SAMPLES, rundir.SKIPPED, f"{rundir.MEDIA}/"), flags=("dataset", "root", "split", "media", "out"),
          summary=prepare.summary, runs=prepare_runs),
    Stage("teach", teach.TeachConfig, teach.main,
          "teacher CoT on silent video, n samples each → traces.jsonl, consensus.jsonl",
          reads=(rundir.SAMPLES,), writes=(rundir.TRACES, rundir.CONSENSUS), summary=teach.summary),
    Stage("verify", verify.VerifyConfig, verify.main,
          "a checker that hears says yes/no to each trace → verdicts.jsonl, corpus.jsonl",
          reads=(rundir.SAMPLES, rundir.TRACES, rundir.CONSENSUS), writes=(rundir.VERDICTS, rundir.CORPUS),
          flags=("out", "checker"), summary=verify.summary),
    Stage("sft", sft.SFTConfig, sft.main, "LoRA SFT of the student on verified traces (or labels) → sft/",
          reads=(rundir.CORPUS,), writes=("sft/",), summary=sft.summary, manifest=_subdir_manifest,
          runs=variant_runs),
    Stage("grpo", grpo.GRPOConfig, grpo.main, "GRPO from the SFT student against the teacher's labels → grpo/",
          reads=(rundir.SAMPLES, rundir.CONSENSUS), writes=("grpo/",), summary=grpo.summary,
          manifest=_subdir_manifest, runs=variant_runs),
    Stage("eval", evaluate.EvalConfig, evaluate.main, "a model on a prepared benchmark with one of the paper's methods",
          reads=(f"{rundir.EVAL}/<benchmark>/{rundir.SAMPLES}",),
          writes=(f"{rundir.EVAL}/<benchmark>/<model>/{rundir.PREDICTIONS}", f"{rundir.EVAL}/<benchmark>/<model>/{rundir.RESULT}"),
          flags=("samples", "out", "method"), runs=eval_runs),
]}

