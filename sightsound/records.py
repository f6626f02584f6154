"""The records stages hand to each other, one JSON object a line in the run directory's files
(`sightsound.rundir` names the files): every row read outside the stage that writes it has its
type here, and is written and read through `sightsound.store` with that type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
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

    def portable(self, folder: Path) -> Sample:
        """As written to a file in `folder`: media inside it (a run's cached `media/`, its world)
        named relative to it, so the run can be moved or copied."""
        return self._media(lambda path: relative_path(path, folder))

    def located(self, folder: Path) -> Sample:
        """As read from a file in `folder`: relative media paths made absolute against it."""
        return self._media(lambda path: absolute_path(path, folder))

    def _media(self, convert) -> Sample:
        meta = {**self.meta, "frames": convert(self.meta["frames"])} if self.meta.get("frames") else self.meta
        return replace(self, audio=convert(self.audio), video=convert(self.video), meta=meta)


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

    def portable(self, folder: Path) -> CorpusRow:
        return replace(self, audio=relative_path(self.audio, folder))

    def located(self, folder: Path) -> CorpusRow:
        return replace(self, audio=absolute_path(self.audio, folder))


def relative_path(path: str | None, folder: Path) -> str | None:
    """`path` relative to `folder` when it lies inside it (as written, or resolved), else as it is."""
    if not path or "://" in path or not os.path.isabs(path):
        return path
    for base in dict.fromkeys((os.path.abspath(folder), str(Path(folder).resolve()))):
        if os.path.commonpath([path, base]) == base:
            return Path(os.path.relpath(path, base)).as_posix()
    return path


def absolute_path(path: str | None, folder: Path) -> str | None:
    """A relative `path` joined to `folder` (the file it was read from), absolute; others as they are."""
    if not path or "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.abspath(folder), path))


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
