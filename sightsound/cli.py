"""The `sightsound` command: one subcommand per stage.

    sightsound synth --out runs/world --clips 48
    sightsound prepare --dataset synth --root runs/world --split train --out runs/demo
    sightsound prepare --config configs/demo.yaml split=val num_frames=4

Every subcommand takes `--config FILE` (a YAML file holding the stage's keys, or a section named
after the stage), its flags, and trailing `key=value` overrides, applied in that order.
"""

from __future__ import annotations

import argparse
import sys

from sightsound.config import ConfigError, load_config


def _synth(args, overrides):
    from sightsound.datasets.synth import SynthConfig, generate

    cfg = load_config(SynthConfig, args.config, overrides, section="synth",
                      values={"out": args.out, "clips": args.clips, "seed": args.seed})
    out = generate(cfg)
    print(f"synth: {cfg.clips} clips → {out}")


def _prepare(args, overrides):
    from sightsound.stages import prepare

    cfg = load_config(prepare.PrepareConfig, args.config, overrides, section="prepare",
                      values={"dataset": args.dataset, "root": args.root, "split": args.split,
                              "media": args.media, "out": args.out})
    prepare.main(cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightsound",
        description="SightSound-R1: distil audio-focused reasoning from a vision-language teacher "
                    "into an audio-language student.",
        epilog="Each subcommand also takes --config FILE and trailing key=value overrides.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="generate the synthetic audio-visual world (clips, questions, facts)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--clips", type=int, help="number of clips")
    p.add_argument("--seed", type=int, help="random seed")
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="benchmark metadata + media → samples.jsonl / skipped.jsonl")
    p.add_argument("--dataset", choices=["avqa", "mmau", "music-avqa", "jsonl", "synth"])
    p.add_argument("--root", help="folder holding the metadata file")
    p.add_argument("--split", help="avqa: train|val; mmau: test-mini; music-avqa: test; ...")
    p.add_argument("--media", help="folder searched for clips by file stem (default: --root)")
    p.add_argument("--out", help="run directory")
    p.set_defaults(func=_prepare)

    for p in sub.choices.values():
        p.add_argument("--config", help="YAML config file")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args, args.overrides)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"sightsound {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
