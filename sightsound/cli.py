"""The `sightsound` command: one subcommand per stage (from `sightsound.registry.STAGES`), and `run`,
`report`, `score`, `estimate`, `export`, `configs`, `verifier train` and `tiny-models`.

    sightsound run configs/demo.yaml --out runs/demo     # the whole pipeline (see sightsound/pipeline.py)
    sightsound teach --out runs/demo model.model=runs/tiny/teacher n=4
    sightsound configs                                   # the configs shipped with the package

Every stage subcommand takes `--config FILE`, its flags and trailing `key=value` overrides, applied
in that order; its `--help` lists every config key with its default. Exit codes: 0 done; 2 a usage
error; 1 the work failed; either way one line on stderr says what.
Details: docs/reference.md, "sightsound/cli.py".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import traceback
import warnings

from sightsound import __version__, formats, pipeline, rundir
from sightsound.config import ConfigError, field_comments, load_config
from sightsound.manifest import StageBusy
from sightsound.pipeline import StageIncomplete
from sightsound.registry import STAGES, Stage


def _stage(args):
    """Any pipeline stage: its config from --config, then its flags, then key=value overrides. From a
    pipeline config (one with a `run` section) the stage gets what `sightsound run` would give it."""
    stage = STAGES[args.command]
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "overrides")}
    if args.config and pipeline.is_pipeline_config(args.config):
        cfg = pipeline.stage_config(args.config, args.command, args.overrides, flags)
    else:
        cfg = load_config(stage.config, args.config, args.overrides, section=args.command, values=flags)
    stage.main(cfg)
    # Launched on several processes (accelerate, torchrun) only global rank 0 writes the manifest.
    if os.environ.get("RANK", "0") == "0" and not stage.manifest_file(cfg).exists():
        raise StageIncomplete(f"{stage.name} did not finish: no manifest was written (its messages above say "
                              "why); run the same command again to retry what failed")


def _run(args):
    from pathlib import Path

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # `sightsound run sft.steps=5`: no config named
        config, overrides = None, [config, *overrides]
    plan = pipeline.load_plan(config or pipeline.DEFAULT_CONFIG, overrides, out=args.out)
    seeds = pipeline.seed_plans(config or pipeline.DEFAULT_CONFIG, overrides, out=args.out) \
        if len(plan.run.seeds) > 1 else {}
    if args.dry_run:  # exactly the stages --from/--until select (and their names checked)
        for one in list(seeds.values()) or [plan]:
            print(pipeline.describe(one, pipeline.selected(one, args.start, args.until)))
        return
    if seeds:
        pipeline.run_seeds(plan, seeds, start=args.start, until=args.until)
    else:
        pipeline.run(plan, start=args.start, until=args.until)


def _report(args):
    from pathlib import Path

    from sightsound import report

    if len(args.results) == 1 and Path(args.results[0]).is_dir():  # a run directory: its whole report
        report.write_run_report(args.results[0])
        print(f"report: {Path(args.results[0]) / 'report.md'}, report.html, report.csv, plots/")
        return
    missing = [r for r in args.results if not Path(r).exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such run directory or result.json file")
    if not args.out:
        raise ConfigError("--out is needed when reporting result.json files")
    print(report.write_report(args.results, args.out))


def _verifier_train(args):
    from sightsound.checking import verifier

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
    hidden = f" ({result['unlabelled']} unlabelled, not judged)" if result["unlabelled"] else ""
    print(f"score: accuracy {formats.num(result['accuracy'])} over {result['count']} predictions{hidden} → {args.out}")


def _estimate(args):
    from sightsound.training import memory

    plan = pipeline.load_plan(args.config or pipeline.DEFAULT_CONFIG, args.overrides)
    shapes = dict(audio_seconds=args.audio_seconds, prompt_tokens=args.prompt_tokens,
                  response_tokens=args.response_tokens)
    blocks = []
    for stage in ("sft", "grpo"):
        if stage not in plan.stages:
            continue
        cfg = plan.config(stage)
        result = memory.stage_estimates(stage, cfg, plan.run.launch.get(stage), **shapes,
                                        fallback_model=plan.config("sft").model if stage == "grpo" else None)
        blocks.append(memory.describe(result, args.gpu_gib))
    print("\n\n".join(blocks) or "no sft or grpo stage in this config")


USAGE_ERROR = 2  # a wrong command, option, stage name or config (argparse exits 2 too)
RUNTIME_ERROR = 1  # the command was right and the work failed (a missing file, a failed stage)


def _export(args):
    from sightsound import exports

    path = exports.export(args.run_dir, args.fmt, args.what, args.out, args.corpus, args.answer, args.metadata,
                          force=args.force, media_root=args.media_root)
    if args.fmt == "mmau-submission":
        print(f"export: MMAU leaderboard file → {path}")
        return
    lines = sum(1 for _ in path.open())
    print(f"export: {lines} {args.what} rows in {args.fmt}'s format → {path}")
    if args.fmt == "swift" and args.what == "grpo":
        print(f"export: the run's rewards for ms-swift (--external_plugins; its docstring has the command) → "
              f"{path.parent / exports.SWIFT_PLUGIN}")


def _configs(args):
    from sightsound.config import PACKAGED, packaged_configs

    print(f"configs shipped with sightsound ({PACKAGED}); give a name or a path to `sightsound run`:")
    for name, description in packaged_configs().items():
        print(textwrap.fill(description, width=100, initial_indent=f"  {name:34} ", subsequent_indent=" " * 37))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightsound",
        description="SightSound-R1: distil audio-focused reasoning from a vision-language teacher "
                    "into an audio-language student.",
        epilog="Stage subcommands also take --config FILE and trailing key=value overrides.",
    )
    parser.add_argument("--version", action="version", version=f"sightsound {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_run(sub)
    for stage in STAGES.values():
        _add_stage(sub, stage)

    _add_tools(sub)
    _add_export(sub)
    _add_listing(sub)
    return parser


def _add_run(sub) -> None:
    p = sub.add_parser("run", help=f"the whole pipeline from one config: {' → '.join(pipeline.order())} "
                                   "(finished stages are skipped)")
    p.add_argument("config", nargs="?", help="pipeline config: a path, or a packaged config's name "
                                             "(`sightsound configs`; default: demo, the CPU demo)")
    p.add_argument("--out", help="run directory (default: the config's run.out)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="first stage to run")
    p.add_argument("--until", metavar="STAGE", help="last stage to run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. sft.steps=10")
    p.set_defaults(func=_run)


def _add_tools(sub) -> None:
    """verifier train, tiny-models, report, estimate."""
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

    p = sub.add_parser("estimate", help="GPU memory per device of the config's SFT and GRPO (no weights loaded)")
    p.add_argument("config", nargs="?", help="pipeline config (default: configs/demo.yaml)")
    p.add_argument("--audio-seconds", type=float, default=10.0, help="length of a clip (default 10: AVQA's)")
    p.add_argument("--prompt-tokens", type=int, default=120, help="text tokens of a prompt (default 120)")
    p.add_argument("--response-tokens", type=int, default=512, help="tokens of an SFT response (default 512)")
    p.add_argument("--gpu-gib", type=float, default=None, help="say whether each stage fits a GPU of this size")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. grpo.group_size=4")
    p.set_defaults(func=_estimate)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a run's SFT corpus or GRPO prompts for ms-swift, LLaMA-Factory or TRL; "
                                      "an MMAU test evaluation for the leaderboard")
    p.add_argument("run_dir", help="a run directory (after verify for sft, after teach for grpo); for "
                                   "mmau-submission, an eval output folder")
    p.add_argument("--format", required=True, choices=["swift", "llamafactory", "trl", "mmau-submission"], dest="fmt")
    p.add_argument("--what", default="sft", choices=["sft", "grpo"],
                   help="sft: the accepted CoT corpus; grpo: the unanimous prompts with the teacher's label")
    p.add_argument("--out", help="the file written (default: RUN_DIR/export/FORMAT-WHAT.jsonl; "
                                 "EVAL_DIR/mmau-submission.json)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--media-root", help="write audio paths relative to this folder (default: absolute, where "
                                        "the run's media are now)")
    p.add_argument("--metadata", help="mmau-submission: the benchmark file (default: the one prepare read)")
    p.add_argument("--corpus", default=rundir.CORPUS, help="which corpus file of the run (sft)")
    p.add_argument("--answer", choices=["letter", "text"],
                   help="how the prompt asks for a multiple-choice answer (and how the grpo solution is written); "
                        "default: as the run asked (its sft or grpo stage's `answer`)")
    p.set_defaults(func=_export)


def _add_listing(sub) -> None:
    """configs, score."""
    p = sub.add_parser("configs", help="list the pipeline configs shipped with the package")
    p.set_defaults(func=_configs)

    p = sub.add_parser("score", help="score a predictions JSONL file")
    p.add_argument("predictions", help="JSONL with response, options, answer[, category, id]")
    p.add_argument("--out", required=True, help="RESULT.json")
    p.add_argument("--scorer", choices=["default", "mmau", "mmau-pro"], default="default")
    p.set_defaults(func=_score)


def _add_stage(sub, stage: Stage) -> None:
    """A stage's subcommand: its flags, --config, key=value overrides, and every config key in --help."""
    flow = f"reads {', '.join(stage.reads)}; " if stage.reads else ""
    p = sub.add_parser(stage.name, help=stage.help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=f"{stage.help}\n({flow}writes {', '.join(stage.writes) or 'its manifest'})",
                       epilog="config keys (in --config FILE, or as key=value), with their defaults:\n"
                              + "\n".join(config_keys(stage.config())))
    comments = field_comments(stage.config)
    types = {f.name: str(f.type) for f in dataclasses.fields(stage.config)}
    for key in stage.flags:
        kind = int if types[key].startswith("int") else float if types[key].startswith("float") else str
        p.add_argument(f"--{key}", type=kind, help=comments.get(key))
    p.add_argument("--config", help="YAML config file (the stage's keys, or a pipeline config)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_stage)


def config_keys(cfg, prefix: str = "") -> list[str]:
    """'  key = default  # what it means' for every key of a config (nested ones dotted)."""
    comments = field_comments(type(cfg))
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines += config_keys(value, f"{prefix}{f.name}.")
            continue
        comment = f"  # {comments[f.name]}" if f.name in comments else ""
        lines.append(f"  {prefix}{f.name} = {json.dumps(value)}{comment}")
    return lines


def _leave_process_group() -> None:
    """A command that trained under `accelerate launch` leaves its process group before the process
    ends: a process torn down while its peers still talk can abort at exit (seen on gloo under
    DeepSpeed ZeRO-3 with the optimizer offloaded). Here, where the process's work ends, not in the
    training loop: a program may train twice in one process group."""
    torch = sys.modules.get("torch")  # a command that never imported torch has no process group
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one run; `key=value` overrides written after an option land here
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Deprecation notices of the libraries we call are for us, not for users of the command line.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate|torch)\b")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        args.func(args)
        _leave_process_group()
    except ConfigError as exc:  # the command or its config: a usage error, like argparse's
        print(f"sightsound {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except (ValueError, OSError, StageIncomplete, StageBusy, subprocess.CalledProcessError) as exc:  # the work failed
        print(f"sightsound {args.command}: error: {exc}", file=sys.stderr)
        return RUNTIME_ERROR
    except (KeyboardInterrupt, Terminated) as exc:  # what is on disk is whole: a rerun resumes it
        print(f"\nsightsound {args.command}: interrupted; run the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception:
        traceback.print_exc()
        print(f"sightsound {args.command}: this is a bug in sightsound; please report it with the traceback above",
              file=sys.stderr)
        return RUNTIME_ERROR
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so that it ends as Ctrl-C does."""


def _terminated(signum, frame):
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
