"""Records that stages hand to each other, and the JSONL store they live in.

    with JsonlWriter(run_dir / "samples.jsonl") as out:   # resumes: ids already on disk are kept
        for sample in samples:
            if sample.id not in out:
                out.write(sample)
    write_manifest(run_dir, "prepare", config_hash=..., inputs={...}, counts={...}, started=t0)

Every line is one JSON object written with a single `write` on an append-only descriptor and
flushed at once, so a killed process leaves at most one torn line at the end; the next writer
cuts it off and carries on. A stage's manifest is written last: a stage without one has not
finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class Sample:
    """One question about one clip, in the form every stage reads (DESIGN.md §3)."""

    id: str
    dataset: str
    split: str
    question: str
    options: list[str]  # [] when open-ended
    answer: int | None  # 0-based index into options, None when open-ended
    answer_text: str
    category: str  # the benchmark's reporting group
    audio: str | None = None  # 16 kHz mono wav
    video: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """One sampled teacher chain of thought."""

    sample_id: str
    index: int
    text: str
    pred_index: int | None  # the option the trace chose (None: open-ended or unrecognized)
    answer: str | None = None  # the extracted <answer> (normalized for open-ended questions)

    @property
    def id(self) -> str:
        return f"{self.sample_id}#{self.index}"


@dataclass
class Verdict:
    """A checker's yes/no on one trace against the real audio."""

    sample_id: str
    index: int
    accept: bool
    score: float | None
    reply: str
    checker: str

    @property
    def id(self) -> str:
        return f"{self.sample_id}#{self.index}"


@dataclass
class Prediction:
    """A model's answer to one benchmark sample."""

    id: str
    prompt: str
    response: str
    options: list[str]
    answer: int | str | None
    pred_index: int | None = None
    correct: bool | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # dataset, difficulty, modality: report groups


def to_json(record) -> dict:
    return dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)


def record_id(record) -> str:
    """`id`, or `sample_id#index` for per-trace records (traces, verdicts) read back as dicts."""
    if hasattr(record, "id"):
        return record.id
    if "id" in record:
        return record["id"]
    return f"{record['sample_id']}#{record['index']}"


def read_jsonl(path: str | Path, cls=None) -> Iterator:
    """Yield each line of a JSONL file as a dict (or as `cls(**line)`); a torn last line is ignored.

    A line that is not JSON anywhere else is an error naming the file and line number.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # lines[-1] is b"" unless the last write was torn
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc}") from exc
        if cls is None:
            yield data
            continue
        try:
            yield cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: line {number} does not fit {cls.__name__}: {exc}") from exc


class JsonlWriter:
    """Append-only JSONL writer that resumes by record id without duplicates.

    `id_of` maps a record (dataclass or dict) to its id; the ids already on disk are loaded on
    open, so `id in writer` tells what to skip. A torn last line (a crash mid-write) is cut off.
    """

    def __init__(self, path: str | Path, id_of=record_id):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.id_of = id_of
        self.ids: set[str] = set()
        self.count = 0
        if self.path.exists():
            _cut_torn_tail(self.path)
            for data in read_jsonl(self.path):
                self.ids.add(str(id_of(data)))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __contains__(self, record_or_id) -> bool:
        key = record_or_id if isinstance(record_or_id, str) else self.id_of(record_or_id)
        return str(key) in self.ids

    def write(self, record) -> bool:
        """Append one record unless its id is already stored; returns whether it was written."""
        key = str(self.id_of(record))
        if key in self.ids:
            return False
        line = (json.dumps(to_json(record), ensure_ascii=False) + "\n").encode()
        written = os.write(self._fd, line)  # one write on O_APPEND: the line lands whole or torn at the end
        if written != len(line):
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        self.ids.add(key)
        self.count += 1
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate a file back to its last newline (drops the half line a killed writer left)."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as fh:
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            pos = start
        else:
            end = 0
        if end != size:
            fh.truncate(end)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_inputs(*models: str | None) -> dict:
    """A fingerprint of each local model folder (its files' names, sizes and modification times; a
    LoRA adapter's base folder too), for a stage's `inputs`: a model retrained in place makes the
    stages that used it run again. Hub ids are left out (their name is in the config already)."""
    out = {}
    for model in models:
        folder = Path(model) if model else None
        if folder is None or not folder.is_dir():
            continue
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        out[f"model:{folder}"] = digest.hexdigest()
        adapter = folder / "adapter_config.json"
        if adapter.exists():
            out |= model_inputs(json.loads(adapter.read_text()).get("base_model_name_or_path"))
    return out


# --- stage manifests ---------------------------------------------------------------------------


def manifest_path(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / "manifests" / f"{stage}.json"


def read_manifest(run_dir: str | Path, stage: str) -> dict | None:
    path = manifest_path(run_dir, stage)
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(run_dir, stage: str, *, config_hash: str, inputs: dict, counts: dict,
                   started: float, **extra) -> dict:
    """Write a stage's manifest atomically; call it only after every output is on disk."""
    finished = time.time()
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "inputs": inputs,
        "counts": counts,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "seconds": round(finished - started, 3),
        **extra,
    }
    write_json(manifest_path(run_dir, stage), manifest)
    return manifest


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def stage_status(run_dir, stage: str, config_hash: str, inputs: dict) -> str:
    """'done' when the manifest matches this config and these inputs; 'stale' when one exists
    for something else; 'resume' when outputs were started without a manifest; else 'new'."""
    manifest = read_manifest(run_dir, stage)
    if manifest is not None:
        same = manifest["config_hash"] == config_hash and manifest["inputs"] == inputs
        return "done" if same else "stale"
    started = Path(run_dir) / "manifests" / f"{stage}.started"
    if started.exists() and started.read_text().strip() == config_hash:
        return "resume"
    return "new"


def begin_stage(run_dir, stage: str, cfg, digest: str, inputs: dict, outputs: list[Path],
                main_process: bool = True) -> dict | None:
    """The stage's manifest when it already finished with this config and these inputs (nothing to
    do). Otherwise get ready to run: outputs left by another config or other inputs are removed
    (an interrupted run's, with this config, are kept to be resumed), the start is marked and the
    resolved config saved as `RUN_DIR/config/<stage>.yaml`. In a multi-process run every process
    asks, and only the main one (`main_process`) touches files."""
    from sightsound.config import save_config

    status = stage_status(run_dir, stage, digest, inputs)
    if status == "done":
        return read_manifest(run_dir, stage)
    if not main_process:
        return None
    if status in ("new", "stale"):
        for path in map(Path, outputs):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    mark_started(run_dir, stage, digest)
    save_config(cfg, Path(run_dir) / "config" / f"{stage}.yaml")
    return None


def mark_started(run_dir, stage: str, config_hash: str) -> None:
    """Note which config the in-progress outputs belong to, so a rerun knows it may resume them."""
    path = Path(run_dir) / "manifests" / f"{stage}.started"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path(run_dir, stage).unlink(missing_ok=True)
    path.write_text(config_hash + "\n")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
