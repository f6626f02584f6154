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

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    backend: str = "hf"  # hf | openai
    model: str = ""  # a Hugging Face folder or hub id (hf), or the served model name (openai)
    # hf
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device_map: str | None = None  # e.g. "auto" on GPU machines; None: CPU
    trust_remote_code: bool = False
    batch_size: int = 8
    frames_as: str = "auto"  # video | images | auto (video where torchvision is installed)
    # openai-compatible HTTP (vLLM serve, SGLang, OpenAI, ...)
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    max_concurrency: int = 32
    timeout: float = 120.0  # seconds per request
    max_retries: int = 5


@dataclass
class Sampling:
    n: int = 1  # texts per request
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = 0


@dataclass
class Request:
    id: str
    messages: list[dict]


@dataclass
class Generation:
    request_id: str
    texts: list[str] = field(default_factory=list)
    error: str | None = None  # why no texts came back (after retries)


def load_backend(cfg: ModelConfig):
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[cfg.backend](cfg)


def _hf(cfg):
    from sightsound.models.hf import HFBackend

    return HFBackend(cfg)


def _openai(cfg):
    from sightsound.models.openai_http import OpenAIBackend

    return OpenAIBackend(cfg)


BACKENDS = {"hf": _hf, "openai": _openai}
