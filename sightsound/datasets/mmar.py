"""MMAR (Ma et al., 2025): deep reasoning over speech, audio, music and their mix. `MMAR-meta.json`,
one JSON list of 1,000 records, with the clips under `audio/`:

    {"id": "...", "audio_path": "./audio/....wav", "question": "...", "choices": ["...", "..."],
     "answer": "...", "modality": "sound", "category": "Perception Layer", "sub-category": "...",
     "language": "en", "source": "...", "url": "https://www.youtube.com/...", "timestamp": "..."}

Like MMAU, the answer is option text; its index is the first choice equal to it, then ignoring case
and surrounding spaces. In the public file a handful of answers match no choice at all (the text
differs by more than that); those records are skipped, with the reason, rather than guessed at.
The sample's `category` is `modality` — sound, music, speech, or a mix of them — the benchmark's
main breakdown; its own `category` (the reasoning layer) and `sub-category` stay in `meta`. A
record may have 2 to 8 choices. Scoring is our default extractor (option letter or text); MMAR's
own evaluation script is not reproduced here.
"""

from __future__ import annotations

from pathlib import Path

from sightsound.answers import option_index
from sightsound.datasets.reading import Benchmark, Entry, Metadata, field, load_json_list, parse_each, string_list
from sightsound.records import Sample


def read(root: Path, split: str) -> Metadata:
    path = Path(root) / "MMAR-meta.json"
    records = load_json_list(path)
    return Metadata(files=[path], total=len(records), entries=parse_each(records, path, split, _parse))


BENCHMARK = Benchmark("mmar", read, split="test", title="MMAR",
                      columns={"sound": "Sound", "music": "Music", "speech": "Speech",
                               "mix-sound-music": "Sound-Music", "mix-sound-speech": "Sound-Speech",
                               "mix-music-speech": "Music-Speech", "mix-sound-music-speech": "Sound-Music-Speech"})


def _parse(record: dict, where: str, split: str) -> Entry:
    qid = field(record, "id", str, where)
    where = f"{where} (id {qid})"
    choices = string_list(record, "choices", where, least=2)
    if len(choices) > 8:
        raise ValueError(f"{where}: field 'choices' should hold 2 to 8 strings, found {len(choices)}")
    answer_text = field(record, "answer", str, where)
    try:
        answer = option_index(answer_text, choices)
    except ValueError:
        raise ValueError(f"{where}: field 'answer' {answer_text!r} is not one of the choices") from None
    audio_path = field(record, "audio_path", str, where)
    sample = Sample(id=qid, dataset="mmar", split=split, question=field(record, "question", str, where),
                    options=list(choices), answer=answer, answer_text=answer_text,
                    category=field(record, "modality", str, where),
                    meta={k: v for k, v in record.items() if k not in {"id", "question", "choices", "answer"}})
    return Entry(sample=sample, stems=[Path(audio_path).stem])
