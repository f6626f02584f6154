"""The tiny HF teacher on the same prepared samples: batch 8 vs batch 1.

    python benchmarks/teach_batching.py [--samples 32] [--n 4] [--max-new-tokens 32]

Builds the synthetic world and the tiny models in a temporary folder, then times the teach
stage's requests (4 frames of 56 px + the audio-focused prompt, n sampled traces each) through
`HFBackend.generate` with `batch_size=8` and `batch_size=1`, in the same process. Prints both times
and the speed-up of batching.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sightsound.datasets.synth import world
from sightsound.models import ModelConfig, Request, Sampling, load_backend, tiny
from sightsound.records import Sample
from sightsound.store import read_jsonl
from sightsound.stages import prepare, teach


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world.write_world(world.SynthConfig(out=str(tmp / "world"), clips=max(4, args.samples // 3), progress=False))
        prepare.main(prepare.PrepareConfig(dataset="synth", root=str(tmp / "world"), out=str(tmp / "run"),
                                           num_frames=4, frame_size=56, progress=False))
        models = tiny.build_all(tmp / "tiny")
        cfg = teach.TeachConfig(out=str(tmp / "run"), num_frames=4, frame_size=56)
        samples = list(read_jsonl(tmp / "run" / "samples.jsonl", Sample))[: args.samples]
        requests = [Request(s.id, teach.teacher_messages(s, cfg)) for s in samples]
        sampling = Sampling(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
        times = {}
        for batch in (1, 8):
            backend = load_backend(ModelConfig(model=str(models["teacher"]), batch_size=batch))
            backend.generate(requests[:2], sampling)  # warm-up
            start = time.perf_counter()
            generations = backend.generate(requests, sampling)
            times[batch] = time.perf_counter() - start
            assert all(len(g.texts) == args.n for g in generations)
    print(f"{len(requests)} samples x n={args.n}, {args.max_new_tokens} new tokens, tiny Qwen2.5-VL on CPU")
    print(f"batch 1: {times[1]:.2f} s   batch 8: {times[8]:.2f} s")
    print(f"speed-up of batch 8 over batch 1: {times[1] / times[8]:.2f}x")


if __name__ == "__main__":
    main()
