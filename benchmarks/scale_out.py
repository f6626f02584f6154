"""Scaling out, on this machine: the teach stage on the local engine vs on Ray, and the HTTP
backend against 1 model server vs 4.

    python benchmarks/scale_out.py [--clips 64] [--requests 400] [--repeats 5]

1. teach on `--clips` synthetic clips (the tiny teacher, 2 traces a clip, chunks of 4): the local
   engine (one process, torch on every core) vs `engine: {kind: ray, workers: 2}` on a local Ray
   cluster (one CPU each). The ratio is local time / Ray time (above 1: Ray is faster); with 2 CPU
   cores two actors can at best match one process that already uses both, so read it with the core
   count printed beside it. The cluster's start is timed apart.
2. `--requests` requests through `OpenAIBackend` against 4 loopback servers vs 1, each answering
   after 100 ms with at most 8 requests in flight (the others queue at the server, as at a vLLM
   server's max_num_seqs; the servers run in a process of their own): throughput ratio (target >=
   3.5), with the client's max_concurrency at the 4 servers' total capacity (32) and at twice it
   (64: every server keeps a queue, so no slot idles while the client turns a reply around).
Both runs of each pair happen in this process, one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sightsound.datasets.synth.world import SynthConfig  # noqa: E402
from sightsound.engine import EngineConfig  # noqa: E402
from sightsound.models import ModelConfig, Request, Sampling, tiny  # noqa: E402
from sightsound.models.openai_http import OpenAIBackend  # noqa: E402
from sightsound.stages import prepare, synth, teach  # noqa: E402


def teach_seconds(work: Path, prepared: Path, teacher: Path, engine: EngineConfig) -> float:
    run = work / engine.kind
    run.mkdir()
    shutil.copy(prepared / "samples.jsonl", run / "samples.jsonl")
    cfg = teach.TeachConfig(out=str(run), model=ModelConfig(model=str(teacher), batch_size=4), n=2, max_new_tokens=24,
                            temperature=1.0, num_frames=4, frame_size=56, chunk=4, engine=engine, progress=False)
    start = time.perf_counter()
    teach.main(cfg)
    return time.perf_counter() - start


def engines(clips: int) -> None:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synth.main(SynthConfig(out=str(work / "world"), clips=clips, seed=0, val_fraction=0.0, progress=False))
        prepared = work / "prepared"
        prepare.main(prepare.PrepareConfig(dataset="synth", root=str(work / "world"), out=str(prepared), num_frames=4,
                                           frame_size=56, progress=False))
        teacher = tiny.build_all(work / "tiny")["teacher"]
        questions = sum(1 for _ in (prepared / "samples.jsonl").open())
        local = teach_seconds(work, prepared, teacher, EngineConfig())
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        started = time.perf_counter() - start
        try:
            on_ray = teach_seconds(work, prepared, teacher, EngineConfig(kind="ray", workers=2, num_cpus=1))
        finally:
            ray.shutdown()
    print(f"teach, {clips} clips ({questions} questions), {os.cpu_count()} CPU cores")
    print(f"local engine (1 process):  {local:7.1f} s")
    print(f"ray engine (2 actors):     {on_ray:7.1f} s   (+ {started:.1f} s to start the local cluster)")
    print(f"ratio local / ray: {local / on_ray:.2f}")


SERVERS = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.http_server import ChatServer
running = [ChatServer(delay=0.1, capacity=8).start() for _ in range(int(sys.argv[2]))]
print(" ".join(s.url for s in running), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""


@contextlib.contextmanager
def loopback_servers(count: int):
    """`count` loopback servers in a process of their own (in this one, their threads would share
    the client's interpreter lock and its 2 cores, and time the servers rather than the client)."""
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", SERVERS, root, str(count)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().split()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def servers(requests: int, repeats: int) -> None:
    asked = [Request(f"r{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(requests)]
    for concurrency in (32, 64):  # the servers' total capacity, and twice it (each server keeps a queue)
        timings = {}
        for count in (1, 4):
            with loopback_servers(count) as urls:
                cfg = ModelConfig(backend="openai", model="bench", base_url=urls, api_key_env=None,
                                  max_concurrency=concurrency)
                runs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    generations = OpenAIBackend(cfg).generate(asked, Sampling(n=1, max_new_tokens=16))
                    runs.append(time.perf_counter() - start)
                    assert all(g.texts for g in generations), "a request failed"
                spread = Counter(g.server for g in generations)
            timings[count] = statistics.median(runs)
            print(f"max_concurrency {concurrency}, {count} server(s): median {timings[count]:5.2f} s "
                  f"(min {min(runs):.2f}, max {max(runs):.2f}), {requests / timings[count]:6.1f} requests/s "
                  f"(answered per server, last run: {sorted(spread.values())})")
        ratio = timings[1] / timings[4]
        print(f"max_concurrency {concurrency}: throughput ratio 4 servers / 1 (medians): {ratio:.2f} "
              f"(target >= 3.5: {'met' if ratio >= 3.5 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each HTTP measurement (medians compared)")
    args = parser.parse_args()
    servers(args.requests, args.repeats)
    engines(args.clips)


if __name__ == "__main__":
    main()
