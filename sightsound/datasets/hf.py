"""Hugging Face `datasets`: a dataset saved with `save_to_disk` (ROOT is its folder; a DatasetDict's
split is picked by `split`) or, when ROOT is not a folder, a hub dataset (`owner/name`, loaded with
`load_dataset(ROOT, split=...)`, cached by the hub client). Needs `pip install 'sightsound[hf]'`.

    sightsound prepare --dataset hf --root owner/name --split test --out runs/mine

One row per question, with an `Audio` column; the fields read (`id`, `question`, `options`,
`answer`, `category`, `audio`) can be renamed with prepare's `columns:` setting, and every other
column goes into `meta`. The audio is read as the stored bytes and decoded by prepare with PyAV,
like any other clip.
Details: docs/reference.md, "sightsound/datasets/hf.py".
"""

from __future__ import annotations

import json
from pathlib import Path

from sightsound.answers import option_index
from sightsound.datasets.reading import Benchmark, DatasetError, Entry, Metadata, Skip, field
from sightsound.records import Sample

FIELDS = ("id", "question", "options", "answer", "category", "audio")


def read(root: Path, split: str, columns: dict[str, str] | None = None) -> Metadata:
    unknown = set(columns or {}) - set(FIELDS)
    if unknown:
        raise DatasetError(f"columns: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})")
    table = _load(Path(root), split)
    names = {name: (columns or {}).get(name, name) for name in FIELDS}
    if "options" not in (columns or {}) and "choices" in table.column_names:
        names["options"] = "choices"
    names["audio"] = _audio_column(table, root, (columns or {}).get("audio"))
    for name in ("question", "answer"):
        if names[name] not in table.column_names:
            raise DatasetError(f"{root}: no column {names[name]!r} for the {name} (columns: "
                               f"{', '.join(table.column_names)}; rename with prepare's `columns:`)")
    from datasets import Audio

    table = table.cast_column(names["audio"], Audio(decode=False))
    files = [Path(f["filename"]) for f in table.cache_files]
    label = f"{Path(root).name}[{split}]"
    return Metadata(files=files, total=table.num_rows, entries=_entries(table, names, label, split), name=label)


BENCHMARK = Benchmark("hf", read, split="test", title="Hugging Face dataset")


def _load(root: Path, split: str):
    """The split as a `datasets.Dataset`, with errors that name the folder or the hub name."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{root}: reading Hugging Face datasets needs `pip install 'sightsound[hf]'`") from None
    if root.exists():
        try:
            loaded = datasets.load_from_disk(str(root))
        except (FileNotFoundError, ValueError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{root}: not a dataset saved with save_to_disk ({exc})") from exc
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DatasetError(f"{root}: no split {split!r} (has: {', '.join(loaded)})")
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(str(root), split=split)
    except Exception as exc:  # the hub client's ConnectionError, offline and not-found errors, a bad split
        raise DatasetError(f"{root}: not a folder, and not loadable from the hub: {exc}") from exc


def _audio_column(table, root, asked: str | None) -> str:
    from datasets import Audio

    audio = [name for name, feature in table.features.items() if isinstance(feature, Audio)]
    if asked is not None:
        if asked not in table.column_names:
            raise DatasetError(f"{root}: no column {asked!r} for the audio (columns: {', '.join(table.column_names)})")
        return asked
    if len(audio) != 1:
        raise DatasetError(f"{root}: {'no' if not audio else len(audio)} Audio columns"
                           f"{' (' + ', '.join(audio) + ')' if audio else ''}; name one with columns: {{audio: ...}}")
    return audio[0]


def _entries(table, names: dict[str, str], label: str, split: str):
    for number, row in enumerate(table):
        where = f"{label} row {number}"
        try:
            yield _parse(row, names, where, split, number)
        except (KeyError, TypeError, ValueError) as exc:
            rid = row.get(names["id"], f"{split}-{number}")
            yield Skip(id=str(rid), reason=str(exc.args[0]))


def _parse(row: dict, names: dict[str, str], where: str, split: str, number: int) -> Entry:
    qid = str(field(row, names["id"], (str, int), where)) if row.get(names["id"]) is not None else f"{split}-{number}"
    where = f"{where} (id {qid})"
    options = _options(row.get(names["options"]), names["options"], where)
    raw = row.get(names["answer"])
    if raw is None or isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise TypeError(f"{where}: field {names['answer']!r} should be an option index or the answer's text, "
                        f"found {raw!r}")
    if options:
        try:
            answer = option_index(raw, options)
        except ValueError as exc:
            raise ValueError(f"{where}: field {names['answer']!r}: {exc}") from None
        answer_text = options[answer]
    elif isinstance(raw, str) and raw.strip():
        answer, answer_text = None, raw
    else:
        raise ValueError(f"{where}: field {names['answer']!r} should be the answer's text when there are no "
                         f"options, found {raw!r}")
    audio = row.get(names["audio"]) or {}
    category = row.get(names["category"])
    used = {names[n] for n in FIELDS}
    meta = {k: v for k, v in row.items() if k not in used and not isinstance(v, (bytes, bytearray))}
    sample = Sample(id=qid, dataset="hf", split=split, question=field(row, names["question"], str, where),
                    options=options, answer=answer, answer_text=answer_text,
                    category="all" if category is None else str(category), meta=meta)
    if audio.get("bytes"):
        return Entry(sample=sample, stems=[], audio_bytes=audio["bytes"], audio_name=audio.get("path") or "")
    if audio.get("path"):
        return Entry(sample=sample, stems=[audio["path"]])
    raise KeyError(f"{where}: field {names['audio']!r} holds no audio")


def _options(value, name: str, where: str) -> list[str]:
    """The choices as a list of strings ([] when there are none: an open-ended question)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: field {name!r} should be a list of choices (or a JSON list), "
                             f"found {value!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) == 1:
        raise TypeError(f"{where}: field {name!r} should be a list of at least 2 strings (or none), found {value!r}")
    return list(value)
