"""The OpenAI-compatible HTTP backend against a real loopback server (tests/http_server.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import numpy as np
import pytest
from PIL import Image

from sightsound.models import Generation, ModelConfig, Request, Sampling, load_backend
from sightsound.models.openai_http import SNIPPET, OpenAIBackend, parse_retry_after, to_openai_messages
from tests.conftest import counting_frames, frame_index, make_wav
from tests.http_server import ChatServer, Reply, chat_server, last_text  # noqa: F401 - chat_server is a fixture

KEY = "sk-test-SIGHTSOUND-0123456789abcdef"


class Sleeps(list):
    """An injected sleep: records the delays asked for and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def backend_for(server: ChatServer, sleeps: Sleeps | None = None, **overrides) -> OpenAIBackend:
    cfg = ModelConfig(backend="openai", model="teacher", base_url=server.url, api_key_env=None,
                      timeout=5.0, max_retries=3)
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return OpenAIBackend(cfg, sleep=sleeps if sleeps is not None else Sleeps(), rng=random.Random(0))


def ask(text: str, rid: str | None = None) -> Request:
    return Request(rid or text, [{"role": "user", "content": [{"type": "text", "text": text}]}])


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


# ---------------------------------------------------------------- conversion and request shape


def test_parts_convert_to_the_chat_completions_schema(tmp_path):
    wav = make_wav(tmp_path / "clip.wav")
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    frames = counting_frames(5)
    [message] = to_openai_messages([{"role": "user", "content": [
        {"type": "audio", "path": str(wav)}, {"type": "image", "image": image},
        {"type": "video", "frames": frames}, {"type": "text", "text": "What sounds?"}]}])
    parts = message["content"]
    assert message["role"] == "user" and len(parts) == 1 + 1 + 5 + 1
    assert parts[0]["type"] == "input_audio" and parts[0]["input_audio"]["format"] == "wav"
    assert base64.b64decode(parts[0]["input_audio"]["data"]) == wav.read_bytes()
    assert decode_data_url(parts[1]["image_url"]["url"]).shape == (24, 40, 3)
    assert [frame_index(decode_data_url(p["image_url"]["url"])) for p in parts[2:7]] == [0, 1, 2, 3, 4]
    assert parts[7] == {"type": "text", "text": "What sounds?"}
    assert to_openai_messages([{"role": "system", "content": "plain"}]) == [{"role": "system", "content": "plain"}]


def test_request_body_and_audio_on_the_wire(chat_server, tmp_path):
    wav = make_wav(tmp_path / "clip.wav")
    request = Request("a", [{"role": "user", "content": [{"type": "audio", "path": wav},
                                                         {"type": "text", "text": "hi"}]}])
    [gen] = backend_for(chat_server).generate([request], Sampling(n=2, temperature=0.7, top_p=0.9,
                                                                  max_new_tokens=33, seed=5))
    assert gen == Generation("a", ["reply 0 seed=5 to: hi", "reply 1 seed=5 to: hi"])
    [received] = chat_server.received
    assert received.path == "/v1/chat/completions"
    body = received.body
    assert {k: body[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "seed")} == {
        "model": "teacher", "n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 33, "seed": 5}
    audio = body["messages"][0]["content"][0]["input_audio"]
    assert base64.b64decode(audio["data"]) == wav.read_bytes()
    assert "authorization" not in {h.lower() for h in received.headers}  # api_key_env=None: no header


def test_the_backend_is_registered_and_sends_the_key_from_the_environment(chat_server, monkeypatch):
    monkeypatch.setenv("SIGHTSOUND_TEST_KEY", KEY)
    backend = load_backend(ModelConfig(backend="openai", model="m", base_url=chat_server.url,
                                       api_key_env="SIGHTSOUND_TEST_KEY"))
    assert isinstance(backend, OpenAIBackend)
    [gen] = backend.generate([ask("x")], Sampling(seed=None))
    assert gen.texts == ["reply 0 seed=None to: x"] and "seed" not in chat_server.received[0].body
    assert chat_server.received[0].headers["Authorization"] == f"Bearer {KEY}"
    monkeypatch.delenv("SIGHTSOUND_TEST_KEY")
    backend.generate([ask("y")], Sampling())
    assert "Authorization" not in chat_server.received[1].headers


# ---------------------------------------------------------------- n, order and concurrency


def test_n_choices_come_from_one_request(chat_server):
    [gen] = backend_for(chat_server).generate([ask("q")], Sampling(n=3, seed=0))
    assert len(gen.texts) == 3 and len(set(gen.texts)) == 3 and len(chat_server.received) == 1


def test_a_server_that_ignores_n_is_asked_again_with_new_seeds():
    with ChatServer(ignore_n=True) as server:
        [gen] = backend_for(server).generate([ask("q")], Sampling(n=3, seed=7))
    assert gen.error is None and len(set(gen.texts)) == 3
    assert [(r.body["n"], r.body["seed"]) for r in server.received] == [(3, 7), (2, 8), (1, 9)]


def test_concurrency_is_bounded_and_order_kept():
    with ChatServer(delay=0.1) as server:
        requests = [ask(f"q{i}") for i in range(12)]
        gens = backend_for(server, max_concurrency=3).generate(requests, Sampling(seed=0))
    assert [g.request_id for g in gens] == [r.id for r in requests]
    assert [g.texts for g in gens] == [[f"reply 0 seed=0 to: q{i}"] for i in range(12)]
    assert 1 < server.max_in_flight <= 3


def test_generate_works_inside_a_running_event_loop(chat_server):
    async def notebook_cell():
        return backend_for(chat_server).generate([ask("q")], Sampling())

    assert asyncio.run(notebook_cell())[0].texts == ["reply 0 seed=0 to: q"]


# ---------------------------------------------------------------- retries


def test_429_waits_for_retry_after(chat_server):
    chat_server.fail(2, status=429, retry_after="3")
    sleeps = Sleeps()
    [gen] = backend_for(chat_server, sleeps).generate([ask("q")], Sampling())
    assert gen.texts == ["reply 0 seed=0 to: q"] and sleeps == [3.0, 3.0]
    assert len(chat_server.received) == 3


def test_retry_after_as_an_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=100)
    assert 90 < parse_retry_after(format_datetime(when, usegmt=True)) <= 100
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after("soon") is None
    assert parse_retry_after("99999") == 300.0  # capped


def test_500s_back_off_exponentially_with_jitter(chat_server):
    chat_server.fail(3, status=500)
    sleeps = Sleeps()
    [gen] = backend_for(chat_server, sleeps).generate([ask("q")], Sampling())
    assert gen.error is None and len(sleeps) == 3
    for k, delay in enumerate(sleeps):
        assert 0.5 * 2**k * 0.5 <= delay <= 0.5 * 2**k


def test_a_slow_reply_times_out_and_is_retried(chat_server):
    chat_server.queue(Reply(delay=1.0))
    sleeps = Sleeps()
    [gen] = backend_for(chat_server, sleeps, timeout=0.2).generate([ask("q")], Sampling())
    assert gen.texts == ["reply 0 seed=0 to: q"] and len(sleeps) == 1 and len(chat_server.received) == 2


def test_malformed_and_truncated_bodies_are_retried(chat_server):
    chat_server.queue(Reply.malformed(), Reply.truncated(), Reply(body={"choices": []}))
    sleeps = Sleeps()
    [gen] = backend_for(chat_server, sleeps).generate([ask("q")], Sampling())
    assert gen.texts == ["reply 0 seed=0 to: q"] and len(sleeps) == 3


def test_malformed_json_forever_is_recorded(chat_server):
    chat_server.rule = lambda body, headers: Reply.malformed()
    [gen] = backend_for(chat_server, max_retries=2).generate([ask("q")], Sampling())
    assert gen.texts == [] and "malformed JSON" in gen.error and "attempts=3" in gen.error
    assert len(chat_server.received) == 3


def test_one_failing_request_does_not_stop_the_others(chat_server, tmp_path):
    chat_server.rule = lambda body, headers: Reply.error(500) if last_text(body) == "poison" else None
    requests = [ask("a"), ask("poison"), ask("b"), Request("missing", [{"role": "user", "content": [
        {"type": "audio", "path": str(tmp_path / "nowhere.wav")}]}])]
    gens = backend_for(chat_server, max_retries=2).generate(requests, Sampling())
    assert [g.request_id for g in gens] == ["a", "poison", "b", "missing"]
    assert gens[0].texts == ["reply 0 seed=0 to: a"] and gens[2].texts == ["reply 0 seed=0 to: b"]
    assert gens[1].texts == [] and "status=500" in gens[1].error and "attempts=3" in gens[1].error
    assert gens[3].texts == [] and "nowhere.wav" in gens[3].error


def test_client_errors_fail_at_once_and_a_dead_server_is_recorded(chat_server):
    chat_server.fail(1, status=400)
    sleeps = Sleeps()
    [gen] = backend_for(chat_server, sleeps).generate([ask("q")], Sampling())
    assert "HTTP 400" in gen.error and "attempts=1" in gen.error and sleeps == []
    dead = ChatServer()
    dead.stop()  # its port is closed now
    [gen] = backend_for(dead, max_retries=1).generate([ask("q")], Sampling())
    assert "connection error" in gen.error and "attempts=2" in gen.error


# ---------------------------------------------------------------- the API key


def test_the_key_never_leaks(chat_server, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("SIGHTSOUND_TEST_KEY", KEY)

    def echo(body, headers):
        # "c" puts the key across the point where error bodies are cut short in messages.
        before_key = len('{"error": {"message": "you sent Authorization: Bearer ')
        pad = "p" * (SNIPPET - 20 - before_key if last_text(body) == "c" else 0)
        status = 500 if last_text(body) in ("a", "c") else 401
        return Reply.error(status, message=f"{pad}you sent Authorization: {headers.get('Authorization')}")

    chat_server.rule = echo
    handler = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        backend = backend_for(chat_server, api_key_env="SIGHTSOUND_TEST_KEY", max_retries=2)
        gens = backend.generate([ask("a"), ask("b"), ask("c")], Sampling())
        probs = backend.yes_probability([ask("a")])
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in chat_server.received)  # it was sent
    assert probs == [None]
    for gen in gens[:2]:
        assert gen.texts == [] and "you sent Authorization: Bearer ***" in gen.error
    assert gens[2].texts == [] and "you sent Authorization: Bearer" in gens[2].error
    written = [repr(gens), repr(backend), caplog.text] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert caplog.text and all(KEY[:16] not in text for text in written)  # not even a part of it


def test_a_key_echoed_in_a_successful_reply_is_scrubbed_from_the_text(chat_server, monkeypatch):
    from tests.http_server import completion

    monkeypatch.setenv("SIGHTSOUND_TEST_KEY", KEY)
    chat_server.rule = lambda body, headers: Reply(body=completion([f"my key is {headers['Authorization']}"]))
    [gen] = backend_for(chat_server, api_key_env="SIGHTSOUND_TEST_KEY").generate([ask("a")], Sampling())
    assert gen.texts == ["my key is Bearer ***"]


# ---------------------------------------------------------------- yes/no log-probs


def test_yes_probability_from_first_token_logprobs(chat_server):
    chat_server.logprobs = [(" Yes", math.log(0.6)), ("No", math.log(0.2)), ("yes", math.log(0.1)),
                            ("maybe", math.log(0.05))]
    assert backend_for(chat_server).yes_probability([ask("q")]) == [pytest.approx(0.7 / 0.9)]
    body = chat_server.received[0].body
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"], body["temperature"]) == (1, True, 20, 0)
    chat_server.logprobs = [("maybe", 0.0)]
    chat_server.queue(Reply(), Reply(body={"choices": [{"message": {"content": "Yes"}}]}))
    assert backend_for(chat_server).yes_probability([ask("q"), ask("r")]) == [None, None]


# ---------------------------------------------------------------- several servers


class Clock:
    """An injected monotonic clock that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_spread_across_servers_and_a_failing_one_comes_back_after_its_back_off():
    """Three loopback servers; one fails every request for a while. Every request completes (a
    failed attempt moves to another server at once), the failing server is left alone while it
    backs off, and once its back-off is over it is tried again and answers."""
    clock, failing = Clock(), {"on": True}
    with ChatServer(delay=0.02) as a, ChatServer(delay=0.02) as b, ChatServer(delay=0.02) as c:
        b.rule = lambda body, headers: Reply.error(503) if failing["on"] else None
        cfg = ModelConfig(backend="openai", model="teacher", base_url=[a.url, b.url, c.url], api_key_env=None,
                          max_concurrency=6, max_retries=3, timeout=5.0)
        sleeps = Sleeps()
        backend = OpenAIBackend(cfg, sleep=sleeps, rng=random.Random(0), clock=clock)
        first = backend.generate([ask(f"q{i}") for i in range(30)], Sampling(n=1, seed=0))
        assert all(g.texts and g.error is None for g in first) and sleeps == []  # no waiting: others were up
        assert {g.server for g in first} == {a.url, c.url}
        assert len(b.received) <= cfg.max_concurrency  # only what was in flight before its first failure
        assert min(len(a.received), len(c.received)) >= 10  # the load is spread by requests in flight

        failing["on"] = False
        tried = len(b.received)
        second = backend.generate([ask(f"r{i}") for i in range(6)], Sampling(n=1, seed=0))
        assert len(b.received) == tried and {g.server for g in second} == {a.url, c.url}  # still backing off
        clock.now += 60.0  # past the longest back-off (30 s)
        third = backend.generate([ask(f"s{i}") for i in range(30)], Sampling(n=1, seed=0))
        assert all(g.texts for g in third) and b.url in {g.server for g in third} and len(b.received) > tried


def test_one_server_in_a_list_behaves_like_a_single_base_url(chat_server):
    chat_server.fail(2, status=503, retry_after="3")
    sleeps = Sleeps()
    backend = backend_for(chat_server, sleeps, base_url=[chat_server.url])
    [generation] = backend.generate([ask("hello")], Sampling(n=1))
    assert generation.texts and sleeps == [3.0, 3.0] and generation.server == chat_server.url


def test_base_url_lists_are_checked():
    with pytest.raises(ValueError, match="empty list"):
        ModelConfig(backend="openai", base_url=[])
    with pytest.raises(ValueError, match="'ftp://x' is not an http"):
        ModelConfig(backend="openai", base_url=["http://127.0.0.1:8000/v1", "ftp://x"])


def test_credentials_in_a_url_are_masked_everywhere_they_are_written(chat_server, tmp_path):
    from sightsound.config import save_config
    from tests.http_server import completion

    url = chat_server.url.replace("http://", "http://alice:s3cret-pw@")
    chat_server.rule = lambda body, headers: Reply(body=completion(
        [f"you are {headers.get('Authorization')} at {url}; password s3cret-pw; Proxy-Authorization: Digest abc123"]))
    backend = backend_for(chat_server, base_url=url)
    [gen] = backend.generate([ask("a")], Sampling())
    assert chat_server.received[0].headers["Authorization"].startswith("Basic ")  # httpx sent them
    assert gen.server == chat_server.url.replace("http://", "http://***@")
    assert "s3cret" not in gen.texts[0] and "alice" not in gen.texts[0] and "abc123" not in gen.texts[0]
    assert "Basic ***" in gen.texts[0]
    save_config(backend.cfg, tmp_path / "teach.yaml")
    assert "s3cret" not in (tmp_path / "teach.yaml").read_text() and "***@" in (tmp_path / "teach.yaml").read_text()

    chat_server.rule = lambda body, headers: Reply.error(500, message=f"bad {url}")
    [failed] = backend_for(chat_server, base_url=url, max_retries=0).generate([ask("b")], Sampling())
    assert failed.error and "s3cret" not in failed.error
