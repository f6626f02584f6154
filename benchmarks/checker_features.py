"""What the demo's checker should hear with: the student's audio tower, or its log-mel input frames.

    python benchmarks/checker_features.py [--models runs/demo-models] [--run runs/demo]

Trains the bootstrap's verifier head (its calibration lines, its settings) on each kind of audio
vector and prints its rejection precision, recall and F1 on the calibration clips it held out and
on the demo run's own teacher traces, labelled by the world's truth (a trace is hallucinated when
it claims a sound the clip does not contain). Needs a finished `sightsound run configs/demo.yaml`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sightsound.checking import verifier
from sightsound.checking.encoders import AudioEncoder, claims, embed_parts
from sightsound.datasets.synth import oracle
from sightsound.records import Sample, Trace
from sightsound.rundir import RunDir
from sightsound.scoring import rejection_metrics
from sightsound.store import read_jsonl

KINDS = [("tower", "max"), ("tower", "mean+max"), ("log-mel", "max"), ("log-mel", "mean+max")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="runs/demo-models")
    parser.add_argument("--run", default="runs/demo")
    args = parser.parse_args()
    settings = json.loads(open(f"{args.models}/checker/verifier.json").read())["training"]
    rows = list(read_jsonl(settings["calibration"]))
    labels = np.array([r["label"] for r in rows])
    train, test = verifier.split_by_clip([r["audio"] for r in rows], labels, settings["holdout"], settings["seed"])
    owner, parts = claims([r["text"] for r in rows], settings["unit"])
    text = embed_parts(parts)

    run = RunDir(args.run)
    samples = {s.id: s for s in read_jsonl(run.samples, Sample)}
    traces = [t for t in read_jsonl(run.traces, Trace) if t.text and samples[t.sample_id].meta.get("facts")]
    bad = np.array([oracle.hallucinated(t.text, samples[t.sample_id].meta["facts"]) for t in traces])
    trace_owner, trace_parts = claims([t.text for t in traces], settings["unit"])
    trace_text = embed_parts(trace_parts)

    print(f"{len(rows)} calibration lines ({len(test)} held out); {len(traces)} run traces, {bad.sum()} hallucinated")
    for features, pooling in KINDS:
        encoder = AudioEncoder(settings["audio_encoder"], pooling=pooling, features=features)
        audio = encoder([r["audio"] for r in rows])
        trace_audio = encoder([samples[t.sample_id].audio for t in traces])

        def pairs(index):
            position = np.full(len(rows), -1)
            position[index] = np.arange(len(index))
            chosen = position[owner] >= 0
            return audio[owner[chosen]], text[chosen], position[owner[chosen]]

        head = verifier.fit_head(*pairs(train), labels[train], rank=settings["rank"], steps=settings["steps"],
                                 lr=settings["lr"], weight_decay=settings["weight_decay"], seed=settings["seed"])
        held = rejection_metrics(~labels[test], verifier.head_probabilities(head, *pairs(test)) < 0.5)
        on_run = rejection_metrics(bad, verifier.head_probabilities(head, trace_audio[trace_owner], trace_text,
                                                                    trace_owner) < 0.5)
        print(f"{features:8} {pooling:9} held-out F1 {held['f1']}  run traces: precision {on_run['precision']} "
              f"recall {on_run['recall']} F1 {on_run['f1']}")


if __name__ == "__main__":
    main()
