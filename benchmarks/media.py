"""Frames + 16 kHz audio per clip: our single pass vs. the usual two separate passes.

    python benchmarks/media.py [--clips 6] [--seconds 10] [--size 640x360]

Clips are made here: H.264 (x264 defaults: B-frames, one GOP per clip, as VGGSound-style cuts
usually are) + AAC stereo 44.1 kHz, with moving content. Each clip yields 8 frames (longer side
448) and its 16 kHz mono audio.

The baseline is what loaders commonly do (and what two ffmpeg calls do): open the file once for
the video — decode every frame to RGB (`torchvision.io.read_video`-style), keep 8 evenly spaced
and resize them — and once more for the audio, decoded and resampled. Ours is
`sightsound.media.decode`: one demux of both streams, only kept frames converted (and scaled in
swscale), unreferenced frames far from the next kept one left undecoded.
Prints the per-clip times and the ratio baseline / ours (target ≥ 1.5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from sightsound import media
from sightsound.datasets.synth.world import write_mp4

NUM_FRAMES, FRAME_SIZE = 8, 448


def make_clip(path: Path, seconds: float, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fps, rate = 25, 44_100
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(int(seconds * fps)):
        img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], axis=-1)
        img = img + rng.integers(0, 24, img.shape)  # texture, so decoding costs what real video costs
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    t = np.arange(int(seconds * rate)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    write_mp4(path, np.stack(frames), audio, fps, rate)


def two_pass(path: Path):
    """The usual approach: every frame to RGB then pick and resize; then a second open for audio."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    idx = np.linspace(0, len(frames) - 1, NUM_FRAMES).round().astype(int)
    h, w = frames[0].shape[:2]
    scale = FRAME_SIZE / max(h, w)
    picked = [np.asarray(Image.fromarray(frames[i]).resize((round(w * scale), round(h * scale)))) for i in idx]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        chunks = [f.to_ndarray()[0] for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.stack(picked), np.concatenate(chunks)


def one_pass(path: Path):
    clip = media.decode(path, num_frames=NUM_FRAMES, frame_size=FRAME_SIZE)
    return clip.frames, clip.audio


def timed(fn, paths, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return best / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"clip{i}.mp4" for i in range(args.clips)]
        for i, p in enumerate(paths):
            make_clip(p, args.seconds, width, height, seed=i)
        ours_frames, ours_audio = one_pass(paths[0])
        base_frames, base_audio = two_pass(paths[0])
        assert ours_frames.shape == base_frames.shape and abs(ours_audio.size - base_audio.size) < 16_00
        baseline = timed(two_pass, paths, args.repeats)
        ours = timed(one_pass, paths, args.repeats)
    print(f"clips: {args.clips} x {args.seconds:g} s, {width}x{height} H.264 + AAC 44.1 kHz stereo; "
          f"{NUM_FRAMES} frames at {FRAME_SIZE} px + 16 kHz mono audio each")
    print(f"two passes (baseline): {baseline * 1000:8.1f} ms/clip")
    print(f"one pass (sightsound): {ours * 1000:8.1f} ms/clip")
    print(f"speed-up: {baseline / ours:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
