"""GRPO's scoring and update at realistic shapes: today's path vs the path before, and the estimate.

    python benchmarks/grpo_memory.py [--prompts 2] [--group 8] [--completion-tokens 256]
                                     [--audio-seconds 10] [--hidden 256] [--layers 2] [--audio-layers 2]

The model is a randomly initialised Qwen2AudioForConditionalGeneration built from Qwen2-Audio-7B-
Instruct's config (`training.memory.KNOWN_CONFIGS`): its real vocabulary (156,032), its audio
encoder's real width (1,280, 20 heads, feed-forward 5,120, 128 mel bins) over the real 30 s window
(3,000 mel frames), with the decoder narrowed (`--hidden`, `--layers`) and the encoder shortened
(`--audio-layers`) so that a step fits this machine's memory and time. Each prompt is a clip of
`--audio-seconds` (its audio placeholders: 250 tokens for 10 s) between some text; prompts have
different lengths (left padding; `--prompt-tokens` of text each, less 0–2). A step is GRPO's
scoring and update for `--prompts` × `--group` completions of exactly `--completion-tokens` random tokens: the reference model's log-probs (no
gradient), the policy's with gradient, eq. 2's loss, backward, AdamW — float32, full-parameter,
with a frozen reference copy (beta 0.04), as the paper's GRPO. Rollout generation is left out
(`student.sample_groups` prefills each prompt once; its key/value cache is in the estimate).

Both sides run in their own subprocess, one after the other, with the same weights and inputs:

  new   `training.student.completion_logps`: one row per prompt — its tokens and its audio run once
        for its group, each completion attending to the prompt and to itself; the LM head only at
        completion positions, 1,024 tokens at a time; gradient checkpointing as `--checkpointing`
        says (default: on, as the paper config runs it).
  old   the path before: every position's logits, a float32 copy of the completion part, the audio
        features repeated G times (the encoder runs B×G times); no checkpointing.

Peak memory is the process's resident set (CPU has no allocator counter): each side runs with
`MALLOC_MMAP_THRESHOLD_=131072` so that RSS follows live tensors; "peak" is VmHWM over one step,
after a warm-up step (AdamW's state then exists), minus the RSS before the models were built.
The estimate (`sightsound estimate`'s arithmetic, `training.memory.estimate`) for the same shapes,
float32, one process, without the rollout cache, is printed against the new side's measured peak.

Prints: each side's step seconds and peak GiB, the ratios new/old (targets: memory ≤ 0.5, time ≤ 0.8),
and estimate/measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_step import MALLOC_ENV, _memory, _reset_peak  # noqa: E402  (the same RSS readings)

GIB = 1024 ** 3


def build_config(args):
    from sightsound.training.memory import model_config

    config = model_config("Qwen/Qwen2-Audio-7B-Instruct")
    text = config.text_config
    text.hidden_size, text.intermediate_size = args.hidden, args.hidden * 11008 // 4096
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = args.layers, 4, 4
    text.head_dim = args.hidden // 4
    config.audio_config.encoder_layers = args.audio_layers
    return config


def prompt_inputs(config, args):
    """Left-padded prompts of `--prompt-tokens` text tokens around each clip's audio placeholders, with
    random Whisper features over the 30 s window, the clip's frames marked valid (gpu_check's builder,
    on the CPU in float32). Returns the inputs and the padded prompt length."""
    import torch

    from gpu_check import inputs

    settings = argparse.Namespace(**vars(args), device="cpu", dtype=torch.float32, window_frames=3000)
    prompt, _ = inputs(config, settings, args.prompts, 0, torch.Generator().manual_seed(0))
    return prompt, prompt["input_ids"].shape[1]


def old_completion_logps(model, prompt, completion_ids, repeats):
    """The path before: all logits, a float32 copy of the completion part, audio repeated G times."""
    import torch

    inputs = {k: v.repeat_interleave(repeats, dim=0) for k, v in prompt.items()}
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completion_ids)], dim=1)
    inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
    logits = model(**inputs).logits[:, prompt_len - 1:-1, :].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def child(args) -> dict:
    import copy

    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from sightsound import rl
    from sightsound.training.student import completion_logps, prepare_for_training

    torch.set_num_threads(args.threads)
    baseline = _memory()["VmRSS"]
    config = build_config(args)
    torch.manual_seed(0)
    policy = Qwen2AudioForConditionalGeneration._from_config(config).float()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    checkpointing = args.side == "new" and args.checkpointing
    prepare_for_training(policy, gradient_checkpointing=checkpointing)
    policy.config.use_cache = False
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    prompt, _ = prompt_inputs(config, args)
    G = args.group
    completions = torch.randint(200, 150000, (args.prompts * G, args.completion_tokens),
                                generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(completions)
    advantages = torch.randn(args.prompts * G, generator=torch.Generator().manual_seed(2))
    score = completion_logps if args.side == "new" else old_completion_logps

    def step():
        with torch.no_grad():
            ref = score(reference, prompt, completions, G)
        logps = score(policy, prompt, completions, G)
        loss, _ = rl.grpo_loss(logps, logps.detach(), ref, advantages, mask, epsilon=0.2, beta=0.04)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), logps.detach()

    step()  # warm-up: AdamW's state exists from here on
    _reset_peak()
    started = time.perf_counter()
    loss, logps = step()
    seconds = time.perf_counter() - started
    peak = (_memory()["VmHWM"] - baseline) * 1024
    return {"side": args.side, "seconds": seconds, "peak_bytes": peak, "loss": loss,
            "logps_sum": float(logps.sum()), "checkpointing": checkpointing}


def estimate(args) -> float:
    from sightsound.training import memory
    from sightsound.training.student import LoraConfig

    config = build_config(args)
    counts = memory.count_parameters(config, LoraConfig(enabled=False))
    setup = memory.Setup(dtype="float32", sequences=args.prompts * args.group, clips=args.prompts,
                         prompt_tokens=prompt_inputs(config, args)[1] - memory.audio_tokens(args.audio_seconds),
                         completion_tokens=args.completion_tokens, audio_seconds=args.audio_seconds, stage="grpo",
                         reference=True, gradient_checkpointing=args.checkpointing, grouped=True)
    parts = memory.estimate(config, counts, setup)
    return parts["total"] - max(0.0, parts["rollout_cache"] - parts["activations"] - parts["logits"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    parser.add_argument("--prompt-tokens", type=int, default=40, help="text tokens of each prompt besides its audio")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--audio-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpointing", type=int, default=1, help="1: the new side checkpoints (default)")
    parser.add_argument("--side", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        Path(args.result).write_text(json.dumps(child(args)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for side in ("new", "old"):
            result = Path(folder) / f"{side}.json"
            command = [sys.executable, __file__, "--side", side, "--result", str(result)] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("side", "result")]
            env = {**os.environ, **MALLOC_ENV, "TOKENIZERS_PARALLELISM": "false"}
            done = subprocess.run(command, env=env)
            results[side] = json.loads(result.read_text()) if done.returncode == 0 else {"failed": done.returncode}
    new, old = results["new"], results["old"]
    print(f"GRPO scoring + update, {args.prompts} prompts × G={args.group}, "
          f"{args.completion_tokens}-token completions, "
          f"{args.audio_seconds:g} s clips in a 30 s window, vocabulary 156,032, audio encoder width 1,280 "
          f"({args.audio_layers} layers), decoder {args.layers} × {args.hidden}; float32, {args.threads} threads")
    for side in (new, old):
        if "failed" in side:
            print(f"  a side failed (exit {side['failed']}; -9 is the kernel's out-of-memory kill)")
            continue
        print(f"  {side['side']:4} step {side['seconds']:7.1f} s   peak {side['peak_bytes'] / GIB:6.2f} GiB"
              f"   (checkpointing {'on' if side['checkpointing'] else 'off'}; "
              f"sum of log-probs {side['logps_sum']:.1f})")
    if "failed" not in new and "failed" not in old:
        print(f"  new/old: peak memory {new['peak_bytes'] / old['peak_bytes']:.2f} (target <= 0.5), "
              f"step time {new['seconds'] / old['seconds']:.2f} (target <= 0.8)")
    if "failed" not in new:
        predicted = estimate(args)
        print(f"  estimate for the new side {predicted / GIB:.2f} GiB vs measured {new['peak_bytes'] / GIB:.2f} GiB: "
              f"ratio {predicted / new['peak_bytes']:.2f} (target within 0.75–1.25)")


if __name__ == "__main__":
    main()
