import numpy as np
import pytest

from sightsound import media
from sightsound.datasets.synth import world
from tests.conftest import (counting_frames, dominant_frequency, frame_index, make_corrupt, make_mp4,
                            make_wav, tone)


def reference_frames(path, num_frames):
    """The slow, obvious way: decode every frame, pick the first shown at or after each target."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base)
        duration = float(stream.duration * stream.time_base)
        frames = [(f.time - start, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    picked = []
    for i in range(num_frames):
        target = (i + 0.5) * duration / num_frames
        later = [img for t, img in frames if t >= target - 1e-6]
        picked.append(later[0] if later else frames[-1][1])
    return np.stack(picked)


def test_frames_are_evenly_spaced_and_audio_is_16k_mono(tmp_path):
    path = make_mp4(tmp_path / "clip.mp4", seconds=2.0, fps=8, freq=440, rate=22_050)
    clip = media.decode(path, num_frames=4)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.frames.dtype == np.uint8
    # 16 frames over 2 s; centres of 4 segments at 0.25, 0.75, 1.25, 1.75 s → frames 2, 6, 10, 14
    assert [frame_index(f) for f in clip.frames] == [2, 6, 10, 14]
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(clip.audio.size / media.SAMPLE_RATE - 2.0) < 0.1
    assert abs(dominant_frequency(clip.audio) - 440) < 5
    assert clip.duration == pytest.approx(2.0, abs=0.05)


def test_single_pass_matches_decoding_every_frame_on_b_frame_video(tmp_path):
    # 10 s at 25 fps with B-frames: frames far from a target are skipped (not decoded) in one pass
    import av

    path = tmp_path / "long.mp4"
    world.write_mp4(path, counting_frames(60, 32).repeat(4, axis=0)[:250], tone(300, 10, 16_000, 2), 25, 16_000)
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts), "the fixture should hold B-frames (decode order differs from display order)"
    for n in (1, 5, 8, 16):
        ours = media.decode(path, num_frames=n).frames
        assert np.array_equal(ours, reference_frames(path, n)), n


def test_frame_size_bounds_the_longer_side(tmp_path):
    path = tmp_path / "wide.mp4"
    frames = np.zeros((8, 40, 80, 3), dtype=np.uint8)
    world.write_mp4(path, frames, tone(440, 1.0, 16_000, 2), 8, 16_000)
    assert media.decode(path, num_frames=2, frame_size=40).frames.shape == (2, 20, 40, 3)
    assert media.decode(path, num_frames=2, frame_size=None).frames.shape == (2, 40, 80, 3)


def test_audio_files_resample_to_16k_mono(tmp_path):
    for rate in (44_100, 8_000):
        path = make_wav(tmp_path / f"a{rate}.wav", seconds=1.0, freq=1000, rate=rate)
        clip = media.decode(path, num_frames=0)
        assert clip.frames is None
        assert abs(clip.audio.size - 16_000) <= 32
        assert abs(dominant_frequency(clip.audio) - 1000) < 5


def test_flac_and_mp3_decode(tmp_path):
    import av
    import soundfile as sf

    sf.write(str(tmp_path / "a.flac"), tone(500, 1.0, 48_000, 1)[0], 48_000)
    assert abs(dominant_frequency(media.decode(tmp_path / "a.flac", num_frames=0).audio) - 500) < 5
    with av.open(str(tmp_path / "a.mp3"), "w") as c:
        stream = c.add_stream("libmp3lame", rate=44_100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(tone(600, 1.0, 44_100, 2), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 44_100, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    assert abs(dominant_frequency(media.decode(tmp_path / "a.mp3", num_frames=0).audio) - 600) < 5


def test_silent_video_has_no_audio_and_audio_file_has_no_frames(tmp_path):
    import av

    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for img in counting_frames(8):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    clip = media.decode(path, num_frames=2)
    assert clip.audio is None and clip.frames.shape[0] == 2
    with pytest.raises(media.MediaError, match="no video stream"):
        media.decode(make_wav(tmp_path / "a.wav"), num_frames=2)


def test_bad_files_raise_media_errors_naming_the_file(tmp_path):
    with pytest.raises(media.MediaError, match="missing.mp4: file not found") as err:
        media.decode(tmp_path / "missing.mp4")
    assert err.value.kind == "media-missing"
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty.mp4: file is empty") as err:
        media.decode(tmp_path / "empty.mp4")
    assert err.value.kind == "media-corrupt"
    with pytest.raises(media.MediaError, match="bad.mp4: cannot decode"):
        media.decode(make_corrupt(tmp_path / "bad.mp4"))


def test_audio_that_is_not_numbers_is_an_error(tmp_path):
    import soundfile as sf

    sf.write(str(tmp_path / "nan.wav"), np.full(16_000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    with pytest.raises(media.MediaError, match="nan.wav: audio holds samples that are not numbers") as err:
        media.decode(tmp_path / "nan.wav", num_frames=0)
    assert err.value.kind == "media-corrupt"


def test_truncated_video_is_an_error_or_a_short_clip_never_a_crash(tmp_path):
    path = make_mp4(tmp_path / "clip.mp4")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        clip = media.decode(cut, num_frames=4)
    except media.MediaError as exc:
        assert "cut.mp4" in str(exc)
    else:
        assert clip.frames.shape[0] == 4


def test_wav_and_frame_cache_round_trip(tmp_path):
    audio = np.random.default_rng(0).uniform(-1, 1, 16_000).astype(np.float32)
    media.write_wav(tmp_path / "x.wav", audio)
    assert np.array_equal(media.read_wav(tmp_path / "x.wav"), audio)
    frames = counting_frames(3)
    media.save_frames(tmp_path / "x.frames.npy", frames)
    assert np.array_equal(media.load_frames(tmp_path / "x.frames.npy"), frames)
    assert not list(tmp_path.glob("*.tmp"))
