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
