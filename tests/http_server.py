"""A loopback chat-completions server with scripted replies and fault injection (tests, benchmarks).

    with ChatServer() as server:                       # 127.0.0.1 on an ephemeral port
        server.fail(2, status=429, retry_after="3")    # the next two requests get 429 + Retry-After
        server.queue(Reply.malformed(), Reply(delay=1.0))   # then these, in order
        server.rule = lambda body, headers: ...        # or decide per request (Reply or None)
        cfg = ModelConfig(backend="openai", base_url=server.url)
        ...
        server.received[0].body, server.received[0].headers, server.max_in_flight

In a test module, `from http_server import chat_server` makes the `chat_server` fixture available.
By default each request is answered with `n` choices "reply {i} seed={seed} to: {last text}";
`ignore_n=True` answers one choice whatever `n` says (as some servers do), `delay` slows every
reply, `capacity` serves at most that many requests at once (the others wait, as on a vLLM server
at its max_num_seqs), and `logprobs=[(token, logprob), ...]` adds first-token top log-probs when asked for.
It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

try:
    import pytest
except ImportError:  # benchmarks import this module without the dev extras
    pytest = None


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list: sent as JSON; bytes/str: sent as is; None: a completion of the request
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    truncate: bool = False  # promise more bytes than are sent, then hang up

    @classmethod
    def error(cls, status: int, retry_after: str | None = None, message: str = "scripted failure") -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status, {"error": {"message": message, "code": status}}, headers)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b'{"choices": [{"message": ')

    @classmethod
    def truncated(cls) -> Reply:
        return cls(truncate=True)


@dataclass
class Received:
    path: str
    body: dict | None  # None when the body was not JSON
    headers: dict


def completion(texts: list[str], logprobs: list[tuple[str, float]] | None = None) -> dict:
    """A chat-completions reply body holding these texts."""
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
               for i, t in enumerate(texts)]
    if logprobs:
        top = [{"token": token, "logprob": lp} for token, lp in logprobs]
        for choice in choices:
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
    return {"id": "chatcmpl-test", "object": "chat.completion", "choices": choices}


def last_text(body: dict) -> str:
    text = ""
    for message in body.get("messages", []):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        text = next((p["text"] for p in reversed(parts) if p.get("type") == "text"), text)
    return text


class ChatServer:
    def __init__(self, delay: float = 0.0, ignore_n: bool = False, capacity: int | None = None):
        self.delay = delay
        self._slots = threading.Semaphore(capacity) if capacity else None
        self.ignore_n = ignore_n
        self.logprobs: list[tuple[str, float]] | None = None
        self.rule: Callable[[dict | None, dict], Reply | None] | None = None
        self.received: list[Received] = []
        self.in_flight = self.max_in_flight = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._http = _Server(("127.0.0.1", 0), _Handler)
        self._http.chat = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- scripting

    def queue(self, *replies: Reply) -> None:
        """The next requests (whichever arrive first) get these replies, in order."""
        with self._lock:
            self._queue.extend(replies)

    def fail(self, times: int, status: int = 500, retry_after: str | None = None) -> None:
        self.queue(*[Reply.error(status, retry_after) for _ in range(times)])

    def default_reply(self, body: dict | None) -> Reply:
        body = body or {}
        n = 1 if self.ignore_n else int(body.get("n", 1))
        seed, text = body.get("seed"), last_text(body)
        texts = [f"reply {i} seed={seed} to: {text}" for i in range(n)]
        return Reply(body=completion(texts, self.logprobs if body.get("logprobs") else None))

    # -- serving

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits forever on a server that never served
            self._http.shutdown()
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = dict(handler.headers.items())
        with self._lock:
            self.received.append(Received(handler.path, body, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self._queue.popleft() if self._queue else None
        try:
            reply = scripted or (self.rule and self.rule(body, headers)) or self.default_reply(body)
            if reply.body is None:  # scripted delays and truncations carry the usual completion
                reply = Reply(reply.status, self.default_reply(body).body, reply.headers, reply.delay, reply.truncate)
            if not handler.path.endswith("/chat/completions"):
                reply = Reply.error(404, message=f"no route {handler.path}")
            if self._slots is not None:
                with self._slots:
                    time.sleep(reply.delay or self.delay)
            else:
                time.sleep(reply.delay or self.delay)
        finally:
            # Counted out before answering: the client cannot start its next request before then,
            # so max_in_flight never overcounts.
            with self._lock:
                self.in_flight -= 1
        _send(handler, reply)


def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    body = reply.body
    payload = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    handler.send_response(reply.status)
    handler.send_header("Content-Type", "application/json")
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload) + (100 if reply.truncate else 0)))
    handler.end_headers()
    handler.wfile.write(payload[: len(payload) // 2] if reply.truncate else payload)
    handler.wfile.flush()
    if reply.truncate:
        handler.close_connection = True  # hang up mid-body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms Nagle stalls

    def do_POST(self) -> None:
        self.server.chat._handle(self)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow reply the client gave up on must not hold up shutdown
    request_queue_size = 256  # the default backlog of 5 drops connects under 32-way concurrency

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on slow replies are expected here


if pytest is not None:

    @pytest.fixture
    def chat_server():
        with ChatServer() as server:
            yield server
