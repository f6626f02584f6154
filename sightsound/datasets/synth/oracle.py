"""The synthetic world's ground truth, as a watcher and a listener would tell it: the reasoning a
model that only watches can write, which sounds a trace claims, whether those claims are
hallucinated, which answers a watcher could give, and — from scenes alone, nothing rendered —
how well a perfect watcher does on a world's settings (`calibration`).

    python -c "from sightsound.datasets.synth import oracle, world; print(oracle.calibration(world.SynthConfig()))"
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict

from sightsound.answers import thinking
from sightsound.datasets.synth.world import (COUNT_WORDS, NAMES, POSITIONS, VISUAL_TYPES, SynthConfig, make_scene,
                                             questions)
from sightsound.records import Sample


def visual_reasoning(sources: list[dict]) -> str:
    """The audio-focused chain of thought a model that only watches can write (the paper prompts its
    teacher for claims about sounds): each source it sees, left to right, said to be sounding when
    its glyph moves and silent when still; off-screen sources go unmentioned. The claims are about
    what is heard and where (the audio is panned by position), so the checker can test them; they
    are right about what is seen and sounding, and hallucinate on mimes (moving but silent).
    `sources` are facts records."""
    steps = []
    for s in sorted((s for s in sources if s["visible"]), key=lambda s: POSITIONS.index(s["position"])):
        steps.append(f"The {s['name']} on the {s['position']} is {'sounding' if s['moving'] else 'silent'}.")
    return " ".join(steps) or "Nothing in the scene is sounding."


_CLAIM = re.compile(r"\bthe (\w+)(?: on the \w+)? is sounding\b", re.IGNORECASE)


def claimed_sounds(text: str) -> set[str]:
    """The sources a trace says are sounding ("the flute is sounding", "the flute on the left is sounding")."""
    return {name.lower() for name in _CLAIM.findall(text) if name.lower() in NAMES}


def hallucinated(text: str, facts: dict) -> bool:
    """Whether a trace claims a sound the clip's audio does not contain."""
    return bool(claimed_sounds(text) - set(facts["audible"]))


def hallucinated_reasoning(responses: dict[str, str], facts: dict[str, dict]) -> dict[str, bool | None]:
    """Question id → whether a model's reasoning (`answers.thinking`) says a sound the clip lacks is
    sounding (None when it says no source is sounding), for each response that thinks and whose
    clip's `facts` are known: what AGFV checks the teacher's traces for, asked of the student's own
    reasoning."""
    thoughts = {q: thinking(text) for q, text in responses.items() if q in facts}
    return {q: hallucinated(thought, facts[q]) if claimed_sounds(thought) else None
            for q, thought in thoughts.items() if thought is not None}


def watcher_choices(sample: Sample) -> list[int]:
    """The options a model that only watches could pick (see `choices_of_watcher`)."""
    return choices_of_watcher(sample.category, sample.options, sample.meta["facts"]["sources"], sample.question)


def choices_of_watcher(question_type: str, options: list[str], sources: list[dict], question: str = "") -> list[int]:
    """The options a model that only watches could pick: the moving glyphs it sees among the options
    (for "how many", the number of moving glyphs; for "which first", the glyph that starts moving
    first; for "is X playing", yes when X moves; for "which is louder", the one that moves when
    the other is still); any option when nothing it sees decides — always so for loudness, pitch and
    audio-only clips."""
    moving = [s for s in sources if s["visible"] and s["moving"]]
    names = [s["name"] for s in moving]
    if question_type in ("Count", "Instruments") or (question_type == "Tally" and moving):
        return [options.index(COUNT_WORDS[max(len(moving), 1) - 1])]
    if question_type == "Exist":  # the source asked about is named in the question
        return [options.index("yes" if any(f"the {name} " in question for name in names) else "no")]
    if question_type == "Compare":
        seen = [i for i, option in enumerate(options) if option in names]
        return seen if len(seen) == 1 else list(range(len(options)))
    if question_type == "Order":
        names = [min(moving, key=lambda s: s["events"][0]["onset"])["name"]] if moving else []
    if question_type in ("Which", "Order"):
        seen = [i for i, option in enumerate(options) if option in names]
        if seen:
            return seen
    return list(range(len(options)))


def calibration(cfg: SynthConfig, scenes: int = 2000) -> dict:
    """A perfect watcher on `scenes` scenes drawn as `write_world` draws them (seed `cfg.seed`):
    its expected accuracy per question type (a uniform pick among its choices), overall on the types
    vision can answer, and the share of its traces that claim a sound the clip lacks."""
    rng = random.Random(cfg.seed)
    right: dict[str, list[float]] = {}
    hallucinating = 0
    for _ in range(scenes):
        clip_rng = random.Random(rng.randrange(2**32))
        sources = make_scene(clip_rng, cfg, audio_only=cfg.audio_only > 0 and clip_rng.random() < cfg.audio_only)
        facts = {"audible": [s.name for s in sources if s.sounding], "sources": [asdict(s) for s in sources]}
        hallucinating += hallucinated(visual_reasoning(facts["sources"]), facts)
        for q in questions(sources, clip_rng):
            picks = choices_of_watcher(q["question_type"], q["multi_choice"], facts["sources"], q["question_text"])
            right.setdefault(q["question_type"], []).append((q["answer"] in picks) / len(picks))
    visual = [v for t in VISUAL_TYPES for v in right.get(t, [])]
    return {"scenes": scenes,
            "watcher_accuracy": {t: round(sum(v) / len(v), 4) for t, v in sorted(right.items())},
            "watcher_accuracy_visual": round(sum(visual) / len(visual), 4),
            "visual_questions": len(visual),
            "hallucinated_traces": round(hallucinating / scenes, 4)}
