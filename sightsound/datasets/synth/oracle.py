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

from sightsound.datasets.synth.world import (COUNT_WORDS, NAMES, POSITIONS, VISUAL_TYPES, SynthConfig, make_scene,
                                             questions)
from sightsound.records import Sample


def visual_reasoning(sources: list[dict]) -> str:
    """The chain of thought a model that only watches can write: a moving glyph is taken to sound,
    a still one to be silent, and off-screen sources go unmentioned. It is right about what is seen
    and sounding, and hallucinates on mimes (moving but silent). `sources` are facts records."""
    steps = []
    for s in sorted((s for s in sources if s["visible"]), key=lambda s: POSITIONS.index(s["position"])):
        if s["moving"]:
            steps.append(f"The {s['name']} on the {s['position']} moves, so the {s['name']} is sounding.")
        else:
            steps.append(f"The {s['name']} on the {s['position']} is still, so the {s['name']} is silent.")
    return " ".join(steps) or "I see nothing that could make a sound."


_CLAIM = re.compile(r"\bthe (\w+) is sounding\b", re.IGNORECASE)


def claimed_sounds(text: str) -> set[str]:
    """The sources a trace says are sounding ("... the flute is sounding")."""
    return {name.lower() for name in _CLAIM.findall(text) if name.lower() in NAMES}


def hallucinated(text: str, facts: dict) -> bool:
    """Whether a trace claims a sound the clip's audio does not contain."""
    return bool(claimed_sounds(text) - set(facts["audible"]))


def watcher_choices(sample: Sample) -> list[int]:
    """The options a model that only watches could pick (see `choices_of_watcher`)."""
    return choices_of_watcher(sample.category, sample.options, sample.meta["facts"]["sources"])


def choices_of_watcher(question_type: str, options: list[str], sources: list[dict]) -> list[int]:
    """The options a model that only watches could pick: the moving glyphs it sees among the options
    (for "how many", the number of moving glyphs; for "which first", the glyph that starts moving
    first); any option when nothing it sees decides — always so for loudness and pitch."""
    moving = [s for s in sources if s["visible"] and s["moving"]]
    names = [s["name"] for s in moving]
    if question_type == "Count":
        return [options.index(COUNT_WORDS[max(len(moving), 1) - 1])]
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
        sources = make_scene(clip_rng, cfg)
        facts = {"audible": [s.name for s in sources if s.sounding], "sources": [asdict(s) for s in sources]}
        hallucinating += hallucinated(visual_reasoning(facts["sources"]), facts)
        for q in questions(sources, clip_rng):
            picks = choices_of_watcher(q["question_type"], q["multi_choice"], facts["sources"])
            right.setdefault(q["question_type"], []).append((q["answer"] in picks) / len(picks))
    visual = [v for t in VISUAL_TYPES for v in right.get(t, [])]
    return {"scenes": scenes,
            "watcher_accuracy": {t: round(sum(v) / len(v), 4) for t, v in sorted(right.items())},
            "watcher_accuracy_visual": round(sum(visual) / len(visual), 4),
            "visual_questions": len(visual),
            "hallucinated_traces": round(hallucinating / scenes, 4)}
