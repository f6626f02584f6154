"""Fixtures are made by code: synthetic clips, wavs, and metadata files shaped like the real ones."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sightsound import media
from sightsound.datasets.synth.world import SynthConfig, write_mp4
from sightsound.stages import synth

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """float32 [channels, T] sine."""
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def counting_frames(n: int, size: int = 32) -> np.ndarray:
    """Frame i is a flat grey of level 4*i + 8, so a decoded frame tells its own index."""
    return np.stack([np.full((size, size, 3), 4 * i + 8, dtype=np.uint8) for i in range(n)])


def frame_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 8) / 4))


def make_mp4(path: Path, seconds: float = 2.0, fps: int = 8, freq: float = 440.0, size: int = 32,
             rate: int = 22_050) -> Path:
    write_mp4(path, counting_frames(int(seconds * fps), size), tone(freq, seconds, rate, 2), fps, rate)
    return path


def make_wav(path: Path, seconds: float = 1.0, freq: float = 440.0, rate: int = 44_100) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, rate, 2).T, rate)
    return path


def make_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def dominant_frequency(audio: np.ndarray, rate: int = media.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A small synthetic world, generated once per test session."""
    return generate_world(SynthConfig(out=str(tmp_path_factory.mktemp("world")), clips=8, seed=3))


def generate_world(cfg: SynthConfig) -> Path:
    """Run the synth stage without a progress bar; the world's folder."""
    synth.main(dataclasses.replace(cfg, progress=False))
    return Path(cfg.out)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny real-class Qwen checkpoints, built once per test session and saved as HF folders."""
    from sightsound.models import tiny

    return tiny.build_all(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def prepared(world, tmp_path_factory) -> Path:
    """The synthetic world's train split, prepared (4 frames of 56 px per clip)."""
    from sightsound.stages import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), out=str(out), num_frames=4,
                                       frame_size=56, progress=False))
    return out


def kill_when_written(proc, path: Path, lines: int, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `path` holds `lines` lines (or when it ends or time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# configs/demo.yaml made small: a few clips, a few steps, and a checker that accepts every trace
# (a briefly trained checker may reject all of them, and SFT needs a corpus).
REDUCED = ["bootstrap.world.clips=24", "bootstrap.heldout_limit=6",
           "bootstrap.teacher={steps: 40, lr: 3.0e-3, batch_size: 8}",
           "bootstrap.checker={steps: 20}", "bootstrap.student={steps: 4, batch_size: 8}",
           "synth.clips=8", "teach.n=2", "teach.temperature=0.01", "teach.max_new_tokens=48", "teach.chunk=2",
           "verify.threshold=0.0", "sft.steps=3", "sft.batch_size=2", "sft.save_every=2",
           "grpo.steps=2", "grpo.group_size=2", "grpo.prompts_per_step=2", "grpo.max_completion_tokens=16",
           "grpo.save_every=1", "eval.max_new_tokens=24"]


def reduced(tmp_path: Path, models: Path, *extra: str) -> list[str]:
    return [f"run.out={tmp_path}", f"bootstrap.out={models}", *REDUCED, *extra]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """configs/demo.yaml, reduced, run once from nothing (sft started as a separate process, as
    `run.launch` starts multi-GPU training), then run again."""
    from sightsound import pipeline

    root = tmp_path_factory.mktemp("demo")
    models, run_dir = root / "models", root / "run"
    overrides = reduced(run_dir, models, f"run.launch={{sft: {sys.executable}}}")
    plan = pipeline.load_plan(ROOT / "configs" / "demo.yaml", overrides)
    pipeline.run(plan)
    first = json.loads((run_dir / "manifests" / "run.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    pipeline.run(pipeline.load_plan(ROOT / "configs" / "demo.yaml", overrides))
    return {"dir": run_dir, "models": models, "first": first, "stamps": stamps}
