"""GRPO's rollouts on this CPU: the static-cache decoder (`grpo.decoder: static`) vs transformers'
`generate` (a dynamic cache), after the same grouped prefill, at the demo's shapes.

    python benchmarks/rollouts.py [--model runs/demo-models/student/final] [--prompts 4] [--group 8]

Loads the demo's bootstrapped student if it is there (else builds the tiny student in a temporary
folder), takes `--prompts` two-second clips' prompts, and times `sample_groups` making exactly
`--tokens` tokens per row (the end-of-sequence tokens suppressed) with each decoder, `--repeats`
times each, alternating, under the same seeds. Prints both medians, the ratio static / generate,
and whether the two returned the same tokens. On a GPU, `benchmarks/gpu_check.py` times the
compiled decoder against the memory-bound floor; on a CPU nothing is compiled, and this ratio is
why `grpo.decoder: auto` is "static" there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sightsound.models.loading import encode, load_model
from sightsound.training.student import sample_groups


def prompts(processor, count: int):
    rng = np.random.default_rng(0)
    turns = [[{"role": "user", "content": [
        {"type": "audio", "audio": (0.1 * rng.standard_normal(32_000 - 4000 * i)).astype(np.float32)},
        {"type": "text", "text": "Which object is making a sound? Think, then answer."}]}] for i in range(count)]
    return dict(encode(processor, turns, "left"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo-models/student/final")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(args.model)
    if not (folder / "config.json").exists():
        from sightsound.models import tiny

        folder = tiny.build_all(tempfile.mkdtemp())["student"]
    model, processor = load_model(str(folder))
    model.eval()
    inputs = prompts(processor, args.prompts)
    eos = model.generation_config.eos_token_id
    settings = dict(do_sample=True, temperature=1.0, max_new_tokens=args.tokens, use_cache=True,
                    pad_token_id=processor.tokenizer.pad_token_id,
                    suppress_tokens=eos if isinstance(eos, list) else [eos])
    times: dict[str, list[float]] = {"generate": [], "static": []}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # the first round warms up
            for decoder in times:
                torch.manual_seed(repeat)
                started = time.perf_counter()
                outputs[decoder] = sample_groups(model, inputs, args.group, decoder=decoder, **settings)
                if repeat:
                    times[decoder].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{folder}: {args.prompts} prompts x G={args.group} x {args.tokens} tokens, {args.repeats} runs each")
    print(f"  generate {medians['generate']:.2f} s, static {medians['static']:.2f} s: "
          f"static / generate = {medians['static'] / medians['generate']:.2f}; "
          f"same tokens: {torch.equal(outputs['generate'], outputs['static'])}")


if __name__ == "__main__":
    main()
