"""MUSIC-AVQA (Li et al., 2022): `avqa-{split}.json` (or `music-avqa-{split}.json`), one JSON list
of open-ended records.

    {"video_id": "00005868", "question_id": 1234, "type": "[\"Audio-Visual\", \"Temporal\"]",
     "question_content": "Where is the <FL> sounding instrument?", "templ_values": "[\"first\"]",
     "question_deleted": 0, "anser": "left"}

`type` and `templ_values` are JSON *strings*; the placeholders (<Object> <LR> <FL> <TH> <LRer>
<LL> <BA>) are filled in order from `templ_values` (underscores in instrument names become
spaces). The answer key is spelled `anser`. Answers are open-ended, from a 42-word vocabulary:
`options` = [], `answer` = None, `answer_text` set. `category` is the question type (Counting,
Comparative, Existential, Temporal, Location); the modality (Audio, Visual, Audio-Visual) is kept
in `meta["modality"]` so reports can leave visual-only questions out, as the paper most likely did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sightsound.datasets.reading import Benchmark, Entry, Metadata, field, load_json_list, parse_each
from sightsound.records import Sample

PLACEHOLDER = re.compile(r"<(Object|LR|FL|TH|LRer|LL|BA)>")


def read(root: Path, split: str) -> Metadata:
    path = Path(root) / f"avqa-{split}.json"  # the upstream name (data/json_update/avqa-test.json)
    if not path.exists() and (Path(root) / f"music-avqa-{split}.json").exists():
        path = Path(root) / f"music-avqa-{split}.json"
    records = load_json_list(path)
    return Metadata(files=[path], total=len(records), entries=parse_each(records, path, split, _parse, "question_id"))


# The paper's columns: question types over the audio and audio-visual questions (Location and the
# visual-only questions are reported apart).
BENCHMARK = Benchmark("music-avqa", read, split="test", title="MUSIC-AVQA {split}",
                      columns={"Temporal": "Temp", "Comparative": "Comp", "Counting": "Cnt", "Existential": "Exist"},
                      modalities=("Audio", "Audio-Visual"))


def _parse(record: dict, where: str, split: str) -> Entry:
    qid = field(record, "question_id", (int, str), where)
    where = f"{where} (question_id {qid})"
    kinds = _json_string(record, "type", where)
    if not isinstance(kinds, list) or len(kinds) != 2 or not all(isinstance(k, str) for k in kinds):
        raise ValueError(f"{where}: field 'type' should encode [modality, question type], found {kinds!r}")
    values = _json_string(record, "templ_values", where)
    if not isinstance(values, list) or not all(isinstance(v, (str, int)) for v in values):
        raise ValueError(f"{where}: field 'templ_values' should encode a list of words, found {values!r}")
    template = field(record, "question_content", str, where)
    question = fill_template(template, values, where)
    answer = field(record, "anser", str, where)
    video_id = field(record, "video_id", (str, int), where)
    meta = {k: v for k, v in record.items() if k not in {"question_id", "question_content", "anser", "type"}}
    meta.update(modality=kinds[0], question_template=template)
    sample = Sample(
        id=str(qid),
        dataset="music-avqa",
        split=split,
        question=question,
        options=[],
        answer=None,
        answer_text=answer,
        category=kinds[1],
        meta=meta,
    )
    return Entry(sample=sample, stems=[str(video_id)])


def _json_string(record: dict, name: str, where: str):
    raw = field(record, name, str, where)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: field '{name}' is not a JSON string: {raw!r}") from exc


def fill_template(template: str, values: list, where: str = "") -> str:
    """Replace each placeholder, left to right, with the next template value."""
    slots = PLACEHOLDER.findall(template)
    if len(slots) != len(values):
        raise ValueError(f"{where}: {len(slots)} placeholders in {template!r} but "
                         f"{len(values)} values in 'templ_values' {values!r}")
    filled = iter(str(v).replace("_", " ") for v in values)
    return PLACEHOLDER.sub(lambda _: next(filled), template)
