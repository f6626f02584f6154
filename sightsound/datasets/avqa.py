"""AVQA (Yang et al., 2022): `{split}_qa.json`, one JSON list of multiple-choice records.

    {"id": 183, "video_name": "-HG3Omg_89c_000030", "video_id": 341, "question_text": "...",
     "multi_choice": ["a", "b", "c", "d"], "answer": 2, "question_relation": "Both",
     "question_type": "Which"}

`answer` is a 0-based index; `category` is `question_type`. The clip is a 10 s VGGSound cut named
by `video_name`; commonly shared wav files drop the zero padding of the start second
(`-HG3Omg_89c_30.wav`), so both stems are looked for.
"""

from __future__ import annotations

import re
from pathlib import Path

from sightsound.datasets.reading import Benchmark, Entry, Metadata, field, load_json_list, parse_each, string_list
from sightsound.records import Sample


def read(root: Path, split: str) -> Metadata:
    path = Path(root) / f"{split}_qa.json"
    records = load_json_list(path)
    return Metadata(files=[path], total=len(records), entries=parse_each(records, path, split, _parse))


BENCHMARK = Benchmark("avqa", read, split="val", title="AVQA")


def _parse(record: dict, where: str, split: str) -> Entry:
    qid = field(record, "id", (int, str), where)
    where = f"{where} (id {qid})"
    name = field(record, "video_name", str, where)
    options = string_list(record, "multi_choice", where, least=2)  # a question with one option asks nothing
    answer = field(record, "answer", int, where)
    if not 0 <= answer < len(options):
        raise ValueError(f"{where}: field 'answer' = {answer} is out of range for {len(options)} options")
    used = {"id", "question_text", "multi_choice", "answer", "question_type"}
    sample = Sample(
        id=str(qid),
        dataset="avqa",
        split=split,
        question=field(record, "question_text", str, where),
        options=list(options),
        answer=answer,
        answer_text=options[answer],
        category=field(record, "question_type", str, where),
        meta={k: v for k, v in record.items() if k not in used},
    )
    return Entry(sample=sample, stems=clip_stems(name))


def clip_stems(video_name: str) -> list[str]:
    """`-HG3Omg_89c_000030` → [itself, `-HG3Omg_89c_30`]: the zero-padded and unpadded names."""
    stems = [video_name]
    match = re.fullmatch(r"(.+)_(\d+)", video_name)
    if match:
        unpadded = f"{match.group(1)}_{int(match.group(2))}"
        if unpadded != video_name:
            stems.append(unpadded)
    return stems
