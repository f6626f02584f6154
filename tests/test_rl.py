"""sightsound.rl against an independent float64 restatement of the paper's eq. 2."""

import math

import pytest
import torch

from sightsound import rl


def reference_loss(logps, old, ref, adv, mask, eps, beta):
    """Eq. 2 written out with Python floats, one token at a time."""
    total = 0.0
    for i in range(len(logps)):
        terms = []
        for t in range(len(logps[i])):
            if not mask[i][t]:
                continue
            ratio = math.exp(logps[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - eps), 1 + eps)
            surrogate = min(ratio * adv[i], clipped * adv[i])
            kl = math.exp(ref[i][t] - logps[i][t]) - (ref[i][t] - logps[i][t]) - 1
            terms.append(-surrogate + beta * kl)
        total += sum(terms) / max(len(terms), 1)
    return total / len(logps)


def random_case(seed, b=6, t=7):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logps + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3  # ratios well outside the clip
    ref = logps + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.5
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).to(torch.float64)
    return logps, old, ref, adv, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eps, beta", [(0.2, 0.04), (0.1, 0.0), (0.3, 0.5)])
def test_loss_and_gradient_equal_the_float64_restatement(seed, eps, beta):
    logps, old, ref, adv, mask = random_case(seed)
    logps.requires_grad_(True)
    ours, _ = rl.grpo_loss(logps, old, ref, adv, mask, epsilon=eps, beta=beta)
    expected = reference_loss(logps.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), eps, beta)
    assert abs(float(ours.detach()) - expected) < 1e-6
    (grad,) = torch.autograd.grad(ours, logps)
    # gradient of the restatement by central differences, token by token
    h = 1e-6
    for i in range(logps.shape[0]):
        for t in range(logps.shape[1]):
            up, down = logps.detach().clone(), logps.detach().clone()
            up[i, t] += h
            down[i, t] -= h
            numeric = (reference_loss(up.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), eps, beta)
                       - reference_loss(down.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), eps, beta)) / (2 * h)
            assert abs(float(grad[i, t]) - numeric) < 1e-6, (i, t)


def test_on_policy_loss_is_minus_mean_advantage_and_kl_vanishes_at_ref():
    logps, _, _, adv, mask = random_case(0)
    loss, stats = rl.grpo_loss(logps, logps.clone(), logps.clone(), adv, mask)
    assert float(loss) == pytest.approx(-float(adv.mean()), abs=1e-12)
    assert float(rl.k3_kl(logps, logps).abs().max()) == 0.0
    assert stats == {"kl": 0.0, "clip_fraction": 0.0, "ratio": 1.0}


def test_group_advantages_unbiased_std_and_zero_groups():
    rewards = torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = rl.group_advantages(rewards, group_size=4)
    first = torch.tensor([2.0, 0.0, 1.0, 1.0])
    expected = (first - first.mean()) / (first.std(unbiased=True) + 1e-4)
    assert torch.allclose(adv[:4], expected)
    assert torch.equal(adv[4:], torch.zeros(4))
    assert rl.zero_variance_share(rewards, 4) == 0.5
    with pytest.raises(ValueError, match="groups of 3"):
        rl.group_advantages(rewards, 3)


def test_statistics_count_clipped_tokens():
    logps = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))
    old = torch.zeros(2, 2)
    _, metrics = rl.grpo_loss(logps, old, logps, torch.tensor([1.0, -1.0]), torch.ones(2, 2), epsilon=0.2)
    assert metrics["clip_fraction"] == 0.5 and metrics["kl"] == 0.0 and metrics["ratio"] == 1.0


@pytest.mark.parametrize("text, reward", [
    ("<think>the flute pulses</think><answer>B</answer>", 1.0),
    ("  <think>\nmulti\nline\n</think>\n<answer> B </answer>\n", 1.0),
    ("<answer>B</answer>", 0.0),
    ("<think>x</think>", 0.0),
    ("<think>x</think><answer></answer>", 0.0),
    ("<think>x</think><answer>B</answer> trailing words", 0.0),
    ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),
    ("<think>a <think> b</think><answer>B</answer>", 0.0),
    ("prefix <think>x</think><answer>B</answer>", 0.0),
])
def test_format_reward(text, reward):
    assert rl.format_reward(text) == reward


@pytest.mark.parametrize("text, label, options, reward", [
    ("<think>I hear a flute</think><answer>B</answer>", 1, ["drum", "flute"], 1.0),
    ("<think>x</think><answer>flute</answer>", 1, ["drum", "flute"], 1.0),
    ("<think>x</think><answer>(A)</answer>", 1, ["drum", "flute"], 0.0),
    ("<think>the answer is B</think> flute", 1, ["drum", "flute"], 0.0),  # no <answer>: no reward
    ("<think>two or maybe 3</think><answer>three</answer>", "3", [], 1.0),
    ("<think>I count 2</think><answer>three</answer>", "two", [], 0.0),  # never read from <think>
    ("<think>x</think><answer>B</answer>", None, ["drum", "flute"], 0.0),
    ("<think>x</think><answer>D</answer>", 2, ["four", "nine", "fourteen", "fourteen"], 1.0),
])
def test_accuracy_reward_reads_only_the_answer(text, label, options, reward):
    assert rl.accuracy_reward(text, label, options) == reward


def test_rewards_by_name_or_by_import_path(tmp_path, monkeypatch):
    from sightsound.config import ConfigError
    from sightsound.rl import REWARDS, reward_function

    (tmp_path / "my_rewards.py").write_text("def brevity(completion, label=None, options=None):\n"
                                            "    return -len(completion) / 100\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reward_function("format") is REWARDS["format"]
    assert reward_function("my_rewards:brevity")("<answer>B</answer>", 1, ["a", "b"]) == -0.18
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        reward_function("no_such_module:f")
    with pytest.raises(ConfigError, match="has no function 'length'"):
        reward_function("my_rewards:length")
    with pytest.raises(ConfigError, match="unknown reward 'acuracy'"):
        reward_function("acuracy")


@pytest.mark.parametrize("rewards, message", [
    ({"os:system": 1.0}, "cannot be"),  # callable, but not a reward: refused before it could run
    ({"accuracy": float("nan")}, "not a finite number"),
    ({"accuracy": "1"}, "not a finite number"),
    ({"accuracy": 1.0, "format": -1.0}, "sum to 0"),
    ({}, "must map reward names"),
])
def test_rewards_are_checked_before_a_run_touches_anything(rewards, message):
    from sightsound.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        rl.check_rewards(rewards)


def test_grpo_refuses_bad_rewards_before_clearing_its_previous_output(tmp_path):
    from sightsound.config import ConfigError
    from sightsound.stages import grpo

    previous = tmp_path / "grpo" / "final"
    previous.mkdir(parents=True)
    (previous / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="os:system"):
        grpo.main(grpo.GRPOConfig(out=str(tmp_path), rewards={"os:system": 1}))
    assert (previous / "model.safetensors").read_bytes() == b"weights"
