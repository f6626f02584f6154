"""Datasets as data: one module per benchmark, each with its reader and a `Benchmark` saying how it
is read, reported (its title and the paper's columns) and scored.

    metadata = read("mmau", "data/mmau", "test-mini")      # Metadata: files, entries (Entry | Skip)
    BENCHMARKS["music-avqa"].columns                       # {"Temporal": "Temp", ...}

To add a dataset, write a module with `read(root, split) -> Metadata` and a `BENCHMARK`, and add it
to `BENCHMARKS` (its name is what prepare's `dataset` takes).
"""

from __future__ import annotations

from pathlib import Path

from sightsound.config import ConfigError
from sightsound.datasets import avqa, hf, jsonl, mmar, mmau, mmau_pro, music_avqa
from sightsound.datasets.reading import Benchmark, DatasetError, Metadata
from sightsound.datasets.synth import reader as synth

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    avqa.BENCHMARK, mmau.BENCHMARK, mmau_pro.BENCHMARK, mmar.BENCHMARK, music_avqa.BENCHMARK, jsonl.BENCHMARK,
    hf.BENCHMARK, synth.BENCHMARK)}
TAKES_COLUMNS = {"hf"}  # readers with a `columns` keyword (prepare's `columns:` setting)


def read(dataset: str, root: str | Path, split: str | None = None, columns: dict[str, str] | None = None) -> Metadata:
    """A dataset's metadata, read by its benchmark's reader (`split` defaults to the benchmark's)."""
    if dataset not in BENCHMARKS:
        raise ConfigError(f"unknown dataset {dataset!r} (known: {', '.join(BENCHMARKS)})")
    if columns and dataset not in TAKES_COLUMNS:
        raise ConfigError(f"columns: only the {', '.join(sorted(TAKES_COLUMNS))} reader takes column names, "
                          f"not {dataset!r}")
    benchmark = BENCHMARKS[dataset]
    extra = {"columns": columns} if dataset in TAKES_COLUMNS else {}
    return benchmark.read(Path(root), split or benchmark.split, **extra)
