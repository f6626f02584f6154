"""A synthetic audio-visual world whose truth is known, for tests and the demo (nothing downloaded):
its generator. (Its reader is `synth.reader`; what a watcher can tell of it, `synth.oracle`.)

    sightsound synth --out runs/world --clips 48 --seed 0
    sightsound prepare --dataset synth --root runs/world --split train --out runs/demo

Each clip shows two to `max_sources` sources as coloured glyphs and plays the sounds of some of
them: visible and sounding, visible but silent (some miming), or audible but off-screen, so a model
that only watches is fooled exactly where the paper's checker must catch it. Written to `--out`:
`videos/<name>.mp4`, AVQA-format `train_qa.json` / `val_qa.json` and `facts.jsonl` (the ground truth).
Details: docs/reference.md, "sightsound/datasets/synth/world.py".
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sightsound import rundir
from sightsound.config import ConfigError

# name, glyph shape, RGB colour; the sound of each is made by `_voice`.
SOURCES = [
    ("flute", "circle", (60, 200, 80)),
    ("violin", "triangle", (220, 60, 60)),
    ("drum", "square", (60, 90, 230)),
    ("bell", "diamond", (235, 210, 40)),
    ("horn", "cross", (200, 90, 220)),
    ("bird", "ring", (40, 210, 220)),
]
NAMES = [name for name, _, _ in SOURCES]
POSITIONS = ("left", "middle", "right")
COUNT_WORDS = ["one", "two", "three", "four"]
# What each clip is asked. On audio-visual clips: the in-domain types (Which, Count: the AVQA
# analogue), the acoustic ones vision cannot answer (Louder, Pitch: the MMAU speech/music analogue)
# and the MUSIC-AVQA analogue's (Order, Compare, Exist, Instruments: temporal, comparative,
# existential and counting templates where vision helps). On audio-only clips (the MMAU sound
# analogue): Hear and Tally, sound-event questions with nothing to see.
QUESTION_TYPES = ("Which", "Count", "Order", "Louder", "Pitch", "Compare", "Exist", "Instruments", "Hear", "Tally")
AUDIO_ONLY_TYPES = ("Hear", "Tally")
VISUAL_TYPES = ("Which", "Count", "Order", "Compare", "Exist", "Instruments")  # what a watcher can answer from frames
ROLES = ("sounding", "silent", "offscreen")
PITCHES = ("low", "high")  # the note a tonal source plays: its own register, or an octave up
TONAL = ("flute", "violin", "bell", "horn", "bird")  # sources with a pitch (the drum has none)


@dataclass
class SynthConfig:
    out: str = "runs/world"
    clips: int = 48
    seed: int = 0
    val_fraction: float = 0.25
    duration: float = 2.0  # seconds
    fps: int = 8
    size: int = 56  # frame width and height in pixels
    sample_rate: int = 22_050
    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))  # which kinds to ask
    max_sources: int = 3  # sources per scene: 2..max_sources (more than 3 forces some off-screen)
    roles: dict[str, float] = field(default_factory=lambda: {"sounding": 0.7, "silent": 0.2, "offscreen": 0.1})
    mime: float = 0.4  # share of visible silent sources whose glyph pulses anyway
    audio_only: float = 0.0  # share of clips with nothing on screen: 1..max_sources sounds, all off-screen
    noise: float = 0.002  # standard deviation of the hiss under every clip (full scale 1.0): how hard it is to hear
    progress: bool = True


@dataclass
class Event:
    onset: float
    duration: float
    gain_db: float  # 0 dB = full scale
    pitch: str = "low"  # low: the source's own register; high: an octave up


@dataclass
class Source:
    name: str
    visible: bool
    position: str | None  # left / middle / right, None when off-screen
    sounding: bool
    moving: bool  # the glyph pulses during `events` (sounding sources always move when visible)
    events: list[Event] = field(default_factory=list)


# --- the scene ----------------------------------------------------------------------------------


def check_world(cfg: SynthConfig) -> None:
    """Clear errors for settings the generator cannot honour."""
    unknown = set(cfg.question_types) - set(QUESTION_TYPES)
    if unknown:
        raise ConfigError(f"unknown question types {sorted(unknown)} (known: {', '.join(QUESTION_TYPES)})")
    if set(cfg.roles) != set(ROLES) or any(w < 0 for w in cfg.roles.values()) or not sum(cfg.roles.values()):
        raise ConfigError(f"roles must give a weight >= 0 to each of {', '.join(ROLES)}, not {cfg.roles}")
    if not 2 <= cfg.max_sources <= len(COUNT_WORDS):
        raise ConfigError(f"max_sources must be 2..{len(COUNT_WORDS)}, not {cfg.max_sources}")
    for name in ("mime", "audio_only"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"{name} is a share (0..1), not {getattr(cfg, name)}")
    if not 0 <= cfg.noise < 1:
        raise ConfigError(f"noise is a standard deviation of full scale (0 <= noise < 1), not {cfg.noise}")


def make_scene(rng: random.Random, cfg: SynthConfig, audio_only: bool = False) -> list[Source]:
    """Two to `max_sources` sources, the first always sounding, the others drawn by `roles`; onsets
    0.3 s apart, loudness 6 dB apart, and each event's pitch low or high at random. An audio-only
    scene has one to `max_sources` sources, all sounding off-screen."""
    count = rng.randint(1 if audio_only else 2, cfg.max_sources)
    names = rng.sample(NAMES, count)
    if audio_only:
        roles = ["offscreen"] * count
    else:
        roles = ["sounding"] + rng.choices(ROLES, weights=[cfg.roles[r] for r in ROLES], k=count - 1)
    positions = iter(rng.sample(POSITIONS, len(POSITIONS)))
    onsets = iter(rng.sample([0.1, 0.4, 0.7, 1.0], 4))
    gains = iter(rng.sample([0.0, -6.0, -12.0, -18.0], 4))
    sources = []
    for name, role in zip(names, roles):
        visible = role != "offscreen"
        if visible and sum(s.visible for s in sources) == len(POSITIONS):
            visible, role = False, "offscreen"  # only three places on screen
        sounding = role != "silent"
        moving = visible and (sounding or rng.random() < cfg.mime)
        onset = next(onsets)
        length = rng.uniform(0.5, min(0.9, cfg.duration - onset))
        event = Event(round(onset, 3), round(length, 3), next(gains), rng.choice(PITCHES))
        sources.append(Source(name, visible, next(positions) if visible else None, sounding,
                              moving, [event] if (sounding or moving) else []))
    return sources


def questions(sources: list[Source], rng: random.Random) -> list[dict]:
    """AVQA-style multiple-choice questions whose answers follow from the sound alone: the
    sound-event types on an audio-only scene, every other type on an audio-visual one."""
    heard = [s for s in sources if s.sounding]
    silent_names = [n for n in NAMES if n not in {s.name for s in heard}]
    target = rng.choice(heard)
    if not any(s.visible for s in sources):
        out = [("Hear", "Which of these sounds can be heard?", [target.name] + rng.sample(silent_names, 3), target.name),
               ("Tally", "How many different sounds can be heard?", COUNT_WORDS, COUNT_WORDS[len(heard) - 1])]
        return _shuffled(out, rng)
    out = []
    options = [target.name] + rng.sample(silent_names, min(3, len(silent_names)))
    out.append(("Which", "Which object is making a sound in the video?", options, target.name))
    out.append(("Count", "How many sound sources can be heard in the video?", COUNT_WORDS,
                COUNT_WORDS[len(heard) - 1]))
    if len(heard) >= 2:
        first = min(heard, key=lambda s: s.events[0].onset)
        others = [s.name for s in heard if s is not first] + silent_names
        options = [first.name] + rng.sample(others, 3)
        out.append(("Order", "Which sound starts first in the video?", options, first.name))
        a, b = rng.sample(heard, 2)
        louder = a.events[0].gain_db > b.events[0].gain_db
        out.append(("Louder", f"Is the {a.name} louder than the {b.name} in this video?",
                    ["yes", "no"], "yes" if louder else "no"))
    tonal = [s for s in heard if s.name in TONAL]
    if tonal:
        played = rng.choice(tonal)
        out.append(("Pitch", f"Is the {played.name} playing a high or a low note?", list(PITCHES),
                    played.events[0].pitch))
    out += _music_avqa_like(sources, heard, target, rng)
    return _shuffled(out, rng)


def _music_avqa_like(sources: list[Source], heard: list[Source], target: Source, rng: random.Random) -> list[tuple]:
    """The MUSIC-AVQA analogue's own templates (comparative, existential, counting), asked of
    audio-visual clips: a silent source is quieter than any sounding one."""
    other = rng.choice([s for s in sources if s is not target])
    loud = max((target, other), key=lambda s: s.events[0].gain_db if s.sounding else -99.0)
    asked = rng.choice([target, other, rng.choice([n for n in NAMES if n not in {s.name for s in sources}])])
    name = asked if isinstance(asked, str) else asked.name
    present = not isinstance(asked, str) and asked.sounding
    return [("Compare", f"Which sounds louder, the {target.name} or the {other.name}?", [target.name, other.name],
             loud.name),
            ("Exist", f"Is the {name} playing in this video?", ["yes", "no"], "yes" if present else "no"),
            ("Instruments", "How many instruments are playing in the video?", COUNT_WORDS,
             COUNT_WORDS[len(heard) - 1])]


def _shuffled(out: list[tuple], rng: random.Random) -> list[dict]:
    result = []
    for qtype, text, options, answer in out:
        options = list(options)
        rng.shuffle(options)
        result.append({"question_type": qtype, "question_text": text, "multi_choice": options,
                       "answer": options.index(answer)})
    return result


# --- rendering ----------------------------------------------------------------------------------


def render_frames(sources: list[Source], cfg: SynthConfig, rng: random.Random) -> np.ndarray:
    """uint8 [F, H, W, 3]: a noisy grey background and one glyph per visible source."""
    n = int(round(cfg.duration * cfg.fps))
    size = cfg.size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.randint(70, 110)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-8, 9, (n, size, size, 1))
    frames = np.clip(base + noise, 0, 255).repeat(3, axis=-1).astype(np.uint8)
    colours = {name: colour for name, _, colour in SOURCES}
    shapes = {name: shape for name, shape, _ in SOURCES}
    for source in (s for s in sources if s.visible):
        cx = (POSITIONS.index(source.position) + 0.5) * size / 3
        cy = size / 2
        for f in range(n):
            t = (f + 0.5) / cfg.fps
            active = source.moving and any(e.onset <= t < e.onset + e.duration for e in source.events)
            radius = size / 8 * (1.45 if active else 1.0)
            mask = _glyph(shapes[source.name], xx - cx, yy - cy, radius)
            colour = np.array(colours[source.name]) * (1.0 if active else 0.55)
            frames[f][mask] = colour.astype(np.uint8)
    return frames


def _glyph(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    dist = np.hypot(dx, dy)
    if shape == "circle":
        return dist <= r
    if shape == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        return ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r))
    if shape == "triangle":
        return (dy <= 0.7 * r) & (dy >= -r + 2 * np.abs(dx) * 0.9)
    raise ValueError(f"unknown glyph shape {shape!r}")


def render_audio(sources: list[Source], cfg: SynthConfig, rng: random.Random) -> np.ndarray:
    """float32 [2, T] stereo mix of every sounding source, panned by position, plus hiss (`noise`)."""
    sr = cfg.sample_rate
    total = int(cfg.duration * sr)
    mix = np.zeros((2, total), dtype=np.float64)
    noise_rng = np.random.default_rng(rng.randrange(2**32))
    for source in (s for s in sources if s.sounding):
        pan = {"left": 0.2, "middle": 0.5, "right": 0.8, None: 0.5}[source.position]
        for event in source.events:
            start, length = int(event.onset * sr), int(event.duration * sr)
            length = min(length, total - start)
            tone = _voice(source.name, length, sr, noise_rng, 2.0 if event.pitch == "high" else 1.0)
            envelope = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.01 * sr))
            tone = tone * envelope * 10 ** (event.gain_db / 20) * 0.5
            mix[0, start:start + length] += tone * (1 - pan) * 2 * 0.5
            mix[1, start:start + length] += tone * pan * 2 * 0.5
    mix += noise_rng.normal(0, cfg.noise, mix.shape)
    return np.clip(mix, -1, 1).astype(np.float32)


def _voice(name: str, length: int, sr: int, rng: np.random.Generator, shift: float = 1.0) -> np.ndarray:
    """The source's sound; `shift` multiplies its frequencies (2.0: an octave up). The drum has no pitch."""
    t = np.arange(length) / sr
    if name == "flute":
        return np.sin(2 * np.pi * 660 * shift * t)
    if name == "violin":
        phase = 2 * np.pi * 330 * shift * t + 3 * np.sin(2 * np.pi * 5 * t)
        return sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.6
    if name == "drum":
        beat = (t * 4) % 1.0
        return rng.normal(0, 0.5, length) * np.exp(-beat * 12)
    if name == "bell":
        return sum(np.sin(2 * np.pi * f * shift * t) * np.exp(-t * d) for f, d in ((392, 2), (1058, 4), (2025, 6))) / 2
    if name == "horn":
        return np.sign(np.sin(2 * np.pi * 165 * shift * t)) * 0.4
    if name == "bird":
        chirp = (t * 6) % 1.0
        return np.sin(2 * np.pi * (1200 + 1200 * chirp) * shift * t) * (chirp < 0.5)
    raise ValueError(f"unknown source {name!r}")


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int,
              lossless: bool = False) -> None:
    """H.264 video + AAC stereo audio, written atomically. The synthetic world is written lossless:
    lossy x264 encodes these frames differently from run to run (the packets differ), which made the
    same seed give another world, and the demo other numbers, each time."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"preset": "veryfast", **({"qp": "0"} if lossless else {"crf": "18"})}
        astream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        astream.options = {"aac_coder": "fast"}  # the default coder took 58 of a clip's 69 ms; this one 14
        for image in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout="stereo")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in astream.encode(frame):
            container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    tmp.replace(path)


# --- the whole world ----------------------------------------------------------------------------


def write_world(cfg: SynthConfig) -> dict:
    """Write the clips, the AVQA-format question files and the facts to `cfg.out`, deterministically
    by seed; returns the counts (clips, questions per split)."""
    from tqdm import tqdm

    check_world(cfg)
    out = Path(cfg.out)
    rng = random.Random(cfg.seed)
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    facts = []
    n_val = int(round(cfg.clips * cfg.val_fraction))
    qid = 0
    for i in tqdm(range(cfg.clips), desc="synth", unit="clip", disable=not cfg.progress):
        clip_rng = random.Random(rng.randrange(2**32))
        name = f"syn{cfg.seed:03d}c{i:05d}_{(i * 10) % 300:06d}"  # AVQA style: <id>_<start second>
        sources = make_scene(clip_rng, cfg, audio_only=cfg.audio_only > 0 and clip_rng.random() < cfg.audio_only)
        write_mp4(out / rundir.VIDEOS / f"{name}.mp4", render_frames(sources, cfg, clip_rng),
                  render_audio(sources, cfg, clip_rng), cfg.fps, cfg.sample_rate, lossless=True)
        split = "val" if i >= cfg.clips - n_val else "train"
        for q in questions(sources, clip_rng):
            if q["question_type"] not in cfg.question_types:
                continue
            splits[split].append({"id": qid, "video_name": name, "video_id": i,
                                  "question_relation": "Sound", **q})
            qid += 1
        facts.append({"video_name": name, "duration": cfg.duration,
                      "audible": sorted(s.name for s in sources if s.sounding),
                      "visible": sorted(s.name for s in sources if s.visible),
                      "sources": [asdict(s) for s in sources]})
    for split, records in splits.items():
        (out / f"{split}_qa.json").write_text(json.dumps(records, indent=1))
    (out / rundir.FACTS).write_text("".join(json.dumps(f) + "\n" for f in facts))
    return {"clips": cfg.clips, **{f"{k}_questions": len(v) for k, v in splits.items()}}
