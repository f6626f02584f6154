"""Framework overhead of `sightsound eval`: the whole stage vs a bare generate loop, same prompts.

    python benchmarks/eval_overhead.py [--samples 64] [--max-new-tokens 32]

Builds the synthetic world and the tiny models in a temporary folder. The bare loop loads the
tiny student with `from_pretrained`, and per question only runs the processor on the pre-rendered
prompt and pre-loaded audio, `model.generate` (greedy) and the decode. `sightsound eval` does
everything a user's run does: loads the backend, reads samples and wavs, renders prompts, batches,
generates, extracts and scores the answer (with the embedding fallback on, as by default), and
writes predictions, result and manifest. Prints time ratios ours / bare at batch 1 (target ≤ 1.1)
and at batch 8 (target < 1).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sightsound import media, prompts
from sightsound.datasets.synth import world
from sightsound.models import ModelConfig, tiny
from sightsound.records import Sample
from sightsound.store import read_jsonl
from sightsound.stages import evaluate, prepare


def bare_loop(model_dir: Path, samples: list[Sample], max_new_tokens: int) -> float:
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    start = time.perf_counter()
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    texts = [processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompts.fill(
            prompts.DIRECT_PROMPT, prompts.audio_variant(s.question), s.options)}]}],
        tokenize=False, add_generation_prompt=True) for s in samples]
    audios = [media.read_wav(s.audio) for s in samples]
    with torch.no_grad():
        for text, audio in zip(texts, audios):
            inputs = processor(text=[text], audio=[audio], sampling_rate=16_000, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return time.perf_counter() - start


def ours(model_dir: Path, samples_path: Path, out: Path, n: int, batch: int, max_new_tokens: int) -> float:
    cfg = evaluate.EvalConfig(samples=str(samples_path), out=str(out), limit=n, method="direct",
                              model=ModelConfig(model=str(model_dir), batch_size=batch),
                              max_new_tokens=max_new_tokens, chunk=64, progress=False)
    start = time.perf_counter()
    evaluate.main(cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world.write_world(world.SynthConfig(out=str(tmp / "world"), clips=args.samples // 2, val_fraction=0.0, progress=False))
        prepare.main(prepare.PrepareConfig(dataset="synth", root=str(tmp / "world"), out=str(tmp / "run"),
                                           num_frames=0, progress=False))
        student = tiny.build_all(tmp / "tiny")["student"]
        samples = list(read_jsonl(tmp / "run" / "samples.jsonl", Sample))[: args.samples]
        ours(student, tmp / "run" / "samples.jsonl", tmp / "warm", 4, 1, 4)  # warm caches and imports
        bare, one, eight = [], [], []
        for r in range(args.repeats):  # interleaved, best of each: the machine's noise hits all three alike
            bare.append(bare_loop(student, samples, args.max_new_tokens))
            one.append(ours(student, tmp / "run" / "samples.jsonl", tmp / f"b1-{r}", len(samples), 1, args.max_new_tokens))
            eight.append(ours(student, tmp / "run" / "samples.jsonl", tmp / f"b8-{r}", len(samples), 8, args.max_new_tokens))
        bare, one, eight = min(bare), min(one), min(eight)
    print(f"{len(samples)} questions, tiny Qwen2-Audio, greedy, {args.max_new_tokens} new tokens")
    print(f"bare generate loop: {bare:.2f} s   sightsound eval batch 1: {one:.2f} s   batch 8: {eight:.2f} s")
    print(f"overhead ratio at batch 1: {one / bare:.3f} (target <= 1.1); with batch 8: {eight / bare:.3f} (target < 1)")


if __name__ == "__main__":
    main()
