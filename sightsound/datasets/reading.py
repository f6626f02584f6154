"""What every dataset reader shares: the records it yields, the `Benchmark` it is described by, and
helpers that read JSON metadata with errors naming the file, the record and the field.

A reader is a plain function `read(root: Path, split: str) -> Metadata`; it only parses metadata
(`stages/prepare.py` finds and decodes the media its entries name by `stems`, or the clip bytes an
entry carries). A reader that takes prepare's `columns:` setting has a `columns` keyword.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Callable, Iterable

from sightsound.records import Sample


class DatasetError(ValueError):
    """Metadata that cannot be read at all (the message names the file)."""


@dataclass
class Entry:
    """A parsed record, waiting for its media: files whose stem is in `stems` (best first)."""

    sample: Sample
    stems: list[str]
    audio_bytes: bytes | None = None  # the clip itself, when the dataset stores it (Hugging Face datasets)
    audio_name: str = ""  # the stored clip's file name, if any (its extension helps the decoder)


@dataclass
class Skip:
    """A record that cannot be used, and why (named by file, record and field)."""

    id: str
    reason: str
    kind: str = "metadata"  # metadata | duplicate | media-missing | media-corrupt | media-outside


@dataclass
class Metadata:
    files: list[Path]  # what was read; hashed into the stage manifest
    entries: Iterable[Entry | Skip]
    total: int | None = None  # number of records, for progress bars
    name: str | None = None  # how messages name the source (default: the first file's name)

    @property
    def source(self) -> str:
        return self.name or self.files[0].name


def load_json_list(path: Path) -> list:
    """A metadata file holding one JSON list, with errors that name the file."""
    if not path.exists():
        raise DatasetError(f"{path}: metadata file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to be metadata") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    return data


def load_parquet(path: Path) -> list[dict]:
    """A metadata table in Parquet as a list of records (needs pyarrow: `pip install 'sightsound[hf]'`)."""
    if not path.exists():
        raise DatasetError(f"{path}: metadata file not found")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs pyarrow; pip install 'sightsound[hf]'") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError kinds for a bad file
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from exc


def parse_each(records: list, path: Path, split: str, parse, id_key: str = "id"):
    """Yield `parse(record, where, split)` for each record, or a `Skip` naming file, record and field."""
    for number, record in enumerate(records):
        where = f"{path.name} record {number}"
        try:
            yield parse(record, where, split)
        except (KeyError, TypeError, ValueError) as exc:
            rid = record.get(id_key, f"#{number}") if isinstance(record, dict) else f"#{number}"
            yield Skip(id=str(rid), reason=str(exc.args[0]))


def string_list(record: dict, name: str, where: str, least: int = 0) -> list[str]:
    """`record[name]` checked to be a list of at least `least` strings."""
    value = field(record, name, list, where)
    if len(value) < least or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{where}: field '{name}' should be a list of at least {least} strings, found {value!r}")
    return value


def field(record: dict, name: str, kind, where: str):
    """`record[name]`, checked to be of `kind`; a KeyError/TypeError message names file, record and field."""
    if not isinstance(record, dict):
        raise TypeError(f"{where}: record is not a JSON object")
    if name not in record:
        raise KeyError(f"{where}: missing field '{name}'")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TypeError(f"{where}: field '{name}' should be {names}, found {value!r}")
    return value


@dataclass(frozen=True)
class Benchmark:
    """A dataset as data: how it is read, how it is reported and how it is scored."""

    name: str  # what prepare's `dataset` takes, and the `dataset` of its samples
    read: Callable[[Path, str], Metadata]
    split: str  # the split read when none is given
    title: str  # its name in report tables ("{split}" is replaced by the split evaluated)
    columns: dict[str, str] = dataclass_field(default_factory=dict)  # the paper's columns: category → header
    modalities: tuple[str, ...] | None = None  # only samples of these `meta["modality"]` count in the columns
    scorer: str = "default"  # how evaluation scores it unless told otherwise (sightsound.scoring.SCORERS)
    per_category: bool = False  # report each category present as a column, and their average
