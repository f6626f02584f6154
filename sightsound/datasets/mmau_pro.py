"""MMAU-Pro (Kumar et al., 2025): `test.parquet`, 5,305 questions, with the clips under `data/` (the
dataset's `data.zip`, unpacked).

    sightsound prepare --dataset mmau-pro --root data/mmau-pro --split test --out runs/mmau-pro

Each row becomes one sample about one clip: questions over several clips (`multi`) and
`instruction following` ones are skipped with their reason, `open` ones become open-ended samples,
and a closed answer must be one of at least two choices. The sample's `category` is the dataset's;
the rest stays in `meta`. Scored by the `mmau-pro` scorer (sightsound/scoring.py).
Details: docs/reference.md, "sightsound/datasets/mmau_pro.py".
"""

from __future__ import annotations

from pathlib import Path

from sightsound.answers import option_index
from sightsound.datasets.reading import Benchmark, Entry, Metadata, field, load_parquet, parse_each, string_list
from sightsound.records import Sample

CLOSED_AT_LEAST = 2
NOT_JUDGED = {"instruction following": "instruction-following questions are judged by MMAU-Pro's rule checks "
                                       "(task_identifier, kwargs), which sightsound does not reproduce"}


def read(root: Path, split: str) -> Metadata:
    path = Path(root) / f"{split}.parquet"
    records = load_parquet(path)
    return Metadata(files=[path], total=len(records), entries=parse_each(records, path, split, _parse))


BENCHMARK = Benchmark("mmau-pro", read, split="test", title="MMAU-Pro", scorer="mmau-pro",
                      columns={"sound": "Sound", "music": "Music", "speech": "Speech", "spatial_audio": "Spatial",
                               "voice_chat": "Voice chat", "open": "Open"})


def _parse(record: dict, where: str, split: str) -> Entry:
    qid = field(record, "id", str, where)
    where = f"{where} (id {qid})"
    category = field(record, "category", str, where)
    if category in NOT_JUDGED:
        raise ValueError(f"{where}: {NOT_JUDGED[category]}")
    clips = record.get("audio_path")
    clips = [clips] if isinstance(clips, str) else clips
    if not isinstance(clips, list) or not clips or not all(isinstance(c, str) for c in clips):
        raise TypeError(f"{where}: field 'audio_path' should be a list of clip paths, found {record.get('audio_path')!r}")
    if len(clips) > 1:
        raise ValueError(f"{where}: field 'audio_path' names {len(clips)} clips; questions over several clips "
                         "are not supported (a sample is one question about one clip)")
    answer_text = field(record, "answer", str, where)
    if record.get("choices") is None or category == "open":  # open-ended
        if not answer_text.strip():
            raise ValueError(f"{where}: field 'answer' is empty on an open-ended question")
        options, answer = [], None
    else:
        options = string_list(record, "choices", where, least=CLOSED_AT_LEAST)
        try:
            answer = option_index(answer_text, options)
        except ValueError:
            raise ValueError(f"{where}: field 'answer' {answer_text!r} is not one of the choices") from None
    meta = {k: v for k, v in record.items() if k not in {"id", "question", "choices", "answer", "category"}}
    sample = Sample(id=qid, dataset="mmau-pro", split=split, question=field(record, "question", str, where),
                    options=list(options), answer=answer, answer_text=answer_text, category=category, meta=meta)
    return Entry(sample=sample, stems=[Path(clips[0]).stem])
