"""The records stages hand to each other (one JSON object a line in the run directory's files).

`Sample` is the canonical form every stage reads (`samples.jsonl`): `id`, `dataset`, `split`,
`question`, `options` ([] when open-ended), `answer` (0-based index, or None when open-ended),
`answer_text`, `category` (the benchmark's reporting group), `audio` (a 16 kHz mono wav), `video`
(or None) and `meta` (the source record's other fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One question about one clip, in the form every stage reads."""

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


# Starts the `reply` of a verdict whose text was neither yes nor no (an api checker's; it is a rejection).
UNPARSEABLE = "[unparseable] "


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
