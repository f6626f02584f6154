import json

import numpy as np
import pytest

from sightsound import media
from sightsound.datasets.synth import oracle, world
from sightsound.datasets.synth.world import COUNT_WORDS, POSITIONS, SynthConfig, make_scene
from tests.conftest import generate_world


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    a = generate_world(SynthConfig(out=str(tmp_path / "a"), clips=3, seed=7))
    b = generate_world(SynthConfig(out=str(tmp_path / "b"), clips=3, seed=7))
    c = generate_world(SynthConfig(out=str(tmp_path / "c"), clips=3, seed=8))
    for name in ("train_qa.json", "val_qa.json", "facts.jsonl"):
        assert (a / name).read_text() == (b / name).read_text()
    assert (a / "facts.jsonl").read_text() != (c / "facts.jsonl").read_text()


def test_answers_follow_from_the_facts(world):
    facts = {f["video_name"]: f for f in map(json.loads, (world / "facts.jsonl").read_text().splitlines())}
    records = json.loads((world / "train_qa.json").read_text()) + json.loads((world / "val_qa.json").read_text())
    assert {r["question_type"] for r in records} >= {"Which", "Count"}
    for r in records:
        f = facts[r["video_name"]]
        sounding = {s["name"]: s for s in f["sources"] if s["sounding"]}
        answer = r["multi_choice"][r["answer"]]
        if r["question_type"] == "Which":
            assert answer in sounding
            assert sum(o in sounding for o in r["multi_choice"]) == 1
        elif r["question_type"] == "Count":
            assert answer == COUNT_WORDS[len(sounding) - 1]
        elif r["question_type"] == "Order":
            assert answer == min(sounding.values(), key=lambda s: s["events"][0]["onset"])["name"]
        elif r["question_type"] == "Louder":
            a, b = r["question_text"].split("Is the ")[1].split(" louder than the ")
            b = b.split(" in this video")[0]
            louder = sounding[a]["events"][0]["gain_db"] > sounding[b]["events"][0]["gain_db"]
            assert answer == ("yes" if louder else "no")


def test_sound_and_motion_sit_where_the_facts_say(world):
    facts = [json.loads(line) for line in (world / "facts.jsonl").read_text().splitlines()]
    checked_pulse = 0
    for f in facts:
        clip = media.decode(world / "videos" / f"{f['video_name']}.mp4", num_frames=16, frame_size=None)
        rms = lambda a, b: float(np.sqrt(np.mean(clip.audio[int(a * 16000):int(b * 16000)] ** 2)))
        events = [e for s in f["sources"] if s["sounding"] for e in s["events"]]
        quiet = [t / 10 for t in range(20) if not any(e["onset"] - 0.1 <= t / 10 <= e["onset"] + e["duration"] + 0.1
                                                       for e in events)]
        for e in events:
            mid = e["onset"] + e["duration"] / 2
            level = rms(mid - 0.1, mid + 0.1)
            assert level > 0.005, (f["video_name"], e)  # the quietest: -18 dB, a decaying bell
            for t in quiet:
                assert rms(t, t + 0.05) < level / 3
        for s in (s for s in f["sources"] if s["visible"] and s["moving"]):
            e = s["events"][0]
            frame = int((e["onset"] + e["duration"] / 2) * 8)
            still = next((i for i in range(16) if not e["onset"] - 0.2 <= i / 8 <= e["onset"] + e["duration"] + 0.2), None)
            slot = POSITIONS.index(s["position"])
            column = clip.frames[:, :, int(slot * 56 / 3):int((slot + 1) * 56 / 3)].astype(float)
            if still is not None:  # the glyph is bigger and brighter while its event lasts
                assert column[frame].max(axis=-1).mean() > column[still].max(axis=-1).mean() + 5
                checked_pulse += 1
    assert checked_pulse > 0


def test_roles_cover_the_hallucination_cases():
    import random

    roles = set()
    for seed in range(200):
        for s in make_scene(random.Random(seed), SynthConfig()):
            roles.add((s.visible, s.sounding, s.moving))
    assert (True, True, True) in roles  # seen and heard
    assert (True, False, True) in roles  # a mime: moves, makes no sound
    assert (True, False, False) in roles  # seen, still and silent
    assert (False, True, False) in roles  # heard from off-screen


def test_the_default_world_is_calibrated_to_the_papers_data():
    """A perfect watcher answers about 80% of what vision can answer, ~11% of its traces claim a sound
    the clip lacks (the trained teacher's misreadings add more), and the acoustic questions are
    chance for it. Seed 0, 2000 scenes (~5,800 visual questions); tolerances about 2 standard errors."""
    stats = oracle.calibration(SynthConfig(seed=0), scenes=2000)
    assert stats["visual_questions"] >= 500
    assert 0.77 <= stats["watcher_accuracy_visual"] <= 0.84  # "which is louder" is near chance for it
    assert 0.08 <= stats["hallucinated_traces"] <= 0.14
    assert stats["watcher_accuracy"]["Louder"] == stats["watcher_accuracy"]["Pitch"] == 0.5
    for question_type in ("Which", "Order"):
        assert stats["watcher_accuracy"][question_type] > 0.85


def test_world_rates_are_configurable_and_checked():
    more_mimes = oracle.calibration(SynthConfig(mime=0.9), scenes=500)
    assert more_mimes["hallucinated_traces"] > oracle.calibration(SynthConfig(), scenes=500)["hallucinated_traces"]
    all_heard = oracle.calibration(SynthConfig(roles={"sounding": 1.0, "silent": 0.0, "offscreen": 0.0}), scenes=300)
    assert all_heard["hallucinated_traces"] == 0 and all_heard["watcher_accuracy"]["Count"] == 1.0
    for bad in ({"roles": {"sounding": 1.0}}, {"max_sources": 9}, {"mime": 1.5}, {"question_types": ["Tempo"]},
                {"noise": -0.1}):
        with pytest.raises(ValueError):
            world.check_world(SynthConfig(**bad))


def test_noise_sets_the_hiss_under_every_clip_and_nothing_else():
    import random

    scene = make_scene(random.Random(3), SynthConfig())
    quiet, loud = (world.render_audio(scene, SynthConfig(noise=level), random.Random(5)) for level in (0.0, 0.05))
    hiss = (loud - quiet)[np.abs(quiet) < 0.5]  # away from clipping
    assert 0.045 < hiss.std() < 0.055 and abs(hiss.mean()) < 0.005
    again = world.render_audio(scene, SynthConfig(noise=0.0), random.Random(5))
    assert np.array_equal(quiet, again)  # the sounds themselves do not depend on the hiss


def test_pitch_questions_ask_only_about_tonal_sounds_heard():
    import random

    for seed in range(300):
        rng = random.Random(seed)
        sources = make_scene(rng, SynthConfig())
        for q in world.questions(sources, rng):
            if q["question_type"] == "Pitch":
                name = q["question_text"].split()[2]
                played = next(s for s in sources if s.name == name)
                assert played.sounding and name in world.TONAL
                assert q["multi_choice"][q["answer"]] == played.events[0].pitch


def test_visual_reasoning_hallucinates_exactly_on_mimes():
    sources = [
        {"name": "flute", "visible": True, "position": "left", "moving": True, "sounding": True},
        {"name": "bell", "visible": True, "position": "right", "moving": True, "sounding": False},  # a mime
        {"name": "drum", "visible": True, "position": "middle", "moving": False, "sounding": False},
        {"name": "bird", "visible": False, "position": None, "moving": False, "sounding": True},  # off-screen
    ]
    text = oracle.visual_reasoning(sources)
    assert text.startswith("The flute on the left is sounding. The drum on the middle is silent.")
    assert oracle.claimed_sounds(text) == {"flute", "bell"}
    assert oracle.hallucinated(text, {"audible": ["flute", "bird"]})
    assert not oracle.hallucinated("<think>The flute is sounding.</think>", {"audible": ["flute", "bird"]})



def test_the_same_seed_writes_the_same_clips_run_after_run(tmp_path):
    """Two runs of `sightsound synth` (each its own process, as two demo runs are) decode to the same
    frames and audio."""
    import subprocess
    import sys

    import numpy as np

    from sightsound import media

    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "sightsound", "synth", "--out", str(tmp_path / name), "--clips", "8",
                        "--seed", "1"], check=True, capture_output=True)
    for clip in sorted((tmp_path / "a" / "videos").glob("*.mp4")):
        a, b = media.decode(clip, num_frames=16), media.decode(tmp_path / "b" / "videos" / clip.name, num_frames=16)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio), clip.name
