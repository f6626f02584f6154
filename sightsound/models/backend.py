"""What every model backend takes and gives: its settings, sampling settings, requests and generations."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


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
    base_url: str | list[str] = "http://127.0.0.1:8000/v1"  # or a list: requests are spread across the servers
    api_key_env: str | None = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    max_concurrency: int = 32
    timeout: float = 120.0  # seconds per request
    max_retries: int = 5
    # more keys for every request body, e.g. {top_k: -1} so that vLLM does not sample by the model's
    # own generation config (some checkpoints ship top_k 1, which makes all n traces the same)
    extra_body: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.base_url, list) and not self.base_url:
            raise ValueError("'base_url' is an empty list: name at least one server")
        for base_url in self.servers:
            try:
                url = urlsplit(base_url)
                url.port  # noqa: B018 - raises on a port out of range
            except ValueError as exc:
                raise ValueError(f"'base_url' {base_url!r} is not a valid URL: {exc}") from None
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"'base_url' {base_url!r} is not an http(s) URL with a host")

    @property
    def servers(self) -> list[str]:
        """The server URLs: `base_url` as a list."""
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


@dataclass
class Sampling:
    n: int = 1  # texts per request
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int | None = None  # None: the backend's default (left out of server requests)
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
    server: str | None = field(default=None, compare=False)  # the base_url that answered (HTTP backends)
