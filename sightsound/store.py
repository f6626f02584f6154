"""The JSONL store stages hand records over in, and atomic JSON files.

    with JsonlWriter(RunDir(run_dir).samples) as out:     # resumes: ids already on disk are kept
        for sample in samples:
            if sample.id not in out:
                out.write(sample)

Every line is one JSON object written with a single `write` on an append-only descriptor and
flushed at once, so a killed process leaves at most one torn line at the end; the next writer
cuts it off and carries on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator


def to_json(record, folder: Path | None = None) -> dict:
    """A record as one JSON object. A record type with `portable(folder)` (records.Sample,
    records.CorpusRow) names its media relative to the file's `folder`; `located(folder)` reverses
    it on reading, so a run directory can be moved or copied."""
    if folder is not None and hasattr(record, "portable"):
        record = record.portable(folder)
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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc}") from None
        if cls is None:
            yield data
            continue
        try:
            record = cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: line {number} does not fit {cls.__name__}: {exc}") from exc
        yield record.located(path.parent) if hasattr(record, "located") else record


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
            rows = list(read_jsonl(self.path))
            self.ids = {str(id_of(data)) for data in rows}
            if len(self.ids) < len(rows):  # two writers once shared the file (before stages were locked)
                keep_only(self.path, _first_of_each(id_of))
                print(f"{self.path}: {len(rows) - len(self.ids)} duplicate records removed (kept the first of each id)")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __contains__(self, record_or_id) -> bool:
        key = record_or_id if isinstance(record_or_id, str) else self.id_of(record_or_id)
        return str(key) in self.ids

    def write(self, record) -> bool:
        """Append one record unless its id is already stored; returns whether it was written."""
        key = str(self.id_of(record))
        if key in self.ids:
            return False
        line = (json.dumps(to_json(record, self.path.parent), ensure_ascii=False) + "\n").encode()
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


def _first_of_each(id_of):
    """A `keep_only` filter that keeps the first record of each id."""
    seen: set[str] = set()

    def keep(row) -> bool:
        key = str(id_of(row))
        first = key not in seen
        seen.add(key)
        return first

    return keep


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


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    _replace(Path(path), json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    """Write a whole JSONL file atomically (a file that must be whole or absent, e.g. the corpus)."""
    _replace(Path(path), "".join(json.dumps(to_json(row, Path(path).parent), ensure_ascii=False) + "\n" for row in rows))


def keep_only(path: str | Path, keep) -> None:
    """Rewrite a JSONL file atomically with only the records for which `keep(record)` is true
    (e.g. error logs, once a later run has resolved some of their errors); untouched when all are."""
    if Path(path).exists():
        rows = list(read_jsonl(path))
        kept = [row for row in rows if keep(row)]
        if len(kept) < len(rows):
            write_jsonl(path, kept)


def write_if_changed(path: str | Path, data: str | bytes) -> bool:
    """Write `data` (text or bytes) atomically unless the file already holds exactly it; returns
    whether it wrote. A report rewritten on every run keeps its files' times when nothing changed."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return False
    _replace(path, raw)
    return True


def _replace(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
