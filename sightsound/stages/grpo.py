"""grpo: GRPO from the SFT student, rewarded against the teacher's labels (paper §3.3 eq. 2, §4.1).

    sightsound grpo --config configs/sightsound-r1.yaml       # paper: G=8, lr 1e-6, T=1.0, beta 0.04, ≤1000 steps

Each step samples `group_size` completions for each of `prompts_per_step` unanimous samples (the
student's prompt, `prompts.student_turn`, with that sample's audio), scores them with the weighted
`rewards` (`sightsound.rl.REWARDS`, or your own by import path), normalizes advantages within each
group and minimizes eq. 2 (`rl.grpo_loss`, which returns the loss and its statistics): the clipped
ratio plus beta times the k3 KL to the frozen SFT model. Writes `RUN_DIR/grpo/` (`subdir`) through
the loop SFT uses (`sightsound.training.loop`); `sightsound estimate CONFIG` sizes its memory.
Details: docs/reference.md, "sightsound/stages/grpo.py".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sightsound import formats, prompts, rl
from sightsound.config import ConfigError
from sightsound.manifest import model_inputs
from sightsound.models.families import placeholder_ids
from sightsound.models.loading import encode, load_model
from sightsound.records import Consensus, Sample
from sightsound.rundir import RunDir
from sightsound.store import JsonlWriter, read_jsonl, sha256_file
from sightsound.training import memory, sharding
from sightsound.training.loop import TrainingConfig, checkpointing, finish_training, open_training, train
from sightsound.training.student import DECODERS, LoraConfig, add_lora, completion_logps, prepare_for_training, sample_groups


@dataclass
class GRPOConfig(TrainingConfig):
    out: str = "runs/demo"  # the run directory (its samples and consensus)
    model: str = "runs/demo/sft/final"  # the SFT student: an adapter or a full folder
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(enabled=False))  # paper: full-parameter
    rewards: dict[str, float] = field(default_factory=lambda: dict(rl.DEFAULT_REWARDS))
    group_size: int = 8  # G (paper: 8)
    prompts_per_step: int = 4  # per device (paper: 4 prompts x 8 completions on each of 6 GPUs)
    lr: float = 1e-6  # paper
    steps: int = 1000  # paper: up to 1000
    temperature: float = 1.0  # paper
    top_p: float = 1.0
    top_k: int = 0  # 0: the whole distribution, as the paper's vLLM rollouts sample (left unset, generate's is 50)
    max_completion_tokens: int = 256
    decoder: str = "auto"  # rollouts: generate | static | compiled (static cache + CUDA graphs); auto: compiled on a GPU, else static
    epsilon: float = 0.2  # the clip range; not stated in the paper (TRL's default)
    beta: float = 0.04  # paper
    updates_per_batch: int = 1  # optimizer steps on each batch of completions (1: ratio = 1 at the step)
    log_completions_every: int = 10  # completions.jsonl (each completion, reward, advantage) every N steps; 0: never
    log_every: int = 1
    save_every: int = 100
    val_every: int = 100
    subdir: str = "grpo"  # the folder inside the run directory it trains into (a plain name)

    def __post_init__(self):
        super().__post_init__()
        if self.top_k < 0:
            raise ConfigError(f"grpo.top_k is 0 (the whole distribution) or a number of tokens, not {self.top_k}")
        if self.decoder not in ("auto", *DECODERS):
            raise ConfigError(f"grpo.decoder must be one of auto, {', '.join(DECODERS)}, not {self.decoder!r}")


def main(cfg: GRPOConfig) -> dict:
    rl.check_rewards(cfg.rewards)  # every reward resolves and every weight is sane before anything is touched
    run_dir = Path(cfg.out)
    items, inputs = load_prompts(run_dir)
    accelerator, stage = open_training(run_dir, cfg, inputs | model_inputs(cfg.model),
                                      micro_batch=cfg.prompts_per_step * cfg.group_size)
    if stage.done:
        return stage.manifest

    policy, reference, processor, optimizer, trainable = prepare_models(cfg, accelerator, items)
    every = cfg.log_completions_every
    completions = (JsonlWriter(RunDir(run_dir).training(cfg.subdir).completions, id_of=lambda r: r["id"])
                   if every and accelerator.is_main_process else None)

    def step(next_batch, number: int) -> dict:
        batch = [items[i] for i in next_batch()]
        log = completions if completions is not None and (number + 1) % every == 0 else None
        return grpo_step(accelerator, policy, reference, processor, optimizer, trainable, batch, cfg, number, log)

    # With LoRA GRPO the adapter sits on the SFT model merged in memory: the saved models are merged,
    # so they load as they were trained, and the adapter is beside (PEFT loads it on that model).
    state = train(accelerator, stage, cfg, policy, processor, step, name="grpo", items=len(items),
                  batch_size=cfg.prompts_per_step, val_method="zero_shot_cot",
                  merged_from=cfg.model if cfg.lora.enabled else None,
                  show={"reward": ".3f", "kl": ".4f"})
    if completions is not None:
        completions.close()
    if not accelerator.is_main_process:
        return {}
    manifest = finish_training(stage, cfg, state, "reward", {"prompts": len(items)})
    c = manifest["counts"]
    print(f"grpo: {state['step']} steps; reward {c['first_reward']:.3f} → {c['last_reward']:.3f} → {run_dir / cfg.subdir}")
    return manifest


def load_prompts(run_dir: Path) -> tuple[list[tuple[Sample, object]], dict]:
    """(sample, teacher label) for every unanimous sample, and the hashes of the files read."""
    run = RunDir(run_dir)
    if not run.consensus.exists():
        raise FileNotFoundError(f"{run.consensus}: not found; run `sightsound teach` first")
    samples = {s.id: s for s in read_jsonl(run.samples, Sample)}
    items = [(samples[r.id], r.label) for r in read_jsonl(run.consensus, Consensus) if r.unanimous]
    if not items:
        raise ValueError(f"{run.consensus}: no unanimous samples to train on")
    return items, {str(path): sha256_file(path) for path in (run.samples, run.consensus)}


def prepare_models(cfg: GRPOConfig, accelerator, items: list):
    """(policy, reference, processor, optimizer, trainable parameters), prepared by accelerate (the
    policy and its optimizer) and `sharding.prepare_reference` (the reference, when there is one)."""
    policy, reference, processor = load_policy_and_reference(cfg, accelerator, items)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    trainable = [p for p in policy.parameters() if p.requires_grad]  # FSDP2 has replaced them with their shards
    if reference is not None:
        reference = sharding.prepare_reference(accelerator, reference)
    return policy, reference, processor, optimizer, trainable


def load_policy_and_reference(cfg: GRPOConfig, accelerator, items: list):
    """The policy starts as the SFT model (an SFT adapter is merged into its base first). The
    reference is that same model (frozen by `sharding.prepare_reference`): a copy (loaded again
    when the run is sharded: a copy of a model ZeRO-3 partitioned as it loaded would not be one),
    or — with LoRA GRPO — the policy with its new adapter disabled (no second copy in memory)."""
    model, processor = _load_start(cfg)
    recompute = checkpointing("grpo", cfg, accelerator, lambda: memory.shapes_of(
        processor, [prompts.student_turn(sample, "zero_shot_cot", cfg.answer) for sample, _ in items],
        [cfg.max_completion_tokens] * len(items)))
    if cfg.lora.enabled:
        return prepare_for_training(add_lora(model, cfg.lora), recompute, cfg.freeze), None, processor
    reference = _load_start(cfg)[0] if sharding.is_sharded(accelerator) else copy.deepcopy(model)
    return prepare_for_training(model.requires_grad_(True), recompute, cfg.freeze), reference, processor


def _load_start(cfg: GRPOConfig):
    """The SFT model GRPO starts from, an SFT adapter merged into its base."""
    model, processor = load_model(cfg.model, cfg.dtype, training=True)
    return (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model), processor


def grpo_step(accelerator, policy, reference, processor, optimizer, trainable, batch, cfg: GRPOConfig,
              step: int, completions_log=None) -> dict:
    """Sample G completions per prompt, reward them, and take `updates_per_batch` optimizer steps;
    `completions_log` (a JsonlWriter) gets this process's completions with their rewards and advantages."""
    G = cfg.group_size
    prompt_inputs, completion_ids, mask, texts = rollout(accelerator, policy, processor, batch, cfg, step)
    labels = [label for _, label in batch for _ in range(G)]  # completion i answers prompt i // G
    options = [sample.options for sample, _ in batch for _ in range(G)]
    functions = {name: rl.reward_function(name) for name in cfg.rewards}
    components = {name: torch.tensor([functions[name](t, lab, opt) for t, lab, opt in zip(texts, labels, options)])
                  for name in cfg.rewards}
    rewards = sum(cfg.rewards[name] * values for name, values in components.items())  # [B*G]
    advantages = rl.group_advantages(rewards, G).to(accelerator.device)
    if completions_log is not None:
        for i, text in enumerate(texts):
            sample = batch[i // G][0]
            completions_log.write({"id": f"{step + 1}:{sample.id}:{i % G}", "step": step + 1, "prompt_id": sample.id,
                                   "label": labels[i], "completion": text,
                                   "rewards": {name: float(values[i]) for name, values in components.items()},
                                   "reward": float(rewards[i]), "advantage": float(advantages[i])})
    losses, stats = update(accelerator, policy, reference, optimizer, trainable, cfg,
                           prompt_inputs, completion_ids, advantages, mask)
    row = {"loss": sum(losses) / len(losses), "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
           **{f"reward_{name}": float(values.mean()) for name, values in components.items()},
           "kl": stats["kl"], "clip_fraction": stats["clip_fraction"],
           "zero_variance_groups": rl.zero_variance_share(rewards, G),
           "completion_length": float(mask.sum(dim=1).float().mean())}
    if "accuracy" not in components:  # agreement with the teacher is logged even when not rewarded
        row["reward_accuracy"] = sum(map(rl.accuracy_reward, texts, labels, options)) / len(texts)
    return _mean_over_processes(accelerator, row)


def rollout(accelerator, policy, processor, batch, cfg: GRPOConfig, step: int):
    """G sampled completions per prompt, each with its prompt's audio: (the prompts' inputs, the
    completions' ids [B*G, T], their mask through the first EOS [B*G, T], their texts)."""
    unwrapped = accelerator.unwrap_model(policy)
    turns = [prompts.student_turn(sample, "zero_shot_cot", cfg.answer) for sample, _ in batch]
    prompt_inputs = encode(processor, turns, "left").to(accelerator.device)
    torch.manual_seed(cfg.seed * 1_000_003 + step * 97 + accelerator.process_index)
    unwrapped.eval()
    with torch.no_grad():
        # A sampled media placeholder (<|AUDIO|>, ...) would make the scoring forward expect media
        # it does not have, so such tokens are never sampled.
        output = sample_groups(unwrapped, prompt_inputs, cfg.group_size, decoder=rollout_decoder(cfg, accelerator),
                               do_sample=True, temperature=cfg.temperature,
                               top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_completion_tokens,
                               use_cache=True,  # prepare_for_training turned the config's off for training
                               pad_token_id=processor.tokenizer.pad_token_id,
                               suppress_tokens=placeholder_ids(processor.tokenizer),
                               **sharding.generation_kwargs(accelerator))
    completion_ids = output[:, prompt_inputs["input_ids"].shape[1]:]  # [B*G, T]
    mask = completion_mask(completion_ids, _eos_ids(unwrapped))  # [B*G, T]
    texts = [processor.tokenizer.decode(ids[:n], skip_special_tokens=True)
             for ids, n in zip(completion_ids, mask.sum(dim=1))]
    return prompt_inputs, completion_ids, mask, texts


def rollout_decoder(cfg: GRPOConfig, accelerator) -> str:
    """How rollouts decode: `cfg.decoder`, where "auto" is "compiled" on a CUDA device and "static"
    elsewhere (on this project's 2-core CPUs, 0.90–0.97x generate's time, `benchmarks/rollouts.py`).
    A policy sharded across processes (DeepSpeed ZeRO-3, FSDP) decodes with `generate`, which
    gathers each layer as it reaches it and keeps the ranks stepping together."""
    sharded = sharding.is_sharded(accelerator)
    if sharded and cfg.decoder in ("static", "compiled"):
        raise ConfigError(f"grpo.decoder: {cfg.decoder} decodes on whole weights; this policy is sharded "
                          f"({memory.launcher_of_accelerator(accelerator)[0]}), so set grpo.decoder: auto or generate")
    if sharded:
        return "generate"
    if cfg.decoder == "auto":
        return "compiled" if accelerator.device.type == "cuda" else "static"
    return cfg.decoder


def update(accelerator, policy, reference, optimizer, trainable, cfg: GRPOConfig, prompt_inputs, completion_ids,
           advantages, mask) -> tuple[list[float], dict]:
    """`updates_per_batch` optimizer steps on eq. 2; the losses, and the last step's statistics."""
    G = cfg.group_size
    policy.train()
    with torch.no_grad():
        ref_logps = None if cfg.beta == 0 else _reference_logps(policy, accelerator.unwrap_model(policy), reference,
                                                                prompt_inputs, completion_ids, G)
    old_logps, losses = None, []
    for _ in range(cfg.updates_per_batch):
        logps = completion_logps(policy, prompt_inputs, completion_ids, repeats=G)  # [B*G, T], with grad
        if old_logps is None:  # before the first update the policy is the one that sampled: no extra pass
            old_logps = logps.detach()
            ref_logps = old_logps if ref_logps is None else ref_logps  # beta = 0: the KL term is off anyway
        loss, stats = rl.grpo_loss(logps, old_logps, ref_logps, advantages, mask, epsilon=cfg.epsilon, beta=cfg.beta)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, stats


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 for every completion token up to and including the first EOS, 0 after it."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))  # [N, T]
    after_first = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # tokens that follow an EOS
    return (~after_first).long()


def _eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return eos if isinstance(eos, list) else [eos]


def _reference_logps(policy, unwrapped, reference, prompt_inputs, completion_ids, G):
    """The frozen reference's log-probs (`unwrapped` is the policy without its DDP/DeepSpeed wrapper)."""
    if reference is not None:
        return completion_logps(reference, prompt_inputs, completion_ids, repeats=G)
    with unwrapped.disable_adapter():  # LoRA GRPO: the SFT model is the policy without its new adapter
        return completion_logps(policy, prompt_inputs, completion_ids, repeats=G)


def _mean_over_processes(accelerator, row: dict) -> dict:
    values = torch.tensor(list(row.values()), dtype=torch.float64, device=accelerator.device)
    return dict(zip(row, accelerator.gather(values).view(-1, len(row)).mean(dim=0).tolist()))


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    text = (f"{c.get('prompts')} prompts, {c.get('steps')} steps, "
            f"reward {formats.num(c.get('first_reward'), 3)} → {formats.num(c.get('last_reward'), 3)}")
    return text + formats.best_val(c)
