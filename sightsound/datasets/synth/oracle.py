"""The synthetic world's ground truth, as a watcher and a listener would tell it: the reasoning a
model that only watches can write, which sounds a trace claims, whether those claims are
hallucinated, and which answers a watcher could give.
"""

from __future__ import annotations

import re

from sightsound.datasets.synth.world import COUNT_WORDS, NAMES, POSITIONS
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
    """The options a model that only watches could pick: the moving glyphs it sees among the options
    (for "how many", the number of moving glyphs); any option when nothing it sees decides."""
    facts = sample.meta["facts"]
    moving = [s["name"] for s in facts["sources"] if s["visible"] and s["moving"]]
    if sample.category == "Count":
        return [sample.options.index(COUNT_WORDS[max(len(moving), 1) - 1])]
    seen = [i for i, option in enumerate(sample.options) if option in moving]
    return seen or list(range(len(sample.options)))
