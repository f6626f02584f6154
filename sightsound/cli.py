"""The `sightsound` command: one subcommand per stage.

    sightsound synth --out runs/world --clips 48
    sightsound run configs/demo.yaml --out runs/demo     # the whole pipeline (see sightsound/pipeline.py)
    sightsound prepare --dataset synth --root runs/world --split train --out runs/demo
    sightsound tiny-models --out runs/tiny
    sightsound teach --out runs/demo model.model=runs/tiny/teacher n=4
    sightsound verify --out runs/demo --checker local model.model=runs/tiny/student
    sightsound verifier train --calibration calibration.jsonl --out runs/verifier audio_encoder=runs/tiny/student
    sightsound eval --samples runs/mmau/samples.jsonl --out runs/eval/mmau-direct method=direct
    sightsound report runs/eval/*/result.json --out runs/report.md    # or: sightsound report RUN_DIR
    sightsound score predictions.jsonl --out result.json --scorer mmau

Every stage subcommand takes `--config FILE` (a YAML file holding the stage's keys, or a section
named after the stage), its flags, and trailing `key=value` overrides, applied in that order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from sightsound.config import ConfigError, load_config
from sightsound.pipeline import StageIncomplete


def _stage(args):
    """Any pipeline stage: its config from --config, then its flags, then key=value overrides. From a
    pipeline config (one with a `run` section) the stage gets what `sightsound run` would give it."""
    from sightsound import pipeline
    from sightsound.stages import MAINS, SECTIONS

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "overrides")}
    if args.config and pipeline.is_pipeline_config(args.config):
        cfg = pipeline.stage_config(args.config, args.command, args.overrides, flags)
    else:
        cfg = load_config(SECTIONS[args.command], args.config, args.overrides, section=args.command, values=flags)
    MAINS[args.command](cfg)


def _run(args):
    from pathlib import Path

    from sightsound import pipeline

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # `sightsound run sft.steps=5`: no config named
        config, overrides = None, [config, *overrides]
    plan = pipeline.load_plan(config or pipeline.DEFAULT_CONFIG, overrides, out=args.out)
    if args.dry_run:
        print(pipeline.describe(plan))
        return
    pipeline.run(plan, start=args.start, until=args.until)


def _report(args):
    from pathlib import Path

    from sightsound import report

    if len(args.results) == 1 and Path(args.results[0]).is_dir():  # a run directory: its whole report
        report.write_run_report(args.results[0])
        print(f"report: {Path(args.results[0]) / 'report.md'}, report.html, report.csv, plots/")
        return
    if not args.out:
        raise ValueError("--out is needed when reporting result.json files")
    print(report.write_report(args.results, args.out))


def _verifier_train(args):
    from sightsound import verifier

    cfg = load_config(verifier.TrainConfig, None, args.overrides,
                      values={"calibration": args.calibration, "from_run": args.from_run, "out": args.out})
    verifier.train(cfg)


def _tiny_models(args):
    from sightsound.models import tiny

    for role, path in tiny.build_all(args.out, seed=args.seed).items():
        print(f"tiny-models: {role} → {path}")


def _score(args):
    from sightsound import scoring

    result = scoring.score_file(args.predictions, args.out, args.scorer)
    print(f"score: accuracy {result['accuracy']:.4f} over {result['count']} predictions → {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightsound",
        description="SightSound-R1: distil audio-focused reasoning from a vision-language teacher "
                    "into an audio-language student.",
        epilog="Stage subcommands also take --config FILE and trailing key=value overrides.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    stages = []

    p = sub.add_parser("run", help="the whole pipeline from one config: bootstrap → synth → prepare → teach → "
                                   "verify → sft → grpo → eval → report (finished stages are skipped)")
    p.add_argument("config", nargs="?", help="pipeline config (default: configs/demo.yaml, the CPU demo)")
    p.add_argument("--out", help="run directory (default: the config's run.out)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="first stage to run")
    p.add_argument("--until", metavar="STAGE", help="last stage to run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. sft.steps=10")
    p.set_defaults(func=_run)

    p = sub.add_parser("synth", help="generate the synthetic audio-visual world (clips, questions, facts)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--clips", type=int, help="number of clips")
    p.add_argument("--seed", type=int, help="random seed")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("prepare", help="benchmark metadata + media → samples.jsonl / skipped.jsonl")
    p.add_argument("--dataset", choices=["avqa", "mmau", "music-avqa", "jsonl", "synth"])
    p.add_argument("--root", help="folder holding the metadata file")
    p.add_argument("--split", help="avqa: train|val; mmau: test-mini; music-avqa: test; ...")
    p.add_argument("--media", help="folder searched for clips by file stem (default: --root)")
    p.add_argument("--out", help="run directory")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("teach", help="teacher CoT on silent video, n samples each → traces.jsonl, consensus.jsonl")
    p.add_argument("--out", help="run directory (holding samples.jsonl)")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("sft", help="LoRA SFT of the student on verified traces (or labels) → sft/")
    p.add_argument("--out", help="run directory")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("grpo", help="GRPO from the SFT student against the teacher's labels → grpo/")
    p.add_argument("--out", help="run directory")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("eval", help="a model on a prepared benchmark with one of the paper's methods")
    p.add_argument("--samples", help="a prepared benchmark's samples.jsonl")
    p.add_argument("--out", help="output folder (predictions.jsonl, result.json)")
    p.add_argument("--method", help="direct | zero_shot_cot | zero_shot_audio_cot | test_time_cot_distill")
    p.set_defaults(func=_stage)
    stages.append(p)

    p = sub.add_parser("verify", help="a checker that hears says yes/no to each trace → verdicts.jsonl, corpus.jsonl")
    p.add_argument("--out", help="run directory (holding traces.jsonl, consensus.jsonl)")
    p.add_argument("--checker", help="local | api | trained")
    p.set_defaults(func=_stage)
    stages.append(p)

    for p in stages:
        p.add_argument("--config", help="YAML config file")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("verifier", help="the lightweight audio-text verifier (checker=trained)")
    verifier_sub = p.add_subparsers(dest="verifier_command", metavar="COMMAND", required=True)
    p = verifier_sub.add_parser("train", help="train it on a calibration set; reports rejection precision/recall")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--calibration", help="JSONL lines with audio, text, label (true = supported by the audio)")
    source.add_argument("--from-run", help="a run directory whose verdicts.jsonl gives the labels")
    p.add_argument("--out", required=True, help="folder the verifier is saved to")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="training settings (audio_encoder=..., rank=, steps=, holdout=, seed=, ...)")
    p.set_defaults(func=_verifier_train)

    p = sub.add_parser("tiny-models", help="build tiny real-class Qwen models (tests and the CPU demo)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_models)

    p = sub.add_parser("report", help="a run directory's report, or the paper's tables from result.json files")
    p.add_argument("results", nargs="+", help="a run directory, or result.json files written by `sightsound eval`")
    p.add_argument("--out", help="with result.json files: report.md (report.csv is written beside it)")
    p.set_defaults(func=_report)

    p = sub.add_parser("score", help="score a predictions JSONL file")
    p.add_argument("predictions", help="JSONL with response, options, answer[, category, id]")
    p.add_argument("--out", required=True, help="RESULT.json")
    p.add_argument("--scorer", choices=["default", "mmau"], default="default")
    p.set_defaults(func=_score)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one run; `key=value` overrides written after an option land here
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except (ConfigError, ValueError, OSError, StageIncomplete, subprocess.CalledProcessError) as exc:
        print(f"sightsound {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
