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


def test_which_questions_are_asked_again_with_every_still_source_among_the_options():
    scene = SCENE + [source("violin", True, False, False, "right")]  # seen, still, silent
    which = sample("Which", ["drum", "bell", "flute", "bird"], 0, scene)  # the violin is not among them
    count = sample("Count", world.COUNT_WORDS, 1, scene)
    no_still = sample("Which", ["drum", "bell", "flute", "bird"], 0, SCENE)
    for seed in range(20):
        [asked] = bootstrap.with_still_sources([which, count, no_still], random.Random(seed))
        assert asked.id == "s~still" and asked.category == "Which" and asked.audio == which.audio
        assert asked.options[asked.answer] == asked.answer_text == "drum"  # the answer is what sounds
        assert "violin" in asked.options and len(set(asked.options)) == 4
        assert set(asked.options) - {"violin"} <= set(which.options)  # a still source took a silent one's place
        assert oracle.watcher_choices(asked) == [asked.options.index(n) for n in asked.options if n in ("drum", "bell")]


def test_the_student_answers_what_it_hears_whatever_reasoning_it_is_handed():
    which = sample("Which", ["horn", "bell", "flute", "bird"], 0, SCENE)
    elsewhere = sample("Count", world.COUNT_WORDS, 0, [source("violin", True, True, True, "right")])
    direct, cot, given, shown = bootstrap.student_examples(which, random.Random(0), [elsewhere])
    assert direct["response"] == "horn"
    assert cot["response"] == f"<think>{bootstrap.STUDENT_THINKING}</think><answer>horn</answer>"
    assert given["messages"] == cot["messages"]  # asked to think; another clip's reasoning opens its reply
    assert given["given"] == "<think>The violin on the right is sounding."
    assert given["response"] == "</think><answer>horn</answer>"  # it ends the thinking; the answer is what it hears
    assert shown["response"] == cot["response"] and "violin" in str(shown["messages"])


def test_a_cached_bootstrap_is_reused_only_for_the_same_config_and_recipe(monkeypatch):
    cfg = bootstrap.BootstrapConfig()
    key = bootstrap.cache_key(cfg)
    assert bootstrap.cache_key(bootstrap.BootstrapConfig(progress=False)) == key  # how it is watched: the same
    assert bootstrap.cache_key(bootstrap.BootstrapConfig(seed=1)) != key
    monkeypatch.setattr(bootstrap, "RECIPE", bootstrap.RECIPE + 1)  # the examples' recipe changed
    assert bootstrap.cache_key(cfg) != key


def test_the_bootstrap_forecasts_its_minutes_from_its_size():
    from sightsound import pipeline
    from tests.conftest import ROOT

    demo = pipeline.load_plan(ROOT / "configs" / "demo.yaml").stages["bootstrap"][0][1]
    assert bootstrap._minutes(demo) == 9  # measured: 516 s on 2 cores (teacher 1,100 steps, student 900)
    small = pipeline.load_plan(ROOT / "configs" / "demo.yaml", ["bootstrap.world.clips=24",
                                                               "bootstrap.student={steps: 4}",
                                                               "bootstrap.teacher={steps: 4}"]).stages["bootstrap"][0][1]
    assert bootstrap._minutes(small) == 1


def test_continuations_go_on_from_the_opening_they_are_handed(tiny_models, tmp_path):
    """With no opening, a continuation is the model's own greedy reply; with one, it follows it."""
    from sightsound import prompts
    from sightsound.models import ModelConfig, Request, Sampling, load_backend
    from tests.conftest import make_wav

    which = sample("Which", ["horn", "bell", "flute", "bird"], 0, SCENE)
    which.audio = str(make_wav(tmp_path / "a.wav", freq=330.0, rate=16_000))
    turns = [prompts.student_turn(which, "zero_shot_cot", "text")] * 2
    path = str(tiny_models["student"])
    own = load_backend(ModelConfig(model=path, dtype="float32")).generate(
        [Request("q", turns[0])], Sampling(n=1, temperature=0.0, max_new_tokens=6))[0].texts[0]
    plain, handed = bootstrap.continuations(path, turns, ["", "<think>The drum is sounding."], follows="</think>",
                                            max_new_tokens=6)
    assert plain == own
    assert handed.startswith("<think>The drum is sounding")  # fed up to the token that joins "</think>"
    assert not handed.startswith("<think>The drum is sounding.")
