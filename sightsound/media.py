"""Frames and 16 kHz mono audio from media files, with PyAV (no ffmpeg binary, no model code).

    clip = decode("clip.mp4", num_frames=8, frame_size=448)   # one pass over the file
    clip.frames   # uint8 [N, H, W, 3], evenly spaced over the clip (None when num_frames=0)
    clip.audio    # float32 [T] at 16 kHz mono (None when the file has no audio stream)
    write_wav("cache/clip.wav", clip.audio)

Video and audio packets are demuxed together in one pass. Only the frames that are kept are
converted to RGB (and scaled by ffmpeg's swscale on the way), and video frames that nothing
references are not even decoded while the next frame we keep is still far away.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")


class MediaError(Exception):
    """A media file that is missing, empty or cannot be decoded; the message names the file."""

    def __init__(self, message: str, kind: str = "media-corrupt"):
        super().__init__(message)
        self.kind = kind  # media-missing | media-corrupt | media-outside


@dataclass
class Clip:
    frames: np.ndarray | None  # uint8 [N, H, W, 3]
    audio: np.ndarray | None  # float32 [T] at SAMPLE_RATE
    duration: float  # seconds
    cut: bool = False  # the audio was cut at `max_seconds`


def decode(path: str | Path, num_frames: int = 8, frame_size: int | None = None,
           audio: bool = True, max_seconds: float | None = None) -> Clip:
    """Decode `num_frames` evenly spaced RGB frames and the 16 kHz mono audio in one pass.

    `clip.audio` is None when the file has no audio stream (a silent video); a file with neither
    the frames nor the audio asked for is a MediaError. `frame_size` bounds the longer side of each frame (aspect kept; None keeps the source size).
    Frame i is the first frame shown at or after the centre of the i-th of `num_frames` equal
    segments of the clip. With `max_seconds`, audio past that point is not decoded (a two-hour file
    costs what `max_seconds` of it costs) and `clip.cut` says so.
    """
    import av

    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found", "media-missing")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")
    try:
        with av.open(str(path)) as container:
            return _decode_open(container, path, num_frames, frame_size, audio, max_seconds)
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise MediaError(f"{path}: cannot decode: {exc}") from exc


def _decode_open(container, path: Path, num_frames: int, frame_size: int | None, want_audio: bool,
                 max_seconds: float | None = None) -> Clip:
    import av

    vstream = container.streams.video[0] if (num_frames > 0 and container.streams.video) else None
    astream = container.streams.audio[0] if (want_audio and container.streams.audio) else None
    if num_frames > 0 and vstream is None:
        raise MediaError(f"{path}: no video stream")
    if vstream is None and astream is None:
        raise MediaError(f"{path}: no audio stream" if want_audio else f"{path}: nothing to decode")
    duration = _duration(container, vstream or astream)

    picker = _FramePicker(vstream, num_frames, frame_size, duration) if vstream is not None else None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE) if astream else None
    chunks: list[np.ndarray] = []
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    decoded, cut = 0, False
    streams = [s for s in (vstream, astream) if s is not None]
    for packet in container.demux(*streams):
        if packet.stream is vstream:
            if packet.size and not picker.done:  # the demuxer's empty last packet is our flush, below
                picker.feed(packet)
        elif limit is not None and decoded >= limit:
            cut = True
            if picker is None or picker.done:
                break
        else:
            for frame in packet.decode():
                new = [f.to_ndarray()[0] for f in resampler.resample(frame)]
                chunks += new
                decoded += sum(c.size for c in new)
    if picker is not None and not picker.done:
        picker.feed(None)  # flush the frames the decoder still holds
    if resampler is not None:
        chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else None
    if samples is not None and limit is not None and samples.size > limit:
        samples, cut = samples[:limit], True
    if astream is not None and (samples is None or samples.size == 0):
        raise MediaError(f"{path}: audio stream has no decodable samples")
    if samples is not None and not np.isfinite(samples).all():
        raise MediaError(f"{path}: audio holds samples that are not numbers (NaN or infinite)")
    frames = picker.result(path) if picker is not None else None
    if duration <= 0 and samples is not None:
        duration = samples.size / SAMPLE_RATE
    return Clip(frames=frames, audio=samples, duration=duration, cut=cut)


def _duration(container, stream) -> float:
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


class _FramePicker:
    """Keeps the first frame at or after each target time; converts only those frames."""

    def __init__(self, stream, num_frames: int, frame_size: int | None, duration: float):
        self.stream = stream
        self.size = _scaled_size(stream.codec_context.width, stream.codec_context.height, frame_size)
        self.num_frames = num_frames
        self.targets = [(i + 0.5) * duration / num_frames for i in range(num_frames)] if duration > 0 else None
        self.kept: list[np.ndarray] = []
        self.all_frames: list = []  # only used when the duration is unknown
        self.last = None
        self.fps = float(stream.average_rate or stream.guessed_rate or 25)
        self.last_t = -1 / self.fps
        self.start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0

    @property
    def done(self) -> bool:
        return self.targets is not None and len(self.kept) == self.num_frames

    def feed(self, packet) -> None:
        ctx = self.stream.codec_context
        if self.targets is not None and packet is not None and packet.pts is not None:
            # A frame shown before the next target is never kept, and if no other frame references
            # it, nothing needs it decoded: the decoder skips such packets (B-frames, mostly).
            t = float(packet.pts * self.stream.time_base) - self.start
            ahead = t < self.targets[len(self.kept)] - 0.5 / self.fps
            ctx.skip_frame = "NONREF" if ahead else "DEFAULT"
        for frame in ctx.decode(packet):
            self._offer(frame)

    def _offer(self, frame) -> None:
        if self.done:
            return
        # Frames drained from the decoder at the end may carry no timestamp: they follow the last one.
        t = frame.time - self.start if frame.time is not None and math.isfinite(frame.time) else None
        self.last_t = t if t is not None else self.last_t + 1 / self.fps
        self.last = frame
        if self.targets is None:
            self.all_frames.append(frame)
            return
        t = self.last_t
        while not self.done and t >= self.targets[len(self.kept)] - 1e-6:
            self.kept.append(self._rgb(frame))

    def _rgb(self, frame) -> np.ndarray:
        width, height = self.size
        return frame.to_ndarray(format="rgb24", width=width, height=height)

    def result(self, path: Path) -> np.ndarray:
        if self.targets is None:  # no duration in the container: pick evenly from everything decoded
            if not self.all_frames:
                raise MediaError(f"{path}: video stream has no decodable frames")
            idx = np.linspace(0, len(self.all_frames) - 1, self.num_frames).round().astype(int)
            return np.stack([self._rgb(self.all_frames[i]) for i in idx])
        if self.last is None:
            raise MediaError(f"{path}: video stream has no decodable frames")
        while len(self.kept) < self.num_frames:  # targets past the last frame shown repeat it
            self.kept.append(self._rgb(self.last))
        return np.stack(self.kept)


def _scaled_size(width: int, height: int, longest: int | None) -> tuple[int, int]:
    if not longest or max(width, height) <= longest:
        return width, height
    scale = longest / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


# --- wav and npy cache files --------------------------------------------------------------------


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float32 mono audio as a wav, atomically (a killed run never leaves half a file)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_path(path)
    try:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sample_rate, subtype="FLOAT", format="WAV")
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise OSError(f"{path}: cannot be written ({str(exc).splitlines()[0]})") from None
    os.replace(tmp, path)


def read_wav(path: str | Path) -> np.ndarray:
    """Read a cached 16 kHz mono wav as float32 [T]."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        missing = not Path(path).exists()
        raise MediaError(f"{path}: {'not found' if missing else 'damaged'} ({str(exc).splitlines()[0]}); "
                         "run `sightsound prepare` again to rebuild it", "media-missing" if missing else "media-corrupt")
    if rate != SAMPLE_RATE:
        raise MediaError(f"{path}: expected {SAMPLE_RATE} Hz audio, found {rate} Hz")
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def wav_seconds(path: str | Path) -> float:
    """A wav file's length in seconds, read from its header."""
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def save_frames(path: str | Path, frames: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_path(path)
    with tmp.open("wb") as fh:
        np.save(fh, frames)
    os.replace(tmp, path)


def scratch_path(path: Path) -> Path:
    """A temporary name beside `path`, of this process alone: workers decoding the same clip at
    once each write their own and the last rename wins (the files are the same)."""
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def load_frames(path: str | Path) -> np.ndarray:
    """Cached frames (`.frames.npy`, no pickle); a missing or damaged file is a MediaError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: cached frames cannot be read ({exc})") from exc
