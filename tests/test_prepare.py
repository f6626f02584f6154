import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sightsound import media
from sightsound.cli import main as cli
from sightsound.records import Sample
from sightsound.store import read_jsonl, sha256_file
from sightsound.manifest import read_manifest
from sightsound.stages import prepare
from tests.conftest import (SHARED_DATA, dominant_frequency, make_corrupt, make_mp4, make_wav,
                            write_json)
from tests.test_datasets import AVQA_RECORD, MMAU_RECORD, MUSIC_RECORDS

MMAU_SHA256 = "9f18fda99f8dbc2bc5ecd6323fb5063309f54969810b5c6f1caeb3b8d904cf1c"


def run(tmp_path, **kw) -> dict:
    cfg = prepare.PrepareConfig(out=str(tmp_path / "run"), progress=False, **kw)
    return prepare.main(cfg)


def samples(tmp_path):
    return {s.id: s for s in read_jsonl(tmp_path / "run" / "samples.jsonl", Sample)}


def skipped(tmp_path):
    return {s["id"]: s for s in read_jsonl(tmp_path / "run" / "skipped.jsonl")}


def test_avqa_media_found_by_padded_or_unpadded_stem_and_bad_media_skipped(tmp_path):
    root = tmp_path / "avqa"
    names = ["clipA_000030", "clipB_000010", "clipC_000000", "clipD_000020", "clipE_000000"]
    write_json(root / "val_qa.json", [{**AVQA_RECORD, "id": i, "video_name": n} for i, n in enumerate(names)]
               + [{**AVQA_RECORD, "id": 0, "video_name": names[0]}] * 2)  # a duplicate id, twice
    make_mp4(root / "clips" / "deep" / "clipA_000030.mp4", freq=440)  # video, found anywhere under media
    make_wav(root / "clips" / "clipB_10.wav", freq=1000)  # unpadded wav only
    make_corrupt(root / "clips" / "clipD_000020.mp4")
    (root / "clips" / "clipE_000000.mkv").write_bytes(b"")
    manifest = run(tmp_path, dataset="avqa", root=str(root), media=str(root / "clips"), split="val",
                   num_frames=3, frame_size=16)

    got = samples(tmp_path)
    assert set(got) == {"0", "1"}
    a = got["0"]
    assert a.video.endswith("clipA_000030.mp4") and Path(a.audio).parent == tmp_path / "run" / "media"
    assert Path(a.audio).name.startswith("clipA_000030-") and a.audio.endswith(".wav")
    assert np.load(a.meta["frames"]).shape == (3, 16, 16, 3)
    assert abs(dominant_frequency(media.read_wav(a.audio)) - 440) < 5
    b = got["1"]
    assert b.video is None and "frames" not in b.meta
    assert abs(dominant_frequency(media.read_wav(b.audio)) - 1000) < 5

    bad = skipped(tmp_path)
    assert bad["2"]["kind"] == "media-missing" and "'clipC_000000' or 'clipC_0'" in bad["2"]["reason"]
    assert bad["2"]["reason"].startswith("val_qa.json (id 2): ")  # the metadata file and record too
    assert bad["3"]["kind"] == "media-corrupt" and "clipD_000020.mp4: cannot decode" in bad["3"]["reason"]
    assert bad["4"]["kind"] == "media-corrupt" and "file is empty" in bad["4"]["reason"]
    assert [bad[f"0 (repeat {k})"]["kind"] for k in (1, 2)] == ["duplicate"] * 2  # one line for each repeat
    assert "val_qa.json: duplicate id '0'" in bad["0 (repeat 2)"]["reason"]
    assert manifest["counts"] == {"samples": 2, "skipped": 5,
                                  "skipped_by_kind": {"media-missing": 1, "media-corrupt": 2, "duplicate": 2},
                                  "audio_cut": 0, "left_out_by_category": {}}
    assert (tmp_path / "run" / "config" / "prepare.yaml").exists()


def test_mmau_wavs_become_16k_mono(tmp_path):
    root = tmp_path / "mmau"
    write_json(root / "mmau-test-mini.json", [MMAU_RECORD])
    make_wav(root / "test-mini-audios" / "3fe64f3d.wav", seconds=1.0, freq=700, rate=44_100)
    manifest = run(tmp_path, dataset="mmau", root=str(root))
    (sample,) = samples(tmp_path).values()
    audio = media.read_wav(sample.audio)
    assert audio.ndim == 1 and abs(audio.size - 16_000) < 40
    assert sample.video is None and manifest["split"] == "test-mini"
    assert list(manifest["inputs"].values()) == [sha256_file(root / "mmau-test-mini.json")]


def test_music_avqa_decodes_each_video_once(tmp_path, monkeypatch):
    root = tmp_path / "music"
    write_json(root / "avqa-test.json", MUSIC_RECORDS[:3])
    make_mp4(root / "video" / "00005868.mp4")
    make_mp4(root / "video" / "00000093.mp4")
    calls = []
    real = media.decode
    monkeypatch.setattr(media, "decode", lambda path, **kw: calls.append(path) or real(path, **kw))
    run(tmp_path, dataset="music-avqa", root=str(root), num_frames=2)
    assert len(samples(tmp_path)) == 3
    assert sorted(p.name for p in calls) == ["00000093.mp4", "00005868.mp4"]


def test_rerun_is_skipped_interrupted_run_resumes_changed_config_restarts(world, tmp_path, capsys):
    first = run(tmp_path, dataset="synth", root=str(world), num_frames=2, frame_size=32)
    full = (tmp_path / "run" / "samples.jsonl").read_text()
    assert first["counts"]["samples"] == len(full.splitlines()) > 4

    assert run(tmp_path, dataset="synth", root=str(world), num_frames=2, frame_size=32)["finished_at"] \
        == first["finished_at"]
    assert "already done" in capsys.readouterr().out

    # an interrupted run: no manifest, half the samples and a torn line on disk
    (tmp_path / "run" / "manifests" / "prepare.json").unlink()
    lines = full.splitlines(keepends=True)
    (tmp_path / "run" / "samples.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    shutil.rmtree(tmp_path / "run" / "media")
    run(tmp_path, dataset="synth", root=str(world), num_frames=2, frame_size=32)
    assert (tmp_path / "run" / "samples.jsonl").read_text() == full

    run(tmp_path, dataset="synth", root=str(world), num_frames=3, frame_size=32)  # changed: redone
    again = list(samples(tmp_path).values())
    assert len(again) == first["counts"]["samples"]
    assert np.load(again[0].meta["frames"]).shape[0] == 3  # the frame cache is keyed by the frame spec


def test_an_interrupted_run_is_not_resumed_onto_changed_inputs(world, tmp_path):
    """Killed part-way, its metadata then changed (same ids, other options): the rerun starts again,
    so no record from before points at options that are no longer there."""
    root = tmp_path / "world"
    shutil.copytree(world, root)
    run(tmp_path, dataset="synth", root=str(root), num_frames=0)
    (tmp_path / "run" / "manifests" / "prepare.json").unlink()  # killed before the manifest
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "run" / "samples.jsonl").write_text("".join(lines[:3]))
    records = json.loads((root / "train_qa.json").read_text())
    for record in records:  # the same questions, options in reverse order
        answer = record["multi_choice"][record["answer"]]
        record["multi_choice"] = record["multi_choice"][::-1]
        record["answer"] = record["multi_choice"].index(answer)
    (root / "train_qa.json").write_text(json.dumps(records))
    run(tmp_path, dataset="synth", root=str(root), num_frames=0)
    by_id = {str(r["id"]): r for r in records}
    for sample in samples(tmp_path).values():
        assert sample.options == by_id[sample.id]["multi_choice"] and sample.answer == by_id[sample.id]["answer"]


def _jsonl(path, media_paths):
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": "What plays?", "options": ["a", "b"], "answer": 0,
                                        "audio": m}) + "\n" for i, m in enumerate(media_paths)))
    return path


def test_same_file_name_in_two_folders_is_two_clips(tmp_path):
    data = tmp_path / "data"
    make_wav(data / "a" / "clip.wav", freq=440.0)
    make_wav(data / "b" / "clip.wav", freq=880.0)
    run(tmp_path, dataset="jsonl", root=str(_jsonl(data / "test.jsonl", ["a/clip.wav", "b/clip.wav"])), num_frames=0)
    heard = {s.id: dominant_frequency(media.read_wav(s.audio)) for s in samples(tmp_path).values()}
    assert abs(heard["q0"] - 440) < 5 and abs(heard["q1"] - 880) < 5


def test_media_outside_the_dataset_is_refused_unless_allowed(tmp_path):
    data, outside = tmp_path / "data", make_wav(tmp_path / "secret" / "private.wav")
    make_wav(data / "inside.wav")
    metadata = _jsonl(data / "test.jsonl", ["inside.wav", "../secret/private.wav", str(outside)])
    run(tmp_path, dataset="jsonl", root=str(metadata), num_frames=0)
    assert list(samples(tmp_path)) == ["q0"]
    refused = skipped(tmp_path)
    assert {k: v["kind"] for k, v in refused.items()} == {"q1": "media-outside", "q2": "media-outside"}
    assert "private.wav" in refused["q1"]["reason"] and "allow_outside_media" in refused["q1"]["reason"]
    assert not [p for p in (tmp_path / "run" / "media").iterdir() if p.name.startswith("private")]
    shutil.rmtree(tmp_path / "run")
    run(tmp_path, dataset="jsonl", root=str(metadata), num_frames=0, allow_outside_media=True)
    assert list(samples(tmp_path)) == ["q0", "q1", "q2"]


def test_long_audio_is_cut_at_max_audio_seconds_and_counted(tmp_path, capsys):
    data = tmp_path / "data"
    make_wav(data / "long.wav", seconds=12.0, freq=440.0)
    make_wav(data / "short.wav", seconds=2.0)
    manifest = run(tmp_path, dataset="jsonl", root=str(_jsonl(data / "test.jsonl", ["long.wav", "short.wav"])),
                   num_frames=0, max_audio_seconds=5.0)
    got = samples(tmp_path)
    assert media.wav_seconds(got["q0"].audio) == 5.0 and got["q0"].meta["audio_cut_at_seconds"] == 5.0
    assert abs(media.wav_seconds(got["q1"].audio) - 2.0) < 0.01 and "audio_cut_at_seconds" not in got["q1"].meta
    assert manifest["counts"]["audio_cut"] == 1 and "WARNING: the audio of 1 samples" in capsys.readouterr().out
    clip = media.decode(data / "long.wav", num_frames=0, max_seconds=3.0)
    assert clip.cut and clip.audio.size == 3 * media.SAMPLE_RATE
    assert not media.decode(data / "short.wav", num_frames=0, max_seconds=3.0).cut


def test_limit_keeps_first_usable_samples(world, tmp_path):
    manifest = run(tmp_path, dataset="synth", root=str(world), num_frames=0, limit=3)
    assert manifest["counts"]["samples"] == 3 and list(samples(tmp_path)) == ["0", "1", "2"]


def test_cli_prepare_and_config_errors(world, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["prepare", "--dataset", "synth", "--root", str(world), "--out", str(out), "num_frames=0",
                "progress=false"]) == 0
    assert (out / "samples.jsonl").exists() and read_manifest(out, "prepare")["dataset"] == "synth"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("prepare:\n  dataset: synth\n  frames: 4\n")
    assert cli(["prepare", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "unknown key 'frames'" in err
    assert cli(["prepare", "--dataset", "avqa", "--root", str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert "val_qa.json: metadata file not found" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "mmau-test-mini.json").exists(), reason="real metadata not present")
def test_real_mmau_without_media_skips_everything_and_records_the_file_hash(tmp_path):
    manifest = run(tmp_path, dataset="mmau", root=str(SHARED_DATA), media=str(tmp_path))
    assert list(manifest["inputs"].values()) == [MMAU_SHA256]
    assert manifest["counts"] == {"samples": 0, "skipped": 1000, "skipped_by_kind": {"media-missing": 1000},
                                  "audio_cut": 0, "left_out_by_category": {}}
    first = json.loads((tmp_path / "run" / "skipped.jsonl").read_text().splitlines()[0])
    assert first["id"] == "3fe64f3d-282c-4bc8-a753-68f8f6c35652"


def test_categories_keep_only_the_questions_asked_for(world, tmp_path):
    """The demo's acoustic benchmark: only the loudness and pitch questions of the held-out clips;
    the others are counted, not skipped."""
    manifest = prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), split="train", out=str(tmp_path),
                                                  categories=["Louder", "Pitch"], num_frames=0, progress=False))
    kept = list(read_jsonl(tmp_path / "samples.jsonl"))
    everything = json.loads((world / "train_qa.json").read_text())
    assert kept and {s["category"] for s in kept} <= {"Louder", "Pitch"}
    assert len(kept) == sum(q["question_type"] in ("Louder", "Pitch") for q in everything)
    left_out = manifest["counts"]["left_out_by_category"]
    assert sum(left_out.values()) == len(everything) - len(kept) and "Which" in left_out
    assert manifest["counts"]["skipped"] == 0


def test_a_lost_or_emptied_cached_clip_is_decoded_again(world, tmp_path, capsys):
    run(tmp_path, dataset="synth", root=str(world), num_frames=2, frame_size=32)
    before = samples(tmp_path)
    first, second = list(before.values())[:2]
    Path(first.audio).unlink()
    Path(second.meta["frames"]).write_bytes(b"")
    capsys.readouterr()
    run(tmp_path, dataset="synth", root=str(world), num_frames=2, frame_size=32)
    assert "samples lost their cached media since it finished" in capsys.readouterr().out
    after = samples(tmp_path)
    assert set(after) == set(before) and len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == len(before)
    assert media.read_wav(first.audio).size and np.load(second.meta["frames"]).shape[0] == 2


def test_a_clip_written_anew_at_the_same_path_is_decoded_anew(world, tmp_path):
    """A world regenerated in place (another `mime` share: the same clip names, other videos) must
    not be read from the media cache of the old one: the teacher would see the old frames."""
    import os
    import shutil

    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    run(tmp_path, dataset="synth", root=str(copy), num_frames=2, frame_size=32)
    before = samples(tmp_path)
    first = next(iter(before.values()))
    video = Path(first.video)
    other = next(v for v in sorted(video.parent.glob("*.mp4")) if v.name != video.name)
    shutil.copyfile(other, video)  # the clip written anew: the other clip's pictures and sound
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    with open(copy / "train_qa.json", "a") as f:  # and its metadata: prepare runs again, media cache kept
        f.write("\n")
    run(tmp_path, dataset="synth", root=str(copy), num_frames=2, frame_size=32)
    after = samples(tmp_path)[first.id]
    assert after.audio != first.audio and after.meta["frames"] != first.meta["frames"]
    decoded = media.decode(other, num_frames=2, frame_size=32)
    assert np.array_equal(np.load(after.meta["frames"]), decoded.frames)
    assert not np.array_equal(np.load(after.meta["frames"]), np.load(first.meta["frames"]))


def test_a_link_in_the_media_tree_to_a_file_outside_is_refused_found_by_name_too(tmp_path):
    data, outside = tmp_path / "data", make_wav(tmp_path / "secret" / "private.wav")
    make_wav(data / "inside.wav")
    (data / "linked.wav").symlink_to(outside)
    index = prepare.index_media(data)  # how AVQA and MUSIC-AVQA find a clip: by its name
    allowed = [data.resolve()]
    assert prepare.find_media(["inside"], index, allowed) == (None, data / "inside.wav")
    for stems in (["linked"], [str(data / "linked.wav")]):
        with pytest.raises(media.MediaError, match=f"outside the dataset's folders .*a link to {outside.resolve()}"):
            prepare.find_media(stems, index, allowed)
    assert prepare.find_media(["linked"], index, None) == (None, data / "linked.wav")  # allow_outside_media


def test_a_limited_run_counts_its_progress_in_samples_to_the_limit(world, tmp_path, monkeypatch):
    bars = []
    real = prepare.tqdm

    def recording(*args, **kw):
        bar = real(*args, **{**kw, "disable": False})
        bars.append(bar)
        return bar

    monkeypatch.setattr(prepare, "tqdm", recording)
    prepare.main(prepare.PrepareConfig(out=str(tmp_path / "run"), dataset="synth", root=str(world), num_frames=0,
                                       limit=5, progress=True))
    shown = bars[-1]
    assert (shown.n, shown.total, shown.unit) == (5, 5, "sample")  # 5/5, not 5 of every record in the file
