"""Every prompt, and every chat turn built from one: the teacher's, the checker's, and the one
each inference method asks the student (for SFT, GRPO, evaluation and the demo's bootstrap).

    turn = student_turn(sample, "zero_shot_cot", "letter")      # any record with question, options, audio
    turn = question_turn("direct", question, options, "letter", audio="clip.wav")
    turn = teacher_turn(frames, question, options)         # frames: uint8 [N, H, W, 3] or a .frames.npy path
    turn = checker_turn("clip.wav", reasoning)

A turn is a list of chat messages in the OpenAI shape that every model backend takes: one user
message whose content holds the video, the audio, then the text. The builders take plain values,
never a stage's config.

The paper's student sees an audio-only variant of each AVQA question (R1-AQA's recipe): the word
"video" becomes "audio", by whole word, with its case kept ("Video" → "Audio", "videos" →
"audios"). Records keep the source question as written; prompts are built from them here.
"""

from __future__ import annotations

import re
from pathlib import Path

from sightsound.answers import LETTERS
_VIDEO = re.compile(r"\bvideo(s?)\b", re.IGNORECASE)


def audio_variant(question: str) -> str:
    """'What is in the Video?' → 'What is in the Audio?' ("video" and "audio" have five letters,
    so the case of each letter carries over one to one)."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        target = "audio" + word[5:]
        return "".join(t.upper() if w.isupper() else t for w, t in zip(word, target))

    return _VIDEO.sub(swap, question)


def format_options(options: list[str]) -> str:
    """'A. dog\\nB. cat' — options lettered A–H, as the benchmarks present them."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    return "\n".join(f"{LETTERS[i]}. {option.strip()}" for i, option in enumerate(options))


# --- templates ------------------------------------------------------------------------------------
# `{question}` is the question (the audio variant for the student), `{options}` the lettered options
# (empty for open-ended questions) and `{answer_format}` what goes inside <answer>.

# The teacher sees frames of a *silent* video and must reason about what sounds (paper §3.1).
TEACHER_PROMPT = (
    "These are frames of a silent video: you cannot hear it. Reason step by step about the sounds the "
    "scene makes: which objects are sounding, when, and how loudly, judging only from what you see. "
    "Then answer the question about the audio.\n"
    "Question: {question}\n{options}"
    "Write your reasoning inside <think> </think>, then {answer_format} inside <answer> </answer>."
)

# The student hears the audio and answers the audio variant of the question.
STUDENT_PROMPT = (
    "{question}\n{options}"
    "Think step by step about what you hear inside <think> </think>, then give {answer_format} "
    "inside <answer> </answer>."
)
DIRECT_PROMPT = "{question}\n{options}Answer with {answer_format}."

# Test-time CoT distillation (paper Table 1): the teacher's reasoning about the same clip, in the
# student's prompt.
DISTILL_PROMPT = (
    "Someone who watched this clip without sound reasoned about it:\n{trace}\n"
    "Now listen to the audio. {question}\n{options}"
    "Think step by step inside <think> </think>, then give {answer_format} inside <answer> </answer>."
)

# The audio-grounded checker (paper §3.2) answers yes or no about one teacher trace.
CHECKER_PROMPT = (
    "Here is a description of the sounds in this audio clip, written by someone who could not hear it:\n"
    "{trace}\n"
    "Listen to the audio. Is every claim about what is sounding supported by the audio? Answer yes or no."
)

TEACHER_PROMPTS = {"audio_cot": TEACHER_PROMPT}

# The inference methods of the paper's tables, and the prompt each asks with.
METHOD_PROMPTS = {"direct": DIRECT_PROMPT, "zero_shot_cot": STUDENT_PROMPT, "zero_shot_audio_cot": TEACHER_PROMPT,
                  "test_time_cot_distill": DISTILL_PROMPT}
METHODS = tuple(METHOD_PROMPTS)


# What goes inside <answer> for a multiple-choice question: the option letter (the benchmarks' way),
# or the option's own words (tiny models learn that far sooner; the extractor reads both).
ANSWER_FORMATS = {"letter": "only the option letter", "text": "the words of the option"}


def fill(template: str, question: str, options: list[str], answer: str = "letter", **extra) -> str:
    """Fill a template for one question; multiple-choice answers are given as `answer` says
    (a key of ANSWER_FORMATS), open-ended ones as a word or number."""
    if answer not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer!r} (known: {', '.join(ANSWER_FORMATS)})")
    listed = format_options(options) + "\n" if options else ""
    answer_format = ANSWER_FORMATS[answer] if options else "a single word or number"
    return template.format(question=question, options=listed, answer_format=answer_format, **extra)


# --- chat turns -----------------------------------------------------------------------------------


def user_turn(text: str, audio: str | None = None, frames=None) -> list[dict]:
    """One user message: the video (`frames`, an array or the path of a `.frames.npy` file), the
    audio (a wav path), then the text."""
    parts = []
    if frames is not None:
        video = {"path": str(frames)} if isinstance(frames, (str, Path)) else {"frames": frames}
        parts.append({"type": "video", **video})
    if audio is not None:
        parts.append({"type": "audio", "path": audio})
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def question_turn(method: str, question: str, options: list[str], answer: str = "letter", *,
                  audio: str | None = None, frames=None, trace: str | None = None) -> list[dict]:
    """A question asked with one of METHODS. A model that hears gets the audio variant of the
    question; `trace` is the teacher's reasoning for test_time_cot_distill."""
    if method not in METHOD_PROMPTS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    if audio is not None:
        question = audio_variant(question)
    extra = {} if trace is None else {"trace": trace}
    return user_turn(fill(METHOD_PROMPTS[method], question, options, answer, **extra), audio=audio, frames=frames)


def student_turn(record, method: str = "zero_shot_cot", answer: str = "letter", *, hears: bool = True,
                 frames=None, trace: str | None = None) -> list[dict]:
    """The student's turn for a record with `question`, `options` and `audio` (a sample, a corpus
    row): asked the same way in SFT, GRPO, exports, evaluation and the demo's bootstrap. It hears
    the clip unless `hears` is false (a model evaluated on the video alone)."""
    return question_turn(method, record.question, record.options, answer, audio=record.audio if hears else None,
                         frames=frames, trace=trace)


def teacher_turn(frames, question: str, options: list[str], answer: str = "letter",
                 prompt: str = "audio_cot") -> list[dict]:
    """The silent frames and the teacher's audio-focused prompt (a key of TEACHER_PROMPTS)."""
    return user_turn(fill(TEACHER_PROMPTS[prompt], question, options, answer), frames=frames)


def checker_turn(audio: str, reasoning: str) -> list[dict]:
    """The clip's audio and the checker's yes/no question about a piece of reasoning."""
    return user_turn(CHECKER_PROMPT.format(trace=reasoning), audio=audio)


def label_text(options: list[str], label, answer: str = "letter") -> str:
    """A label as the student should say it: the option letter (or, with answer "text", the
    option's words), or the open-ended answer itself."""
    if not options:
        return str(label)
    return options[label].strip() if answer == "text" else LETTERS[label]
