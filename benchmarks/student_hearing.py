"""How well the demo's bootstrapped student hears: its direct in-domain accuracy on fresh clips.

    python benchmarks/student_hearing.py [configs/demo.yaml] [--clips 400] [--seed 5] [--work DIR] [--student PATH]

The paper's student, Qwen2-Audio-7B, answers 67.1% of AVQA's validation questions directly (its
Table 1). The bootstrap measures the demo's student on its own held-out clips, but those are about
130 in-domain questions (a 95% interval some 16 points wide), too few to set anything by. This
script builds a fresh world of the config's `synth` settings (its `noise` included) under another
seed, so none of its clips are the bootstrap's or the pipeline's. It asks the config's
bootstrapped student every in-domain question (Which, Count) directly, and prints its accuracy
with a Wilson interval beside the paper's 67.1%. Run it after `sightsound run` has bootstrapped
the models. It trains nothing and reads no Table 2 figure. What it measured for the hiss levels
tried is in docs/premise-experiments.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from sightsound.bootstrap import BootstrapConfig, models
from sightsound.config import load_config
from sightsound.datasets.synth.world import SynthConfig
from sightsound.inference import Asking, answer_all
from sightsound.models import ModelConfig, load_backend
from sightsound.records import Sample
from sightsound.rundir import RunDir
from sightsound.scoring import tally, unparsable
from sightsound.stages import prepare, synth
from sightsound.store import read_jsonl

PAPER = 0.671  # Qwen2-Audio-7B-Instruct, direct inference, AVQA validation (the paper's Table 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/demo.yaml")
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--work", default=None, help="where the fresh world goes (default: a temporary folder)")
    parser.add_argument("--student", default=None, help="another student checkpoint (default: the config's bootstrapped one)")
    args = parser.parse_args()

    bootstrap = load_config(BootstrapConfig, args.config, section="bootstrap")
    student = args.student or models(bootstrap)["student"]
    if not Path(student, "config.json").exists():
        raise SystemExit(f"no bootstrapped student at {student}: run `sightsound run {args.config}` first")
    work = Path(args.work or tempfile.mkdtemp(prefix="student-hearing-"))
    world = dataclasses.replace(load_config(SynthConfig, args.config, section="synth"), out=str(work / "world"),
                                clips=args.clips, seed=args.seed, val_fraction=0.99, progress=False)
    synth.main(world)
    prepare.main(prepare.PrepareConfig(dataset="synth", root=world.out, split="val", out=str(work / "val"),
                                       num_frames=0, progress=False))
    questions = [s for s in read_jsonl(RunDir(work / "val").samples, Sample) if s.category in bootstrap.teacher_questions]
    backend = load_backend(ModelConfig(model=student, dtype="float32", batch_size=64))
    answered, _, _ = answer_all(backend, questions, Asking(method="direct", answer="text", max_new_tokens=24))
    print(json.dumps({
        "student": student, "noise": world.noise, "clips": args.clips, "seed": args.seed,
        **tally([p.correct for p in answered]),
        "unparsable": unparsable([dataclasses.asdict(p) for p in answered])["share"],
        "by_type": {c: tally([p.correct for p in answered if p.category == c])["accuracy"]
                    for c in bootstrap.teacher_questions},
        "paper": PAPER}, indent=1))


if __name__ == "__main__":
    main()
