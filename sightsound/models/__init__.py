"""Model backends behind one small interface, used by every stage that generates text.

    backend = load_backend(ModelConfig(backend="hf", model="runs/tiny/teacher"))
    request = Request(id="s1", messages=[
        {"role": "user", "content": [{"type": "audio", "path": "clip.wav"},
                                     {"type": "text", "text": "What makes the sound?"}]}])
    [generation] = backend.generate([request], Sampling(n=4, temperature=1.0, max_new_tokens=128))
    generation.texts   # 4 sampled replies; generation.error says why when there are none

Messages follow the OpenAI chat shape. Content parts: `{"type": "text", "text": str}`,
`{"type": "audio", "path": wav}` (16 kHz mono, as `prepare` caches it), `{"type": "image",
"image": uint8 [H, W, 3]}` and `{"type": "video", "frames": uint8 [N, H, W, 3]}`.
A backend is a class with `generate(requests, sampling) -> list[Generation]`; to add one, write
it and add it to `BACKENDS`.
"""

from __future__ import annotations

from sightsound.config import ConfigError
from sightsound.models.backend import Generation, ModelConfig, Request, Sampling

__all__ = ["BACKENDS", "Generation", "ModelConfig", "Request", "Sampling", "load_backend"]


def load_backend(cfg: ModelConfig):
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {cfg.backend!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[cfg.backend](cfg)


def _hf(cfg):
    from sightsound.models.hf import HFBackend

    return HFBackend(cfg)


def _openai(cfg):
    from sightsound.models.openai_http import OpenAIBackend

    return OpenAIBackend(cfg)


BACKENDS = {"hf": _hf, "openai": _openai}
