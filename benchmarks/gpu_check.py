"""SFT (LoRA) and GRPO steps at the paper's per-device shapes on one GPU, with random weights.

    bash benchmarks/gpu_check.sh                  # on a machine with one large GPU (H100/H200: ~5 minutes)
    python benchmarks/gpu_check.py --smoke        # the same code on this CPU with a tiny model (tests run it)

Qwen2-Audio-7B-Instruct's architecture is built from its published config
(`sightsound.training.memory.KNOWN_CONFIGS`; nothing is downloaded) with random bf16 weights.
Inputs are random tokens around each clip's audio placeholders (`--audio-seconds`, 250 tokens for
AVQA's 10 s clips) and random Whisper features over the 30 s window. Then, with the project's own
training pieces (`training.student`: LoRA on the decoder, gradient checkpointing — for SFT only
where `gradient_checkpointing: auto` would turn it on, i.e. when the estimate without it passes
`training.memory.HEADROOM` of the GPU — chunked log-probs, each clip encoded once per group;
`rl.grpo_loss`):

- SFT: LoRA rank 8 on the language model, `--sft-batch` sequences (paper: 8 per GPU) of prompt +
  `--response-tokens`, loss on the response (`response_loss`, as the sft stage computes it), AdamW — `--steps` timed steps after one warm-up.
- GRPO rollouts: `sample_groups` makes exactly `--completion-tokens` tokens for each of `--prompts`
  x `--group` rows, once with transformers' `generate` and once with `--decoder` (default
  `compiled`: the static cache and CUDA graphs of `training.decoding`), each its median of `--steps`
  after a warm-up (which includes compiling). Printed in ms a token, against the memory-bound floor:
  the decoder's weights and every row's key/value cache read once per token at the copy bandwidth
  measured here (a 1 GiB device copy).
- GRPO update: full-parameter with a frozen reference copy (the paper's), the reference's and the
  policy's log-probs of those completions, eq. 2's loss, backward, AdamW. The whole step is the
  rollouts (`--decoder`) plus the update.

Printed per stage: seconds per step, tokens per second (every token the step trains on; for GRPO
each prompt once and its G completions, as scoring runs them), peak GPU memory
(`torch.cuda.max_memory_allocated`), and model FLOPs utilisation: model FLOPs per trained token — 2N forward + 2N backward through activations + 2N for weight gradients
when all weights train (N = parameters), not counting recomputation or attention — over the step
time and the GPU's dense bf16 peak (`PEAK_TFLOPS`, or `--peak-tflops`). GRPO's rollouts are not in
its MFU. `sightsound estimate`'s figures for the same shapes (one process) are
printed beside the measured peaks.
"""

from __future__ import annotations

import argparse
import time

import torch

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A40": 149.7, "L40S": 362.0, "A6000": 154.8}


def build(args):
    from transformers import Qwen2AudioForConditionalGeneration

    from sightsound.training import memory

    config = memory.model_config(args.config)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)
    return config, model


def inputs(config, args, batch: int, extra_tokens: int, generator):
    """Left-padded prompts with audio placeholders; `extra_tokens` random tokens appended to each."""
    from sightsound.training.memory import audio_tokens

    vocab = config.text_config.vocab_size
    n_audio = audio_tokens(args.audio_seconds)
    window = int(getattr(args, "window_frames", 3000))
    rows = []
    for i in range(batch):
        text = torch.randint(10, min(vocab, 150000) - 10, (args.prompt_tokens - i % 3,), generator=generator)
        rows.append(torch.cat([text[:10], torch.full((n_audio,), config.audio_token_id), text[10:]]))
    width = max(len(r) for r in rows)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = row, 1
    features = torch.randn(batch, config.audio_config.num_mel_bins, window, generator=generator)
    feature_mask = torch.zeros(batch, window, dtype=torch.long)
    feature_mask[:, : min(window, int(args.audio_seconds * 100))] = 1
    prompt = {"input_ids": ids, "attention_mask": mask, "input_features": features.to(dtype=args.dtype),
              "feature_attention_mask": feature_mask}
    extra = torch.randint(10, min(vocab, 150000) - 10, (batch, extra_tokens), generator=generator)
    return {k: v.to(args.device) for k, v in prompt.items()}, extra.to(args.device)


def peak_gib(args) -> float:
    return torch.cuda.max_memory_allocated() / 1024 ** 3 if args.device == "cuda" else float("nan")


def reset(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def mfu(flops_per_token: float, tokens: int, seconds: float, args) -> float:
    return flops_per_token * tokens / seconds / (args.peak_tflops * 1e12) if args.peak_tflops else float("nan")


def sft(args) -> dict:
    from sightsound.training.student import LoraConfig, add_lora, prepare_for_training, response_loss

    config, model = build(args)
    model = add_lora(model, LoraConfig(rank=8, alpha=16, dropout=0.05))
    model = prepare_for_training(model, gradient_checkpointing=args.sft_checkpointing)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5)
    g = torch.Generator().manual_seed(0)
    prompt, response = inputs(config, args, args.sft_batch, args.response_tokens, g)
    batch = {**prompt, "input_ids": torch.cat([prompt["input_ids"], response], 1),
             "attention_mask": torch.cat([prompt["attention_mask"], torch.ones_like(response)], 1)}
    labels = batch["input_ids"].clone()
    labels[:, : prompt["input_ids"].shape[1]] = -100
    batch["labels"] = labels
    tokens = int(batch["attention_mask"].sum())
    times = []
    for step in range(args.steps + 1):
        reset(args) if step == 1 else None
        started = time.perf_counter()
        response_loss(model, batch).backward()  # as the sft stage computes it: no [B, T, V] logits
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args)
        times.append(time.perf_counter() - started)
    seconds = sorted(times[1:])[len(times[1:]) // 2]
    n = sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "peak_gib": peak_gib(args),
            "mfu": mfu(4 * n, tokens, seconds, args), "tokens": tokens}


def bandwidth(args) -> float:
    """Bytes a second the device copies (each byte read once and written once), from a 1 GiB copy."""
    if args.device != "cuda":
        return float("nan")
    src = torch.empty(2 ** 29, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 10 * 2 * src.numel() * src.element_size() / (time.perf_counter() - started)


def floor_ms(model, args, prompt_tokens: int, rate: float) -> float:
    """The memory-bound floor of one decode step, in ms: every decoder weight a step reads (the layers
    and the LM head; not the audio encoder, and of the embedding only a row per sequence) and every
    row's key/value cache at the rollout's mean context, each read once at the measured copy rate."""
    text = model.config.text_config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    size = torch.finfo(args.dtype).bits // 8
    weights = size * sum(p.numel() for name, p in model.named_parameters()
                         if not any(part in name for part in ("audio_tower", "projector", "embed_tokens")))
    context = prompt_tokens + args.completion_tokens / 2
    cache = args.prompts * args.group * text.num_hidden_layers * 2 * heads * head_dim * context * size
    return 1e3 * (weights + cache) / rate


def rollouts(args, policy, prompt, decoder: str) -> float:
    """Median seconds of `sample_groups` making exactly `--completion-tokens` tokens per row."""
    from sightsound.training.student import sample_groups

    eos = policy.generation_config.eos_token_id
    settings = dict(do_sample=True, temperature=1.0, max_new_tokens=args.completion_tokens, use_cache=True,
                    pad_token_id=0, suppress_tokens=eos if isinstance(eos, list) else [eos])  # never ends early
    times = []
    policy.eval()
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        with torch.no_grad():
            output = sample_groups(policy, prompt, args.group, decoder=decoder, **settings)
        sync(args)
        times.append(time.perf_counter() - started)
        assert output.shape[1] == prompt["input_ids"].shape[1] + args.completion_tokens
    return sorted(times[1:])[len(times[1:]) // 2]


def grpo(args) -> dict:
    import copy

    from sightsound import rl
    from sightsound.training.student import completion_logps, prepare_for_training

    config, policy = build(args)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy = prepare_for_training(policy, gradient_checkpointing=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    prompt, completions = inputs(config, args, args.prompts * args.group, args.completion_tokens, g)
    prompt = {k: v[::args.group] for k, v in prompt.items()}  # each prompt once; its G completions below
    G, times = args.group, []
    decoders = {name: rollouts(args, policy, prompt, name) for name in dict.fromkeys(["generate", args.decoder])}
    reset(args)
    for step in range(args.steps + 1):
        reset(args) if step == 1 else None
        started = time.perf_counter()
        mask = torch.ones_like(completions)
        advantages = torch.randn(completions.shape[0], generator=g).to(args.device)
        policy.train()
        with torch.no_grad():
            ref = completion_logps(reference, prompt, completions, repeats=G)
        logps = completion_logps(policy, prompt, completions, repeats=G)
        rl.grpo_loss(logps, logps.detach(), ref, advantages, mask, epsilon=0.2, beta=0.04)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args)
        times.append(time.perf_counter() - started)
    seconds = sorted(times[1:])[len(times[1:]) // 2]
    # the tokens the scoring passes run: each prompt once for its group, then its G completions
    tokens = args.prompts * (prompt["input_ids"].shape[1] + G * args.completion_tokens)
    n = sum(p.numel() for p in policy.parameters())
    floor = floor_ms(policy, args, prompt["input_ids"].shape[1], bandwidth(args))
    return {"seconds": seconds, "rollouts": decoders, "rollout_seconds": decoders[args.decoder],
            "ms_per_token": {k: 1e3 * v / args.completion_tokens for k, v in decoders.items()}, "floor_ms": floor,
            "step_seconds": seconds + decoders[args.decoder],
            "tokens_per_s": tokens / seconds, "peak_gib": peak_gib(args), "mfu": mfu(6 * n, tokens, seconds, args),
            "tokens": tokens}


def estimates(args, checkpointing: bool = True) -> dict:
    from sightsound.training import memory
    from sightsound.training.student import LoraConfig

    config = memory.model_config(args.config)
    dtype = "float32" if args.smoke else "bfloat16"
    shapes = dict(dtype=dtype, prompt_tokens=args.prompt_tokens, audio_seconds=args.audio_seconds,
                  gradient_checkpointing=checkpointing)
    sft_counts = memory.count_parameters(config, LoraConfig(rank=8))
    grpo_counts = memory.count_parameters(config, LoraConfig(enabled=False))
    return {"sft": memory.estimate(config, sft_counts, memory.Setup(
                sequences=args.sft_batch, clips=args.sft_batch, completion_tokens=args.response_tokens,
                **shapes))["total"],
            "grpo": memory.estimate(config, grpo_counts, memory.Setup(
                stage="grpo", reference=True, sequences=args.prompts * args.group, clips=args.prompts,
                cache_kept=args.decoder == "compiled",
                completion_tokens=args.completion_tokens, **shapes))["total"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="Qwen/Qwen2-Audio-7B-Instruct",
                        help="a model id or folder (its config only)")
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    parser.add_argument("--prompt-tokens", type=int, default=120)
    parser.add_argument("--response-tokens", type=int, default=512)
    parser.add_argument("--sft-batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per stage, after one warm-up")
    parser.add_argument("--decoder", choices=["generate", "static", "compiled"],
                        help="GRPO's rollout decoder timed beside generate (default: compiled; --smoke: static)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: from its name)")
    parser.add_argument("--smoke", action="store_true", help="CPU, float32, a tiny model folder as --config")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.smoke else "cuda"
    args.dtype = torch.float32 if args.smoke else torch.bfloat16
    args.decoder = args.decoder or ("static" if args.smoke else "compiled")
    if args.smoke:
        args.window_frames = 200  # the tiny models' 2 s window
    elif not torch.cuda.is_available():
        parser.error("no CUDA GPU here; --smoke runs the same code on the CPU with a tiny model")
    if not args.peak_tflops and args.device == "cuda":
        name = torch.cuda.get_device_name()
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    # SFT checkpoints as `gradient_checkpointing: auto` would here: when the estimate without it needs
    # more than HEADROOM of the GPU (always on a CPU, to run the path the paper's GPUs take)
    from sightsound.training import memory

    args.sft_checkpointing = args.device != "cuda" or (
        estimates(args, checkpointing=False)["sft"] > memory.HEADROOM * memory.device_memory(args.device))
    results = {"sft": sft(args)}
    if args.device == "cuda":
        torch.cuda.empty_cache()
    results["grpo"] = grpo(args)
    predicted = estimates(args)
    predicted["sft"] = estimates(args, checkpointing=args.sft_checkpointing)["sft"]
    print(f"{device}; {args.config}; random weights, {'float32' if args.smoke else 'bfloat16'}; gradient checkpointing: "
          f"SFT {'on' if args.sft_checkpointing else 'off (auto: the GPU has room)'}, GRPO on")
    for stage, r in results.items():
        print(f"  {stage:4}: {r['seconds']:.2f} s a step{' (update only)' if stage == 'grpo' else ''}; "
              f"{r['tokens_per_s']:,.0f} tokens/s; peak {r['peak_gib']:.1f} GiB "
              f"(estimate {predicted[stage] / 1024 ** 3:.1f}); MFU {r['mfu']:.1%}")
    r = results["grpo"]
    speeds = ", ".join(f"{name} {ms:.1f} ms" for name, ms in r["ms_per_token"].items())
    print(f"  rollouts ({args.prompts * args.group} rows x {args.completion_tokens} tokens): {speeds} a token; "
          f"memory-bound floor {r['floor_ms']:.1f} ms ({r['ms_per_token'][args.decoder] / r['floor_ms']:.2f}x it)")
    print(f"  GRPO step, rollouts ({args.decoder}) + update: {r['step_seconds']:.2f} s")
    return results


if __name__ == "__main__":
    main()
