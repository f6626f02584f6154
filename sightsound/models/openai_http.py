"""The OpenAI-compatible chat-completions backend: vLLM serve, SGLang, OpenAI and the like.

    export OPENAI_API_KEY=...   # optional: local servers usually need none
    backend = OpenAIBackend(ModelConfig(backend="openai", model="Qwen/Qwen2.5-VL-32B-Instruct",
                                        base_url="http://127.0.0.1:8000/v1", max_concurrency=32))
    gens = backend.generate(requests, Sampling(n=4, temperature=1.0, max_new_tokens=512))
    probs = backend.yes_probability(requests)  # P("yes") / (P("yes") + P("no")) per request, or None

Content parts (audio, images, video frames) become chat-completions parts; at most
`max_concurrency` requests are in flight over the servers of `base_url` (one or a list), retried
with back-off; a request that still fails comes back as a `Generation` with its `error`, never raised.
Details: docs/reference.md, "sightsound/models/openai_http.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import base64
import email.utils
import functools
import io
import logging
import math
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from sightsound.config import mask_credentials
from sightsound.models.backend import Generation, ModelConfig, Request, Sampling

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
RETRY_AFTER_CAP = 300.0  # seconds: a broken Retry-After must not stall a run for hours
OPENAI_PARTS = {"image_url", "input_audio", "video_url", "audio_url"}  # passed through unchanged
SNIPPET = 300  # characters of an error body kept in messages


# ---------------------------------------------------------------- message conversion


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """Our chat messages (see sightsound.models) → chat-completions messages."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [p for part in content for p in _convert_part(part)]
        out.append({**message, "content": content})
    return out


def _convert_part(part: dict) -> list[dict]:
    kind = part.get("type")
    if kind == "text" or kind in OPENAI_PARTS:
        return [part]
    if kind == "audio":
        return [audio_part(part["path"])]
    if kind == "image":
        return [image_part(part["image"])]
    if kind == "video":
        return [image_part(frame) for frame in part["frames"]]  # frames: uint8 [N, H, W, 3]
    raise ValueError(f"unknown content part type {kind!r}")


def audio_part(path: str | Path) -> dict:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def image_part(image: np.ndarray) -> dict:
    """uint8 [H, W, 3] → a JPEG data URL part."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


# ---------------------------------------------------------------- reading replies


def choice_texts(data: dict) -> list[str]:
    """The texts of a chat-completions reply; raises on a malformed one (which is retried)."""
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices in the reply")
    texts = [choice["message"]["content"] for choice in choices]
    if not all(text is None or isinstance(text, str) for text in texts):
        raise ValueError("a choice's content is not a string")
    return [text or "" for text in texts]


def yes_share(data: dict) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first token's top log-probs; None when unavailable."""
    logprobs = data["choices"][0].get("logprobs") or {}
    content = logprobs.get("content") or []
    if not content:
        return None
    first = content[0]
    candidates = {first.get("token"): first.get("logprob")}  # the chosen token may be missing from the top list
    candidates |= {t.get("token"): t.get("logprob") for t in first.get("top_logprobs") or []}
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in candidates.items():
        word = _word(token)
        if word in mass and logprob is not None:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


def _word(token) -> str:
    # Servers return decoded tokens (" Yes") or byte-level / SentencePiece forms ("ĠYes", "▁yes").
    return str(token or "").replace("Ġ", " ").replace("▁", " ").strip().lower()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date form)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


# ---------------------------------------------------------------- the backend


_AUTHORIZATION = re.compile(r"(?i)\b((?:proxy-)?authorization\s*[:=]\s*[\"']?[a-z-]+)\s+[^\s\"',}]+")

class _AttemptFailed(Exception):
    """One failed attempt: why, the HTTP status if there was one, whether to retry and when."""

    def __init__(self, reason: str, status: int | None = None, retryable: bool = True,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retryable, self.retry_after = reason, status, retryable, retry_after


class RequestFailed(Exception):
    """A request that failed for good; the message says why, the last status and the attempts."""


class Servers:
    """The servers behind one backend: requests in flight and back-off deadline of each.

    `pick` gives the server with the fewest requests in flight among those not backing off, in
    list order on ties, or — when every server is backing off — the one back soonest."""

    def __init__(self, urls: list[str], clock=time.monotonic):
        self.urls, self._clock = list(urls), clock
        self.in_flight = dict.fromkeys(self.urls, 0)
        self.back_until = dict.fromkeys(self.urls, 0.0)

    def pick(self) -> str:
        now = self._clock()
        up = [url for url in self.urls if self.back_until[url] <= now]
        candidates = up or [min(self.urls, key=lambda url: self.back_until[url])]
        return min(candidates, key=lambda url: self.in_flight[url])  # min keeps the first of equals

    def any_up(self) -> bool:
        now = self._clock()
        return any(until <= now for until in self.back_until.values())

    def back_off(self, url: str, seconds: float) -> None:
        self.back_until[url] = max(self.back_until[url], self._clock() + seconds)

    def succeeded(self, url: str) -> None:
        self.back_until[url] = 0.0


class OpenAIBackend:
    batch_dependent_draws = False  # each request is seeded on its own: a request's reply does not depend on the others
    def __init__(self, cfg: ModelConfig, *, sleep=asyncio.sleep, backoff_base: float = 0.5,
                 backoff_cap: float = 30.0, rng: random.Random | None = None, clock=time.monotonic):
        self.cfg = cfg
        self._sleep = sleep  # injectable so that tests can record delays instead of waiting
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._rng = rng or random.Random()
        self.servers = Servers(cfg.servers, clock)
        self.replies_without_logprobs = 0

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.cfg.model!r}, base_url={self.cfg.base_url!r})"

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        async def job(clients, request):
            texts, server = await self._sample(clients, request, sampling)
            return Generation(request.id, texts, server=mask_credentials(server))

        return _run(self._each(requests, job, lambda request, error: Generation(request.id, error=error)))

    def yes_probability(self, requests: list[Request]) -> list[float | None]:
        """For a verifier: the share of "yes" against "no" in the first token, greedy; None when
        the server returns no log-probs or the request fails (`replies_without_logprobs` counts the
        replies that came back without any, so a caller can tell a server that never gives them)."""
        def parse(data: dict) -> float | None:
            if not (data["choices"][0].get("logprobs") or {}).get("content"):
                self.replies_without_logprobs += 1
            return yes_share(data)

        async def job(clients, request):
            messages = await _converted(request.messages)
            body = {"model": self.cfg.model, "messages": messages, "n": 1, "max_tokens": 1,
                    "temperature": 0, "logprobs": True, "top_logprobs": 20}
            return (await self._post(clients, body, parse))[0]

        return _run(self._each(requests, job, lambda request, error: None))

    # -- plumbing

    async def _each(self, requests, job, on_error) -> list:
        """Run job(clients, request) for every request, at most max_concurrency at a time; a failure
        becomes on_error(request, message) so that the other requests carry on."""
        semaphore = asyncio.Semaphore(max(1, self.cfg.max_concurrency))

        async def guarded(clients, request):
            async with semaphore:
                try:
                    return await job(clients, request)
                except Exception as e:  # noqa: BLE001 - anything, even a missing wav, is per request
                    while isinstance(e, ExceptionGroup) and e.exceptions:  # say what went wrong inside
                        e = e.exceptions[0]
                    message = str(e) if isinstance(e, RequestFailed) else f"{type(e).__name__}: {e}"
                    message = self._scrub(message)
                    log.warning("request %s failed: %s", request.id, message)
                    return on_error(request, message)

        # One connection pool per server: httpcore scans its pool's connections for every queued
        # request, so one pool of all servers' connections cost more CPU per request than the
        # replies (benchmarks/scale_out.py: 4 servers at 100 ms, 32 in flight).
        async with contextlib.AsyncExitStack() as stack:
            clients = {url: await stack.enter_async_context(self._client()) for url in self.servers.urls}
            return list(await asyncio.gather(*(guarded(clients, r) for r in requests)))

    def _client(self) -> httpx.AsyncClient:
        key = self._api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        size = max(1, self.cfg.max_concurrency)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        return httpx.AsyncClient(headers=headers, timeout=self.cfg.timeout, limits=limits, verify=_ssl_context())

    def _api_key(self) -> str | None:
        if not self.cfg.api_key_env:
            return None
        return os.environ.get(self.cfg.api_key_env) or None  # unset or empty: no Authorization header

    def _scrub(self, text: str) -> str:
        """`text` (a reply, an error) without the API key, the servers' URL credentials (as given,
        or base64-encoded as in a Basic header) and any echoed Authorization header's value."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return mask_credentials(_AUTHORIZATION.sub(r"\1 ***", text))

    def _secrets(self) -> list[str]:
        secrets = [self._api_key()]
        for url in self.servers.urls:
            userinfo = httpx.URL(url).userinfo.decode()
            if userinfo:
                secrets += [userinfo, base64.b64encode(userinfo.encode()).decode(), userinfo.partition(":")[2]]
        return sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)  # longest first

    async def _sample(self, clients, request: Request, sampling: Sampling) -> tuple[list[str], str]:
        """n texts for the request, and the server that answered (the last one, after top-ups)."""
        messages = await _converted(request.messages)
        texts: list[str] = []
        server = ""
        round_ = 0
        while len(texts) < sampling.n:  # ends: a reply without texts is malformed and raises
            seed = None if sampling.seed is None else sampling.seed + round_
            round_ += 1
            body = {"model": self.cfg.model, "messages": messages, "n": sampling.n - len(texts),
                    "temperature": sampling.temperature, "top_p": sampling.top_p,
                    "max_tokens": sampling.max_new_tokens, **({} if seed is None else {"seed": seed}),
                    **({} if sampling.top_k is None else {"top_k": sampling.top_k}), **self.cfg.extra_body}
            answered, server = await self._post(clients, body, choice_texts)
            texts += [self._scrub(text) for text in answered]
            if len(texts) < sampling.n:
                log.debug("request %s: %d of %d texts, asking again", request.id, len(texts), sampling.n)
        return texts[: sampling.n], server

    async def _post(self, clients: dict, body: dict, parse) -> tuple:
        """POST with retries, each attempt to the server `Servers.pick` gives; returns (parse(reply
        JSON), the server's base_url) or raises RequestFailed."""
        attempts = 0
        while True:
            attempts += 1
            server = self.servers.pick()
            self.servers.in_flight[server] += 1
            try:
                value = parse(await self._attempt(clients[server], server, body))
                self.servers.succeeded(server)
                return value, server
            except _AttemptFailed as e:
                failure = e
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                failure = _AttemptFailed(f"malformed response ({type(e).__name__}: {e})", 200)
            finally:
                self.servers.in_flight[server] -= 1
            reason = self._scrub(failure.reason)
            if len(self.servers.urls) > 1:
                reason += f"; server={mask_credentials(server)}"
            if not failure.retryable or attempts > self.cfg.max_retries:
                raise RequestFailed(f"{reason}; status={failure.status}; attempts={attempts}")
            delay = failure.retry_after if failure.retry_after is not None else self._backoff(attempts)
            self.servers.back_off(server, delay)
            if self.servers.any_up():
                log.info("retrying at once on another server after attempt %d: %s", attempts, reason)
                continue
            log.info("retrying in %.2f s after attempt %d: %s", delay, attempts, reason)
            await self._sleep(delay)

    async def _attempt(self, client, server: str, body: dict) -> dict:
        url = server.rstrip("/") + "/chat/completions"
        try:
            # wait_for bounds the whole attempt; httpx's own timeout only bounds each read/write.
            response = await asyncio.wait_for(client.post(url, json=body), self.cfg.timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise _AttemptFailed(f"timed out after {self.cfg.timeout:g} s") from None
        except httpx.TransportError as e:
            raise _AttemptFailed(f"connection error ({type(e).__name__}: {e})") from None
        status = response.status_code
        if status >= 400:
            retryable = status in (408, 429) or status >= 500
            retry_after = parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
            snippet = self._scrub(response.text)[:SNIPPET].strip()  # scrub first: a cut key would survive
            raise _AttemptFailed(f"HTTP {status}: {snippet}", status, retryable, retry_after)
        try:
            data = response.json()
        except ValueError:
            raise _AttemptFailed(f"malformed JSON: {self._scrub(response.text)[:SNIPPET].strip()!r}", status) from None
        if not isinstance(data, dict):
            raise _AttemptFailed("malformed response (not a JSON object)", status)
        return data

    def _backoff(self, attempt: int) -> float:
        # Jitter spreads the retries of many requests that failed together.
        return min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0)


async def _converted(messages: list[dict]) -> list[dict]:
    """`to_openai_messages`, in a worker thread when there are media to encode (JPEG, base64: off
    the event loop), else here (the thread hand-off cost more than converting text)."""
    if all(isinstance(m.get("content"), str) or all(part.get("type") == "text" for part in m["content"])
           for m in messages):
        return to_openai_messages(messages)
    return await asyncio.to_thread(to_openai_messages, messages)


@functools.lru_cache(maxsize=1)
def _ssl_context():
    """One verifying TLS context for every client (loading the CA bundle took 50 ms a client)."""
    return httpx.create_ssl_context()


def _run(coro):
    """Run a coroutine to completion from synchronous code, even inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
