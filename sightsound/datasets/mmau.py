"""MMAU (Sakshi et al., 2024): `mmau-{split}.json`, one JSON list — test-mini (1,000 records, with
answers) or test (9,000, answers withheld for the leaderboard).

    sightsound prepare --dataset mmau --root data/mmau --split test-mini --out runs/mmau

The answer is option text, mapped to the first equal choice; the sample's `category` is `task`
(sound / speech / music, the paper's columns). The test set's samples are unlabelled: `eval`
answers them without scoring them, and `sightsound export EVAL_DIR --format mmau-submission`
writes the file the leaderboard scores (sightsound/exports.py).
Details: docs/reference.md, "sightsound/datasets/mmau.py".
"""

from __future__ import annotations

from pathlib import Path

from sightsound.answers import option_index
from sightsound.datasets.reading import Benchmark, Entry, Metadata, field, load_json_list, parse_each
from sightsound.records import Sample


UNLABELLED_SPLITS = ("test",)  # the leaderboard's split: answers withheld


def read(root: Path, split: str) -> Metadata:
    path = Path(root) / f"mmau-{split}.json"
    records = load_json_list(path)
    return Metadata(files=[path], total=len(records), entries=parse_each(records, path, split, _parse))


BENCHMARK = Benchmark("mmau", read, split="test-mini", title="MMAU {split}",
                      columns={"sound": "Sound", "speech": "Speech", "music": "Music"}, scorer="mmau")


def _parse(record: dict, where: str, split: str) -> Entry:
    qid = field(record, "id", str, where)
    where = f"{where} (id {qid})"
    choices = field(record, "choices", list, where)
    if not 2 <= len(choices) <= 8 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: field 'choices' should hold 2 to 8 strings, found {choices!r}")
    answer_text = field(record, "answer", str, where)
    if not answer_text and split not in UNLABELLED_SPLITS:
        raise ValueError(f"{where}: field 'answer' is empty (only the {', '.join(UNLABELLED_SPLITS)} split withholds "
                         "its answers)")
    try:  # the first equal choice (then ignoring case and spaces); none on the test set
        answer = option_index(answer_text, choices) if answer_text else None
    except ValueError:
        raise ValueError(f"{where}: field 'answer' {answer_text!r} is not one of the choices") from None
    audio_id = field(record, "audio_id", str, where)
    meta = {k: v for k, v in record.items() if k not in {"id", "question", "choices", "answer", "task"}}
    if isinstance(meta.get("category"), list):
        meta["category"] = ", ".join(map(str, meta["category"]))
    if answer is not None:
        meta["duplicate_answer_indices"] = [i for i, c in enumerate(choices) if c == choices[answer]]
    sample = Sample(
        id=qid,
        dataset="mmau",
        split=split,
        question=field(record, "question", str, where),
        options=list(choices),
        answer=answer,
        answer_text=answer_text,
        category=field(record, "task", str, where),
        meta=meta,
    )
    return Entry(sample=sample, stems=[Path(audio_id).stem])

