"""The records stages hand to each other, one JSON object a line in the run directory's files
(`sightsound.rundir` names the files): every row read outside the stage that writes it has its
type here, and is written and read through `sightsound.store` with that type.
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


@dataclass
class Consensus:
    """teach's self-consistency vote on one sample (`consensus.jsonl`): kept for distillation
    exactly when `unanimous` (all n answers the same, recognizable one: `label`)."""

    id: str  # the sample's
    votes: list  # each trace's answer: an option index, or the open-ended word (None: unrecognized)
    unanimous: bool
    label: int | str | None  # the teacher's unanimous answer
    label_text: str | None  # the label as the option's words
    label_correct: bool | None  # the label against the ground truth (None: no answer to compare)
    category: str
    error: str | None = None  # why the sample could not be asked (its clip is unusable)
    server: str | None = None  # which server answered (HTTP backends)


@dataclass
class CorpusRow:
    """One accepted trace in a fact-checked corpus (`corpus.jsonl`): all SFT needs to train
    (audio, question) → trace, so the corpus joins no other file."""

    id: str  # the trace's: sample_id#index
    sample_id: str
    index: int
    dataset: str
    split: str
    category: str
    audio: str | None
    question: str
    options: list[str]
    text: str  # the whole trace
    label: int | str | None  # the teacher's answer (unanimous, or the trace's own for n = 1 corpora)
    label_text: str | None


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
