"""GRPO math and rewards, as pure functions (paper §3.3, eq. 2; docs/architecture.md says what decides correctness).

    rewards = torch.tensor([weights[k] * REWARDS[k](text, label, options) for ...])   # [B*G]
    advantages = group_advantages(rewards, group_size=8)                               # [B*G]
    loss, stats = grpo_loss(logps, old_logps, ref_logps, advantages, mask, epsilon=0.2, beta=0.04)  # stats: kl, clip share

Shapes: `logps`, `old_logps`, `ref_logps` and `mask` are [B*G, T] over completion tokens (the
mask runs through the first EOS); `advantages` is [B*G]. A reward is a plain function
`(completion, label, options) -> float`; add one to `REWARDS` and weight it by name in YAML, or
name your own by import path (`reward_function`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re

import torch

from sightsound import answers
from sightsound.config import ConfigError


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each consecutive group of `group_size` (unbiased std, as TRL
    and R1-AQA). A group whose rewards are all equal gets zeros: it moves the policy only via KL."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.view(-1, group_size)  # [B, G]
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((groups - mean) / (std + eps)).view(-1)


def zero_variance_share(rewards: torch.Tensor, group_size: int) -> float:
    """The share of groups whose rewards are all equal (they carry no policy-gradient signal)."""
    groups = rewards.view(-1, group_size)
    return float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, epsilon: float = 0.2,
              beta: float = 0.04) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 2 as a loss to minimize: per token -min(ratio*A, clip(ratio, 1-eps, 1+eps)*A)
    + beta * (exp(ref - logp) - (ref - logp) - 1), averaged over each sequence's completion
    tokens, then over sequences. Returned with its statistics over completion tokens, computed
    from the same ratio and KL (as torchtune's GRPO loss does): `kl` to the reference,
    `clip_fraction` (the tokens whose ratio the clip held back) and the mean `ratio`."""
    ratio = torch.exp(logps - old_logps)  # [B*G, T]
    adv = advantages.unsqueeze(1)  # [B*G, 1]
    kl = k3_kl(logps, ref_logps)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    if beta:
        per_token = per_token + beta * kl
    weights = mask.to(per_token.dtype)
    per_sequence = (per_token * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # [B*G]
    return per_sequence.mean(), _statistics(ratio.detach(), kl.detach(), adv.expand_as(ratio), mask.bool(), epsilon)


def _statistics(ratio, kl, adv, mask, epsilon) -> dict[str, float]:
    if not mask.any():
        return {"kl": 0.0, "clip_fraction": 0.0, "ratio": 1.0}
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    return {"kl": float(kl[mask].mean()), "clip_fraction": float(clipped[mask].float().mean()),
            "ratio": float(ratio[mask].mean())}


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The per-token estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


# --- rewards ----------------------------------------------------------------------------------------

_FORMAT = re.compile(r"\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*"
                     r"<answer>(?:(?!</?think>|</?answer>).)*\S(?:(?!</?think>|</?answer>).)*</answer>\s*",
                     re.DOTALL)


def format_reward(completion: str, label=None, options=None) -> float:
    """1 when the whole completion is <think>…</think><answer>…</answer> (a non-empty answer, no
    nested or repeated tags), else 0."""
    return 1.0 if _FORMAT.fullmatch(completion) else 0.0


def accuracy_reward(completion: str, label, options) -> float:
    """1 when the answer inside <answer> equals the label (the teacher's): an option index for
    multiple choice (by letter or option text), a word for open-ended questions. No <answer>, no
    reward: answers are never read from the <think> text. The embedding fallback of evaluation is
    off here, so a reward is only paid for an answer that names its option."""
    if label is None or not answers.has_answer_block(completion):
        return 0.0
    # options are compared by text: either copy of a repeated option (MMAU has some) is right
    _, correct = answers.is_correct(completion, {"options": options, "answer": label if options else str(label)},
                                    similarity_threshold=None)
    return 1.0 if correct else 0.0


REWARDS = {"accuracy": accuracy_reward, "format": format_reward}
DEFAULT_REWARDS = {"accuracy": 1.0, "format": 1.0}  # name → weight: what `grpo.rewards` is unless set


def reward_function(name: str):
    """A reward by its name in REWARDS, or a user's own by import path, `package.module:function`
    (same signature as the built-ins), so that `rewards: {accuracy: 1.0, "mypkg.rewards:brevity": 0.1}`
    needs no fork."""
    if name in REWARDS:
        return REWARDS[name]
    module_name, colon, attribute = name.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"unknown reward {name!r}: not one of {', '.join(REWARDS)}, nor an import path "
                          "'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"reward {name!r}: cannot import module {module_name!r} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"reward {name!r}: module {module_name!r} has no function {attribute!r}")
    try:
        inspect.signature(function).bind("<answer>A</answer>", 0, ["a", "b"])
    except (TypeError, ValueError):
        raise ConfigError(f"reward {name!r}: a reward is called as f(completion, label, options) -> float; "
                          f"{module_name}.{attribute} cannot be") from None
    return function


def check_rewards(rewards: dict) -> dict:
    """{name: function} for a stage's `rewards` (name → weight), checked before anything is touched:
    each resolves with the reward signature, each weight is a finite number, and they do not sum to 0."""
    if not isinstance(rewards, dict) or not rewards:
        raise ConfigError(f"rewards must map reward names to weights, not {rewards!r}")
    for name, weight in rewards.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"reward {name!r}: weight {weight!r} is not a finite number")
    if sum(rewards.values()) == 0:
        raise ConfigError(f"reward weights {rewards} sum to 0: every completion would score the same")
    return {name: reward_function(name) for name in rewards}
