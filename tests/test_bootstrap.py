"""What the demo's roles learn from (the whole bootstrap runs in test_pipeline's reduced demo)."""

from __future__ import annotations

import random

from sightsound import bootstrap
from sightsound.datasets.synth import oracle, world
from sightsound.records import Sample


def source(name, visible, moving, sounding, position=None):
    return {"name": name, "visible": visible, "position": position, "moving": moving, "sounding": sounding}


def sample(category, options, answer, sources):
    facts = {"sources": sources, "audible": sorted(s["name"] for s in sources if s["sounding"])}
    return Sample("s", "synth", "train", "?", options, answer, options[answer], category, audio="a.wav",
                  meta={"facts": facts})


SCENE = [source("drum", True, True, True, "left"),     # seen and heard
         source("bell", True, True, False, "middle"),  # a mime: pulses, silent
         source("horn", False, False, True)]           # heard, off-screen


def test_a_watcher_counts_what_moves_and_cannot_tell_a_mime_from_a_player():
    count = sample("Count", ["one", "two", "three", "four"], 1, SCENE)  # two sounds: drum and horn
    assert oracle.watcher_choices(count) == [1]  # two moving glyphs: right, for the wrong reason
    which = sample("Which", ["horn", "bell", "drum", "flute"], 0, SCENE)
    assert oracle.watcher_choices(which) == [1, 2]  # bell (mime) or drum; never the off-screen horn
    nothing_seen = sample("Which", ["horn", "flute"], 0, SCENE)
    assert oracle.watcher_choices(nothing_seen) == [0, 1]


def test_checker_examples_are_labelled_by_the_worlds_truth():
    for seed in range(40):
        scene = [vars(s) | {"events": []} for s in world.make_scene(random.Random(seed), world.SynthConfig())]
        clip = sample("Count", world.COUNT_WORDS, 0, scene)
        examples = bootstrap.checker_examples(clip)
        visible = sum(s["visible"] for s in scene)
        assert len(examples) == 1 + visible and len({e["text"] for e in examples}) == len(examples)
        assert examples[0]["text"] == oracle.visual_reasoning(scene)  # the watcher's own, then one flip each
        for example in examples:
            claims = oracle.claimed_sounds(example["text"])
            assert example["label"] == (not claims - set(clip.meta["facts"]["audible"]))
            assert example["audio"] == clip.audio


def test_calibration_takes_each_clip_once():
    first, second, other = (sample("Count", world.COUNT_WORDS, 0, SCENE) for _ in range(3))
    other.audio = "other.wav"
    assert bootstrap.one_per_clip([first, second, other]) == [first, other]


def test_which_questions_are_asked_again_of_every_other_heard_source():
    scene = SCENE + [source("violin", True, True, True, "right")]  # heard: drum, horn, violin
    which = sample("Which", ["horn", "bell", "flute", "bird"], 0, scene)
    count = sample("Count", world.COUNT_WORDS, 2, scene)
    out = bootstrap.with_other_targets([which, count], random.Random(0))
    assert out[:2] == [which, count]  # the originals first, unchanged
    extra = out[2:]
    assert sorted(s.id for s in extra) == ["s~drum", "s~violin"]  # every other heard source, once
    for asked in extra:
        target = asked.id.split("~")[1]
        assert asked.options[asked.answer] == asked.answer_text == target
        others = set(asked.options) - {target}
        assert len(asked.options) == 4 and not others & {"drum", "horn", "violin"}  # the rest are silent
        assert asked.audio == which.audio and asked.category == "Which"


def test_the_bootstrap_forecasts_its_minutes_from_its_size():
    from sightsound import pipeline
    from tests.conftest import ROOT

    demo = pipeline.load_plan(ROOT / "configs" / "demo.yaml").stages["bootstrap"][0][1]
    assert bootstrap._minutes(demo) == 7  # measured: 444 s on 2 cores
    small = pipeline.load_plan(ROOT / "configs" / "demo.yaml", ["bootstrap.world.clips=24",
                                                               "bootstrap.student={steps: 4}",
                                                               "bootstrap.teacher={steps: 4}"]).stages["bootstrap"][0][1]
    assert bootstrap._minutes(small) == 1
