"""One GRPO optimizer step: ours (sightsound.stages.grpo) vs TRL's GRPOTrainer, same tiny text-only LM.

    pip install -e '.[bench]'                     # TRL 1.16 (and `datasets`)
    python benchmarks/grpo_step.py [--prompts 4] [--group 8] [--completion-tokens 64] [--steps 3] [--rounds 2]
                                   [--phases]

The model is a tiny Qwen2ForCausalLM (hidden 128, 4 layers, the byte-level BPE tokenizer with Qwen's
special tokens and chat template from `sightsound.models.tiny`), saved to a temporary folder so that
TRL loads it by path like any checkpoint. Both sides take B prompts per step (chat-templated, the
student's CoT prompt with varying questions and options, the same prompts in the same order), sample
G completions per prompt with `model.generate` at temperature 1.0, reward them with the same plain
function, normalize advantages within groups and take one AdamW step on eq. 2 with beta=0.04
against a frozen copy of the starting model; float32, full-parameter, lr 1e-6, grad-norm clip 1.0.

Ours is `sightsound.stages.grpo.grpo_step` line for line, except that the prompts are text and are
tokenized with the tokenizer (`grpo_step` encodes each sample's audio through `models.loading.encode`, which a
text-only model has no use for). It calls the same pieces: `student.sample_groups` (rollouts, each prompt
prefilled once), `completion_mask`, `placeholder_ids`, `student.completion_logps` (old, reference and
training log-probs, each prompt computed once for its group), `rl.group_advantages`,
`rl.grpo_loss` (with its statistics), `accelerate` for backward / clipping / gathering.
TRL is `trl.GRPOTrainer(loss_type="grpo", beta=0.04, num_generations=G,
per_device_train_batch_size=B*G` (TRL counts completions, not prompts), `gradient_accumulation_steps=1,
num_iterations=1, use_vllm=False, bf16=False, use_cpu=True, shuffle_dataset=False)`. TRL defaults
to gradient checkpointing and ours does not (`gradient_checkpointing: false` is our default), so
there are two like-for-like pairs: "ours" vs "TRL" (`gradient_checkpointing=False`) and "ours
grad-ckpt" (`training.student.prepare_for_training(gradient_checkpointing=True)`, as the paper
config runs) vs "TRL grad-ckpt" (TRL's default).

Same work on both sides: every completion is exactly `--completion-tokens` long. EOS is suppressed
with `min_new_tokens = max_new_tokens` on both sides (the same `MinNewTokensLengthLogitsProcessor`),
and the media placeholders that `grpo_step` never samples are suppressed on both sides too. The mean
completion lengths are printed to show it. So both sides decode with `generate` (`sample_groups`
falls back to it for `min_new_tokens`, which its static decoder does not reproduce;
`benchmarks/rollouts.py` times that decoder against `generate`).

Time: each variant runs in its own subprocess, `--rounds` times, alternating (ours, TRL, TRL with
gradient checkpointing, ours, ...): `--warmup` steps, then `--steps` timed steps; the medians over
all timed steps are reported, as wall time and as the process's CPU time, and the fastest step's
CPU time. The build machines are shared (other jobs take cores), so each side uses `--threads 1` by
default and the CPU-time ratios are the ones to trust (contention only adds time, so the minimum is
the least disturbed); wall time is printed too. Ours times the whole `grpo_step` mirror (tokenizing,
sampling, rewards, the log-prob passes, backward, clip, AdamW, metrics); TRL's step is the span
between the Trainer's `on_step_begin` and `on_step_end` callbacks (it contains generation, rewards,
scoring, loss, backward, clip and the optimizer step; TRL's logging after the step is left out).

Peak memory: CPU has no allocator counter like `torch.cuda.max_memory_allocated`, so it is the
process's resident set. Each side runs in its own process with `MALLOC_MMAP_THRESHOLD_=131072`
(glibc then serves every tensor over 128 KiB with its own mmap and returns it on free, so RSS
follows live tensors instead of keeping freed heap). After the warm-up, the kernel's peak-RSS mark
is reset (`echo 5 > /proc/self/clear_refs`) and the RSS is read; "step peak" is VmHWM over the
timed steps minus that RSS, i.e. the most memory one step adds on top of what stays resident
(models, AdamW state). "Peak over loaded" is the same VmHWM minus the RSS right after the models
(policy + reference) were loaded: it also counts AdamW state and whatever each side keeps between
steps. Linux only.

The tiny tokenizer has 568 tokens, so the LM head is almost free here; `--vocab 32768` (or Qwen2's
151936) pads the model's vocabulary, with the padding ids suppressed in sampling on both sides, to
see how the log-prob passes and their memory scale with a realistic vocabulary.

`--phases` also prints where each side's step CPU time goes (TRL's pieces are timed by wrapping its
`_generate`, `_calculate_rewards`, `_get_per_token_logps_and_entropies` and `accelerator.backward`).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


# --- the shared pieces ----------------------------------------------------------------------------


def toy_reward(completion: str, label=None, options=None) -> float:
    """A plain reward (sightsound.rl signature) with variance inside every group even though all
    completions have the same number of tokens: byte-level BPE tokens differ in length, so the
    character count does."""
    return len(completion) / 100.0


def trl_reward(completions, **kwargs) -> list[float]:
    """The same reward as TRL calls it (conversational completions are lists of messages)."""
    return [toy_reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]


def prompt_messages(n: int) -> list[list[dict]]:
    """n user turns: the student's CoT prompt over varied questions and option lists."""
    from sightsound import prompts
    from sightsound.datasets.synth import world

    questions = ["Which object is making a sound in the audio?", "How many sound sources can be heard in the audio?",
                 "Which sound starts first in the audio?", "Is the flute louder than the drum?"]
    out = []
    for i in range(n):
        k = 2 + i % 3  # 2 to 4 options, so prompts differ in length and get left padding
        options = [world.NAMES[(i + j) % len(world.NAMES)] for j in range(k)]
        text = prompts.fill(prompts.STUDENT_PROMPT, questions[i % len(questions)], options)
        out.append([{"role": "user", "content": text}])
    return out


def build_model(out: Path, seed: int, vocab: int = 0) -> dict:
    """A tiny Qwen2ForCausalLM with the tiny tokenizer, saved as an ordinary checkpoint. With `vocab`
    larger than the tokenizer's, the embedding and LM head get that many rows (the extra ids are
    never sampled: see `suppressed_ids`), to see how the log-prob passes scale with a real vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sightsound.models import tiny

    tokenizer = tiny.build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**{**tiny._text_config(tokenizer), "vocab_size": max(vocab, len(tokenizer))}))
    tiny._set_special_ids(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"params": sum(p.numel() for p in model.parameters()), "vocab": model.config.vocab_size,
            "hidden": model.config.hidden_size, "layers": model.config.num_hidden_layers}


def suppressed_ids(tokenizer, vocab_size: int) -> list[int]:
    """Never sampled, on both sides: the media placeholders (as in `grpo_step`) and the padding rows
    of a model whose vocabulary is larger than its tokenizer's."""
    from sightsound.stages.grpo import placeholder_ids

    return placeholder_ids(tokenizer) + list(range(len(tokenizer), vocab_size))


def _memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _reset_peak() -> int:
    """Collect garbage, reset the kernel's peak-RSS mark, and return the current RSS (KiB)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _memory()["VmRSS"]


class Phases:
    """CPU time of this process per named phase, summed over the timed steps."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.on = False

    def add(self, name: str, seconds: float) -> None:
        if self.on:
            self.totals[name] = self.totals.get(name, 0.0) + seconds

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.process_time() - start)
        return wrapper


# --- ours -----------------------------------------------------------------------------------------


def run_ours(args) -> dict:
    from accelerate import Accelerator
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from sightsound import rl
    from sightsound.stages.grpo import _eos_ids, _mean_over_processes, completion_mask
    from sightsound.training.student import completion_logps, prepare_for_training, sample_groups

    torch.manual_seed(args.seed)
    accelerator = Accelerator(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # load_policy_and_reference: the reference is a frozen deep copy of the starting model (loaded a
    # second time only when the run is sharded)
    model = Qwen2ForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    policy = prepare_for_training(model.requires_grad_(True), gradient_checkpointing=args.ours_gradient_checkpointing)
    loaded_rss = _memory()["VmRSS"]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    reference.to(accelerator.device)
    messages = prompt_messages(args.prompts * (args.warmup + args.steps))
    G, phases = args.group, Phases()
    suppress = suppressed_ids(tokenizer, model.config.vocab_size)

    def step(batch: list[list[dict]], step_index: int) -> dict:
        """sightsound.stages.grpo.grpo_step with text prompts (see the module docstring)."""
        t = time.process_time()
        unwrapped = accelerator.unwrap_model(policy)
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        tokenizer.padding_side = "left"
        prompt_inputs = tokenizer(texts, padding=True, return_tensors="pt").to(accelerator.device)
        torch.manual_seed(args.seed * 1_000_003 + step_index * 97 + accelerator.process_index)
        unwrapped.eval()
        with torch.no_grad():
            output = sample_groups(unwrapped, prompt_inputs, G, do_sample=True, temperature=1.0, top_p=1.0, top_k=None,
                                   max_new_tokens=args.completion_tokens,
                                   min_new_tokens=args.completion_tokens,  # same work as TRL: no early EOS
                                   use_cache=True,
                                   pad_token_id=tokenizer.pad_token_id,
                                   suppress_tokens=suppress)
        completion_ids = output[:, prompt_inputs["input_ids"].shape[1]:]
        mask = completion_mask(completion_ids, _eos_ids(unwrapped))
        done = [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(completion_ids, mask.sum(dim=1))]
        t = _lap(phases, "generate", t)
        rewards = torch.tensor([toy_reward(c) for c in done])
        advantages = rl.group_advantages(rewards, G).to(accelerator.device)
        t = _lap(phases, "reward", t)

        policy.train()
        with torch.no_grad():
            ref_logps = completion_logps(reference, prompt_inputs, completion_ids, repeats=G)
            t = _lap(phases, "reference log-probs (no grad)", t)
        logps = completion_logps(policy, prompt_inputs, completion_ids, repeats=G)
        old_logps = logps.detach()  # as grpo_step: before the update the policy is the one that sampled
        loss, stats = rl.grpo_loss(logps, old_logps, ref_logps, advantages, mask, epsilon=0.2, beta=args.beta)
        t = _lap(phases, "policy forward + loss", t)
        accelerator.backward(loss)
        t = _lap(phases, "backward", t)
        accelerator.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        t = _lap(phases, "clip + AdamW", t)
        row = {"loss": loss.item(), "reward": float(rewards.mean()), "kl": stats["kl"],
               "clip_fraction": stats["clip_fraction"], "zero_variance_groups": rl.zero_variance_share(rewards, G),
               "completion_length": float(mask.sum(dim=1).float().mean())}
        row = _mean_over_processes(accelerator, row)
        _lap(phases, "metrics", t)
        return row

    times, cpu_times, rows, base = [], [], [], None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            base, phases.on = _reset_peak(), True
        batch = messages[i * args.prompts:(i + 1) * args.prompts]
        start, cpu = time.perf_counter(), time.process_time()
        rows.append(step(batch, i))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
        phases.add("step", cpu_times[-1])
    peak = _memory()["VmHWM"]
    timed = rows[args.warmup:]
    return {"times": times[args.warmup:], "cpu_times": cpu_times[args.warmup:], "step_peak_kib": peak - base,
            "peak_over_loaded_kib": peak - loaded_rss,
            "peak_rss_kib": peak, "completion_length": statistics.mean(r["completion_length"] for r in timed),
            "zero_variance_groups": statistics.mean(r["zero_variance_groups"] for r in timed),
            "phases": {k: v / args.steps for k, v in phases.totals.items()}}


def _lap(phases: Phases, name: str, start: float) -> float:
    now = time.process_time()
    phases.add(name, now - start)
    return now


# --- TRL ------------------------------------------------------------------------------------------


def run_trl(args) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from transformers import AutoConfig

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    vocab_size = AutoConfig.from_pretrained(args.model).vocab_size
    steps = args.warmup + args.steps
    dataset = Dataset.from_dict({"prompt": prompt_messages(args.prompts * steps)})
    config = GRPOConfig(
        output_dir=str(Path(args.result).parent / "trl"), loss_type="grpo", beta=args.beta, epsilon=0.2,
        num_generations=args.group, per_device_train_batch_size=args.prompts * args.group,  # completions per step
        gradient_accumulation_steps=1, num_iterations=1, max_completion_length=args.completion_tokens,
        temperature=1.0, top_p=1.0, learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, use_vllm=False, bf16=False, fp16=False, use_cpu=True, seed=args.seed,
        gradient_checkpointing=args.trl_gradient_checkpointing, shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": args.completion_tokens,  # same work as ours: no early EOS
                           "suppress_tokens": suppressed_ids(tokenizer, vocab_size)},
        max_steps=steps, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0)
    trainer = GRPOTrainer(model=args.model, reward_funcs=trl_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    loaded_rss = _memory()["VmRSS"]
    phases = Phases()
    trainer._generate = phases.timed("generate", trainer._generate)
    trainer._calculate_rewards = phases.timed("reward", trainer._calculate_rewards)
    scorer = trainer._get_per_token_logps_and_entropies

    def score(*a, **kw):  # no-grad calls: reference (and old, when needed); with grad: the policy forward
        name = "policy forward (+ entropy)" if torch.is_grad_enabled() else "reference/old log-probs (no grad)"
        return phases.timed(name, scorer)(*a, **kw)

    trainer._get_per_token_logps_and_entropies = score
    backward = trainer.accelerator.backward
    trainer.accelerator.backward = phases.timed("backward", backward)
    record = {"times": [], "cpu_times": [], "base": None}

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kwargs):
            if state.global_step == args.warmup:
                record["base"], phases.on = _reset_peak(), True
            record["start"], record["cpu"] = time.perf_counter(), time.process_time()

        def on_pre_optimizer_step(self, args_, state, control, **kwargs):
            record["pre_opt"] = time.process_time()

        def on_step_end(self, args_, state, control, **kwargs):
            now, cpu = time.perf_counter(), time.process_time()
            phases.add("clip + AdamW", cpu - record["pre_opt"])
            record["times"].append(now - record["start"])
            record["cpu_times"].append(cpu - record["cpu"])
            phases.add("step", cpu - record["cpu"])

    trainer.add_callback(StepTimes())
    trainer.train()
    peak = _memory()["VmHWM"]
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h][args.warmup:]
    return {"times": record["times"][args.warmup:], "cpu_times": record["cpu_times"][args.warmup:],
            "step_peak_kib": peak - record["base"],
            "peak_over_loaded_kib": peak - loaded_rss, "peak_rss_kib": peak,
            "completion_length": statistics.mean(h["completions/mean_length"] for h in logs),
            "zero_variance_groups": statistics.mean(h.get("frac_reward_zero_std", float("nan")) for h in logs),
            "gradient_checkpointing": bool(config.gradient_checkpointing), "optim": str(config.optim),
            "phases": {k: v / args.steps for k, v in phases.totals.items()}}


# --- driver ---------------------------------------------------------------------------------------


def _child(side: str, model: Path, result: Path, args, extra: list[str]) -> dict:
    command = [sys.executable, __file__, "--side", side, "--model", str(model), "--result", str(result),
               "--prompts", str(args.prompts), "--group", str(args.group),
               "--completion-tokens", str(args.completion_tokens), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--seed", str(args.seed), "--lr", str(args.lr),
               "--beta", str(args.beta), "--threads", str(args.threads), *extra]
    env = {**os.environ, **MALLOC_ENV, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"{side}: exited with {done.returncode}")
    return json.loads(result.read_text())


def _pool(runs: list[dict]) -> dict:
    """Rounds of one variant: timed steps pooled, memory the largest of the rounds."""
    phases = {}
    for run in runs:
        for k, v in run["phases"].items():
            phases[k] = phases.get(k, 0.0) + v / len(runs)
    return {"wall": statistics.median(t for r in runs for t in r["times"]),
            "cpu": statistics.median(t for r in runs for t in r["cpu_times"]),
            "cpu_min": min(t for r in runs for t in r["cpu_times"]),
            "step_peak": max(r["step_peak_kib"] for r in runs) / 1024,
            "over_loaded": max(r["peak_over_loaded_kib"] for r in runs) / 1024,
            "length": statistics.mean(r["completion_length"] for r in runs),
            "zero_var": statistics.mean(r["zero_variance_groups"] for r in runs),
            "walls": [t for r in runs for t in r["times"]], "optim": runs[0].get("optim"), "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4, help="B: prompts per step (paper: 4 per device)")
    parser.add_argument("--group", type=int, default=8, help="G: completions per prompt (paper: 8)")
    parser.add_argument("--completion-tokens", type=int, default=64, help="every completion's length")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2,
                        help="each side runs this many times, alternating (ours, TRL, ours, TRL, ...)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (1: CPU time stays meaningful on a shared machine)")
    parser.add_argument("--vocab", type=int, default=0,
                        help="the model's vocabulary (default: the tiny tokenizer's 568; Qwen2's is 151936)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--no-trl-default", action="store_true",
                        help="skip the extra TRL variant with its default gradient checkpointing")
    parser.add_argument("--phases", action="store_true", help="print where each side's step CPU time goes")
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--trl-gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ours-gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # a child: one side, results as JSON
        torch.set_num_threads(args.threads)
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        Path(args.result).write_text(json.dumps(result))
        return

    import trl

    variants = {"ours": ("ours", []), "TRL": ("trl", [])}
    if not args.no_trl_default:  # TRL's default checkpoints; ours with checkpointing on is its like-for-like
        variants["ours grad-ckpt"] = ("ours", ["--ours-gradient-checkpointing"])
        variants["TRL grad-ckpt"] = ("trl", ["--trl-gradient-checkpointing"])
    results = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = build_model(tmp / "model", args.seed, args.vocab)
        for r in range(args.rounds):
            for name, (side, extra) in variants.items():
                results[name].append(_child(side, tmp / "model", tmp / f"{side}{len(extra)}_{r}.json", args, extra))
    runs = {name: _pool(rs) for name, rs in results.items()}

    print(f"GRPO step, tiny Qwen2ForCausalLM ({info['params'] / 1e6:.2f}M params: hidden {info['hidden']}, "
          f"{info['layers']} layers, vocab {info['vocab']}), float32, CPU, {args.threads} torch thread(s); "
          f"torch {torch.__version__}, TRL {trl.__version__}")
    print(f"B={args.prompts} prompts x G={args.group} = {args.prompts * args.group} completions of "
          f"{args.completion_tokens} tokens (EOS suppressed on both sides), beta={args.beta}, lr={args.lr}; "
          f"{args.rounds} round(s) of {args.warmup} warm-up + {args.steps} timed steps per variant, medians")
    print(f"{'':18}{'wall s':>8}{'CPU s':>8}{'min CPU':>8}{'step peak MiB':>15}{'peak/loaded MiB':>17}{'mean len':>10}"
          f"{'0-var grp':>11}  wall per step (s)")
    for name, run in runs.items():
        print(f"{name:18}{run['wall']:8.3f}{run['cpu']:8.3f}{run['cpu_min']:8.3f}{run['step_peak']:15.1f}"
              f"{run['over_loaded']:17.1f}"
              f"{run['length']:10.1f}{run['zero_var']:11.2f}  " + " ".join(f"{t:.2f}" for t in run["walls"]))
    for mine in [name for name in runs if name.startswith("ours")]:
        ours = runs[mine]
        for name, run in runs.items():
            if name.startswith("TRL"):
                print(f"{mine} / {name}: wall {ours['wall'] / run['wall']:.2f}, CPU {ours['cpu'] / run['cpu']:.2f}, "
                      f"min CPU {ours['cpu_min'] / run['cpu_min']:.2f}, "
                      f"step peak {ours['step_peak'] / max(run['step_peak'], 1e-9):.2f}, "
                      f"peak/loaded {ours['over_loaded'] / max(run['over_loaded'], 1e-9):.2f}")
    print(f"(optimizer: TRL {runs['TRL']['optim']}, ours torch.optim.AdamW)")
    if args.phases:
        for name, run in runs.items():
            phases = dict(run["phases"])
            total = phases.pop("step")
            phases["other"] = total - sum(phases.values())
            print(f"{name} CPU s per step: " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
