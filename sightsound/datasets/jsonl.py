"""Users' own data: `{split}.jsonl` (or ROOT itself when it is a .jsonl file) holding canonical
sample records — `id`, `question`, `options`, `answer`, `answer_text`, `category`,
and `audio` and/or `video` naming the media by path (relative to the file) or by file stem.
`dataset` and `split` default to "jsonl" and the split; `meta` is kept as given.
"""

from __future__ import annotations

import json
from pathlib import Path

from sightsound.datasets.reading import Benchmark, DatasetError, Entry, Metadata, Skip, field
from sightsound.records import Sample


def read(root: Path, split: str) -> Metadata:
    path = Path(root) if Path(root).suffix == ".jsonl" else Path(root) / f"{split}.jsonl"
    if not path.exists():
        raise DatasetError(f"{path}: metadata file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return Metadata(files=[path], entries=_entries(path, text, split))


BENCHMARK = Benchmark("jsonl", read, split="test", title="jsonl")


def _entries(path: Path, text: str, split: str):
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            record = json.loads(line)
            yield _parse(record, where, split, path.parent)
        except json.JSONDecodeError as exc:
            yield Skip(id=f"line {number}", reason=f"{where}: not valid JSON: {exc}")
        except RecursionError:
            yield Skip(id=f"line {number}", reason=f"{where}: JSON nested too deeply to be a record")
        except (KeyError, TypeError, ValueError) as exc:
            rid = record.get("id", f"line {number}") if isinstance(record, dict) else f"line {number}"
            yield Skip(id=str(rid), reason=str(exc.args[0]))


def _parse(record: dict, where: str, split: str, base: Path) -> Entry:
    qid = field(record, "id", (str, int), where)
    where = f"{where} (id {qid})"
    options = record.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options) or len(options) == 1:
        raise TypeError(f"{where}: field 'options' should be a list of at least 2 strings (or none), found {options!r}")
    answer = record.get("answer")
    if answer is not None:
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
            raise ValueError(f"{where}: field 'answer' should be an index into options, found {answer!r}")
    for name in ("answer_text", "category", "dataset", "split", "audio", "video"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise TypeError(f"{where}: field '{name}' should be a string, found {record[name]!r}")
    if record.get("meta") is not None and not isinstance(record["meta"], dict):
        raise TypeError(f"{where}: field 'meta' should be an object, found {record['meta']!r}")
    answer_text = record.get("answer_text")
    if answer_text is None:
        if answer is None:
            raise KeyError(f"{where}: missing field 'answer_text' (or an 'answer' index)")
        answer_text = options[answer]
    media = [record.get(k) for k in ("video", "audio") if record.get(k)]
    if not media:
        raise KeyError(f"{where}: missing field 'audio' or 'video'")
    sample = Sample(
        id=str(qid),
        dataset=record.get("dataset", "jsonl"),
        split=record.get("split", split),
        question=field(record, "question", str, where),
        options=list(options),
        answer=answer,
        answer_text=str(answer_text),
        category=str(record.get("category", "all")),
        meta=dict(record.get("meta") or {}),
    )
    stems = []
    for m in media:
        p = Path(m) if Path(m).is_absolute() else base / m
        stems.append(str(p) if p.exists() else Path(m).stem)
    return Entry(sample=sample, stems=stems)
