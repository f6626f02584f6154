"""The lightweight verifier: the audio tower alone, the bilinear classifier, save/load, calibration files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sightsound import media
from sightsound.checking import verifier
from sightsound.scoring import rejection_metrics
from sightsound.store import to_json


def write_clip(path, kind: str, seed: int, seconds: float = 2.0):
    """A 16 kHz clip holding one source: a flute-like 880 Hz tone or drum-like noise bursts, at a
    random onset, length and loudness, over faint noise."""
    rng = np.random.default_rng(seed)
    rate = media.SAMPLE_RATE
    audio = rng.normal(0, 0.002, int(seconds * rate))
    start = int(rng.uniform(0, 0.3) * seconds * rate)
    length = min(int(rng.uniform(0.3, 0.6) * seconds * rate), audio.size - start)
    t = np.arange(length) / rate
    gain = 10 ** (rng.choice([0, -6, -12]) / 20) * 0.4
    if kind == "flute":
        sound = np.sin(2 * np.pi * 880 * t)
    else:
        sound = rng.normal(0, 0.5, length) * np.exp(-((t * 4) % 1.0) * 12)
    audio[start:start + length] += gain * sound
    media.write_wav(path, audio.astype(np.float32))
    return str(path)


def claim(name: str, position: str) -> str:
    return f"<think>The {name} on the {position} moves, so the {name} is sounding.</think><answer>A</answer>"


def calibration_set(folder, clips: int = 24) -> list[dict]:
    """Each clip twice: once with the trace that claims its sound (accept), once with the trace that
    claims the other sound (reject). Neither side alone tells the label: only the pair does."""
    rows = []
    for i in range(clips):
        heard = "flute" if i % 2 else "drum"
        wav = write_clip(folder / f"clip{i}.wav", heard, seed=i)
        position = ["left", "middle", "right"][i % 3]
        for name in ("flute", "drum"):
            rows.append({"audio": wav, "text": claim(name, position), "label": name == heard})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rejection_metrics_count_rejections_of_what_should_be_rejected():
    should = [True, True, True, False, False, False, False]
    did = [True, True, False, True, False, False, False]
    m = rejection_metrics(should, did)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 3)
    assert (m["precision"], m["recall"], m["f1"]) == (0.6667, 0.6667, 0.6667)
    nothing_rejected = rejection_metrics([True, False], [False, False])
    assert nothing_rejected["precision"] is None and nothing_rejected["recall"] == 0.0
    assert rejection_metrics([False], [True])["recall"] is None


@pytest.mark.parametrize("role, dim, pooling", [("student", 64, "max"), ("student", 128, "mean+max"),
                                                ("omni", 128, "max"), ("omni", 128, "mean")])
def test_audio_tower_loads_alone_and_pools_over_the_clip_only(tiny_models, tmp_path, role, dim, pooling):
    from safetensors import safe_open

    encoder = verifier.AudioEncoder(tiny_models[role], device="cpu", pooling=pooling)
    with safe_open(str(tiny_models[role] / "model.safetensors"), "pt") as f:
        tower_keys = {k.removeprefix("audio_tower.") for k in f.keys() if k.startswith("audio_tower.")}
        assert len(tower_keys) < len(list(f.keys()))  # the checkpoint holds more than the tower...
    assert type(encoder.tower).__name__.endswith("AudioEncoder")  # ...and only the tower is built
    assert set(encoder.tower.state_dict()) == tower_keys and encoder.dim == dim

    short = write_clip(tmp_path / "short.wav", "flute", seed=1, seconds=0.8)
    long = write_clip(tmp_path / "long.wav", "drum", seed=2, seconds=2.0)
    alone = encoder([short])
    batched = encoder([short, long, short])  # padding to the batch must not change a clip's vector
    assert alone.shape == (1, dim) and batched.shape == (3, dim)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    np.testing.assert_array_equal(batched[0], batched[2])
    assert np.abs(batched[1] - batched[0]).max() > 1e-3


def test_log_mel_features_pool_the_clips_input_frames_and_load_no_tower(tiny_models, tmp_path):
    encoder = verifier.AudioEncoder(tiny_models["student"], device="cpu", pooling="mean+max", features="log-mel")
    mels = encoder.features.feature_size
    assert encoder.tower is None and encoder.dim == 2 * mels
    short = write_clip(tmp_path / "short.wav", "flute", seed=1, seconds=0.8)
    long = write_clip(tmp_path / "long.wav", "drum", seed=2, seconds=2.0)
    alone, batched = encoder([short]), encoder([short, long])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)  # padding frames are not pooled
    frames = encoder.features([media.read_wav(short)], sampling_rate=media.SAMPLE_RATE,
                              return_tensors="np")["input_features"][0]
    valid = frames[:, :math.ceil(0.8 * media.SAMPLE_RATE / encoder.features.hop_length)]
    np.testing.assert_allclose(alone[0, mels:], valid.max(1), atol=1e-5)  # the max half: each mel band's peak
    with pytest.raises(ValueError, match="features 'spectrum'"):
        verifier.AudioEncoder(tiny_models["student"], features="spectrum")


def test_verifier_learns_which_sound_a_trace_may_claim_and_saves_and_loads(tiny_models, tmp_path, capsys, monkeypatch):
    rows = calibration_set(tmp_path)
    path = write_jsonl(tmp_path / "calibration.jsonl", rows)
    out = tmp_path / "verifier"
    info = verifier.train(verifier.TrainConfig(calibration=str(path), out=str(out),
                                               audio_encoder=str(tiny_models["student"]), seed=0))
    held = info["held_out_rejection"]
    assert held["tp"] + held["fn"] == held["fp"] + held["tn"] == info["calibration"]["held_out"] // 2
    assert held["f1"] >= 0.9, held  # an interaction of audio and text: a linear probe of either side is at chance
    assert "rejection precision" in capsys.readouterr().out

    saved = json.loads((out / "verifier.json").read_text())
    checkpoint = saved["audio_encoder"]["checkpoint"]  # relative to the verifier's folder: they move together
    assert not Path(checkpoint).is_absolute() and (out / checkpoint).resolve() == Path(tiny_models["student"]).resolve()
    assert saved["audio_encoder"]["model_type"] == "qwen2_audio" and saved["text_encoder"]["dim"] == 384
    assert saved["calibration"]["traces"] == len(rows) and (out / "classifier.safetensors").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # loaded from another working directory
    loaded = verifier.Verifier.load(out, device="cpu")
    assert loaded.audio_encoder.feature_kind == "tower"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    unseen = [write_clip(fresh / f"{kind}.wav", kind, seed=100 + i) for i, kind in enumerate(["flute", "drum"])]
    p = loaded.predict([unseen[0], unseen[0], unseen[1], unseen[1]],
                       [claim("flute", "left"), claim("drum", "left"), claim("flute", "left"), claim("drum", "left")])
    assert p.shape == (4,) and p[0] > 0.5 > p[1] and p[3] > 0.5 > p[2]
    again = verifier.Verifier.load(out, device="cpu").predict([unseen[0]], [claim("flute", "left")])
    assert math.isclose(float(again[0]), float(p[0]), rel_tol=1e-6)

    # Each sentence is a claim: one false claim among true ones rejects the trace.
    both = "<think>The flute on the left moves, so the flute is sounding. The drum on the right moves, " \
           "so the drum is sounding.</think><answer>A</answer>"
    assert (loaded.predict([unseen[0], unseen[1]], [both, both]) < 0.5).all()


def test_claims_are_sentences_of_the_reasoning_and_a_trace_passes_when_all_do():
    import torch

    texts = ["<think>The flute moves. The drum is still!</think><answer>A</answer>", "<answer>B</answer>",
             "no tags at all"]
    owner, parts = verifier.claims(texts, "sentence")
    assert owner.tolist() == [0, 0, 1, 2] and parts == ["The flute moves.", "The drum is still!", "", "no tags at all"]
    owner, parts = verifier.claims(texts, "trace")
    assert owner.tolist() == [0, 1, 2] and parts[0] == "The flute moves. The drum is still!"
    with pytest.raises(ValueError, match="unit 'word'"):
        verifier.claims(texts, "word")
    with pytest.raises(ValueError, match="pooling 'sum'"):
        verifier.AudioEncoder("unused", pooling="sum")

    pair_logits = torch.tensor([2.0, -1.0, 0.5])
    got = torch.sigmoid(verifier.trace_logits(pair_logits, torch.tensor([0, 0, 1]), 2))
    expected = [torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(-1.0)), torch.sigmoid(torch.tensor(0.5))]
    torch.testing.assert_close(got, torch.stack(expected))


def test_split_keeps_each_clip_on_one_side_and_both_labels_on_each():
    paths = [f"clip{i // 2}.wav" for i in range(40)]
    labels = np.array([i % 2 == 0 for i in range(40)])
    train, test = verifier.split_by_clip(paths, labels, holdout=0.25, seed=0)
    assert {paths[i] for i in train}.isdisjoint({paths[i] for i in test})
    assert len(train) + len(test) == 40 and 6 <= len(test) <= 14
    assert set(labels[test].tolist()) == set(labels[train].tolist()) == {True, False}
    with pytest.raises(ValueError, match="one label"):
        verifier.split_by_clip(paths, np.ones(40, dtype=bool), holdout=0.25, seed=0)
    with pytest.raises(ValueError, match="clips"):
        verifier.split_by_clip(["a.wav", "b.wav"], np.array([True, False]), holdout=0.25, seed=0)


def test_calibration_files_are_checked(tmp_path):
    wav = write_clip(tmp_path / "a.wav", "flute", seed=0)
    good = {"audio": wav, "text": "t", "label": True}
    assert verifier.read_calibration(write_jsonl(tmp_path / "ok.jsonl", [good])) == [good]
    for bad, message in [({"audio": wav, "text": "t"}, "line 2 has no label"),
                         ({**good, "label": "yes"}, "label must be true or false"),
                         ({**good, "audio": str(tmp_path / "gone.wav")}, "gone.wav not found")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            verifier.read_calibration(write_jsonl(tmp_path / "bad.jsonl", [good, bad]))


def test_calibration_from_a_checked_run_leaves_unparseable_replies_out(tmp_path):
    from sightsound.records import UNPARSEABLE, Sample, Trace, Verdict

    wav = write_clip(tmp_path / "a.wav", "flute", seed=0)
    sample = Sample("s1", "synth", "train", "Which?", ["flute", "drum"], 0, "flute", "Which", audio=wav)
    traces = [Trace("s1", i, claim(n, "left"), 0) for i, n in enumerate(["flute", "drum", "bell"])]
    verdicts = [Verdict("s1", 0, True, None, "Yes.", "api"), Verdict("s1", 1, False, None, "No.", "api"),
                Verdict("s1", 2, False, None, UNPARSEABLE + "Maybe", "api")]
    for name, rows in (("samples", [sample]), ("traces", traces), ("verdicts", verdicts)):
        write_jsonl(tmp_path / f"{name}.jsonl", [to_json(r) for r in rows])
    assert verifier.calibration_from_run(tmp_path, tmp_path / "calibration.jsonl") == 2
    rows = verifier.read_calibration(tmp_path / "calibration.jsonl")
    assert [(r["audio"], r["text"], r["label"]) for r in rows] == [(wav, traces[0].text, True), (wav, traces[1].text, False)]
    with pytest.raises(FileNotFoundError, match="verdicts.jsonl"):
        verifier.calibration_from_run(tmp_path / "elsewhere", tmp_path / "c.jsonl")


def test_train_needs_one_source_of_labels(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        verifier.train(verifier.TrainConfig(out=str(tmp_path / "v")))
