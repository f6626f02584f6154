"""The HTTP backend's concurrency: many requests in flight vs one at a time, against a slow server.

    python benchmarks/http_backend.py [--requests 200] [--latency 0.1] [--concurrency 32]

A loopback chat-completions server (tests/http_server.py) answers every request after `latency`
seconds, as a busy vLLM server would. The same requests go through `OpenAIBackend.generate` with
max_concurrency=1 (the sequential baseline) and with `--concurrency`, in this process.
Prints both times and the speed-up (target ≥ 15x with the defaults).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.http_server

from sightsound.models import ModelConfig, Request, Sampling  # noqa: E402
from sightsound.models.openai_http import OpenAIBackend  # noqa: E402
from tests.http_server import ChatServer  # noqa: E402


def timed_run(server: ChatServer, requests: list[Request], concurrency: int) -> float:
    cfg = ModelConfig(backend="openai", model="bench", base_url=server.url, api_key_env=None,
                      max_concurrency=concurrency)
    start = time.perf_counter()
    gens = OpenAIBackend(cfg).generate(requests, Sampling(n=1, max_new_tokens=16))
    seconds = time.perf_counter() - start
    failed = [g for g in gens if g.error or len(g.texts) != 1]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[0].error}"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the server takes per reply")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    requests = [Request(f"r{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(args.requests)]
    with ChatServer(delay=args.latency) as server:
        sequential = timed_run(server, requests, 1)
        concurrent = timed_run(server, requests, args.concurrency)
        peak = server.max_in_flight
    print(f"{args.requests} requests, server latency {args.latency * 1000:.0f} ms")
    print(f"max_concurrency=1:  {sequential:7.2f} s")
    print(f"max_concurrency={args.concurrency}: {concurrent:7.2f} s   (peak in flight at the server: {peak})")
    print(f"speed-up: {sequential / concurrent:.1f}x (target >= 15x)")


if __name__ == "__main__":
    main()
