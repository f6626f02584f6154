"""synth: generate the synthetic audio-visual world (clips, AVQA-format questions, ground truth).

    sightsound synth --out runs/world --clips 48 --seed 0

Writes into `out` what `sightsound.datasets.synth.world` describes: `videos/<name>.mp4`,
`train_qa.json` / `val_qa.json` and `facts.jsonl`. Deterministic by seed; a world already written
with the same settings is kept as it is.
"""

from __future__ import annotations

from pathlib import Path

from sightsound.datasets.synth.world import SynthConfig, write_world
from sightsound.manifest import open_stage


def main(cfg: SynthConfig) -> dict:
    out = Path(cfg.out)
    stage = open_stage(out, "synth", cfg, inputs={}, outputs=[])
    if stage.done:
        return stage.manifest
    counts = write_world(cfg)
    print(f"synth: {cfg.clips} clips → {out}")
    return stage.finish(counts)


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    questions = ", ".join(f"{k.removesuffix('_questions')} {v}" for k, v in c.items() if k.endswith("_questions"))
    return f"{c.get('clips')} clips; questions: {questions or '—'}"
