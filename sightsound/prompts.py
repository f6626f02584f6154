"""Every prompt template in one place.

The paper's student sees an audio-only variant of each AVQA question (R1-AQA's recipe): the word
"video" becomes "audio", by whole word, with its case kept ("Video" → "Audio", "videos" →
"audios"). Records keep the source question as written; prompts are built from them here.
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGH"
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
STUDENT_PROMPTS = {"cot": STUDENT_PROMPT, "direct": DIRECT_PROMPT}


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
