"""The synthetic world's questions as a dataset: the AVQA reader over its question files, with each
clip's ground truth (`facts.jsonl`) in `meta["facts"]`.

    sightsound prepare --dataset synth --root runs/world --split train --out runs/demo
"""

from __future__ import annotations

import json
from pathlib import Path

from sightsound import rundir
from sightsound.datasets import avqa
from sightsound.datasets.reading import Benchmark, Entry, Metadata


def read(root: Path, split: str) -> Metadata:
    """The AVQA reader over the synthetic question files, with each clip's facts in `meta`."""
    facts_file = Path(root) / rundir.FACTS
    facts = {}
    if facts_file.exists():
        for line in facts_file.read_text().splitlines():
            record = json.loads(line)
            facts[record["video_name"]] = record
    metadata = avqa.read(root, split)

    def entries():
        for entry in metadata.entries:
            if isinstance(entry, Entry):
                entry.sample.dataset = "synth"
                entry.sample.meta["facts"] = facts.get(entry.sample.meta["video_name"])
            yield entry

    files = metadata.files + ([facts_file] if facts_file.exists() else [])
    return Metadata(files=files, entries=entries(), total=metadata.total)


BENCHMARK = Benchmark("synth", read, split="train", title="synthetic", per_category=True)
