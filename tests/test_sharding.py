"""Full-parameter GRPO sharded with FSDP2 over two CPU processes (gloo, loopback), launched with the
project's own configs/accelerate/fsdp.yaml: the policy, its optimizer state and the frozen reference
each hold half of every weight on each process, generation runs on the sharded policy, and the
reference's log-probs, the policy's, the loss and the updated weights equal a one-process run's.

accelerate 1.x enters FSDP only on accelerators (`AcceleratorState` keeps MULTI_CPU on a CPU, and
drops the FSDP plugin), so the launcher below sets the state accelerate sets on a GPU, from the
same plugin (built from the FSDP_* variables `accelerate launch` exports for the config); from
there on everything is accelerate's FSDP2 code and this project's (`training.sharding`).
"""

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sightsound.manifest import read_manifest
from sightsound.models.loading import load_model
from sightsound.store import read_jsonl
from tests.test_multiprocess import free_port
from tests.test_training import toy_run  # noqa: F401  (the fixture: 16 samples, CoT traces, unanimous labels)

ROOT = Path(__file__).resolve().parents[1]
FSDP = ROOT / "configs" / "accelerate" / "fsdp.yaml"

ON_CPU = '''
import os

import accelerate
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

original = accelerate.Accelerator.__init__


def __init__(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" and self.distributed_type == DistributedType.MULTI_CPU:
        AcceleratorState().fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables
        for state in (PartialState(), AcceleratorState()):  # each AcceleratorState() copies PartialState's
            state.distributed_type = DistributedType.FSDP


accelerate.Accelerator.__init__ = __init__
'''

STEP = ON_CPU + '''
import json
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from sightsound.stages import grpo
from sightsound.training import sharding
from sightsound.training.student import LoraConfig, completion_logps

run, model, out = map(Path, sys.argv[1:4])
accelerator = Accelerator()
rank = accelerator.process_index
# top_k 1: every process (whatever its seed) and the one-process run roll out the same tokens
cfg = grpo.GRPOConfig(out=str(run), model=str(model), lora=LoraConfig(enabled=False), group_size=2,
                      prompts_per_step=2, max_completion_tokens=6, top_k=1, lr=1e-3, beta=0.1, updates_per_batch=2,
                      progress=False)  # the second update moves the policy away from the reference: KL > 0
items, _ = grpo.load_prompts(run)
batch = items[:cfg.prompts_per_step]  # the same batch on every process: FSDP's mean of gradients is this batch's
policy, reference, processor, optimizer, trainable = grpo.prepare_models(cfg, accelerator, batch)
shards = {name: [list(p.to_local().shape), list(p.shape)] for name, p in policy.named_parameters()
          if hasattr(p, "to_local")}
reference_shards = sum(hasattr(p, "to_local") for p in reference.parameters())
prompt_inputs, completion_ids, mask, texts = grpo.rollout(accelerator, policy, processor, batch, cfg, step=0)
with torch.no_grad():
    ref_logps = grpo._reference_logps(policy, accelerator.unwrap_model(policy), reference, prompt_inputs,
                                      completion_ids, cfg.group_size)
    logps = completion_logps(policy, prompt_inputs, completion_ids, repeats=cfg.group_size)
advantages = torch.tensor([1.0, -0.5, 0.25, 0.75])  # not summing to 0: a nonzero loss
losses, stats = grpo.update(accelerator, policy, reference, optimizer, trainable, cfg, prompt_inputs,
                            completion_ids, advantages, mask)
moments = [v for st in optimizer.state.values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq")]
weights = accelerator.get_state_dict(policy)  # gathered from the shards on every process
if accelerator.is_main_process:
    torch.save({"completions": completion_ids, "ref_logps": ref_logps, "logps": logps, "weights": weights},
               out / "tensors.pt")
(out / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
    "losses": losses, "kl": stats["kl"], "texts": texts, "shards": shards, "reference_shards": reference_shards,
    "reference_parameters": sum(1 for _ in reference.parameters()),
    "optimizer_moments": len(moments), "sharded_moments": sum(hasattr(v, "to_local") for v in moments)}))
'''


def launch(tmp_path: Path, script: str, args: list[str]) -> subprocess.CompletedProcess:
    """`script ARGS` on two CPU processes, under configs/accelerate/fsdp.yaml (full precision)."""
    path = tmp_path / f"script-{free_port()}.py"
    path.write_text(script)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", str(free_port()), str(path), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done


@pytest.fixture(scope="module")
def sharded_and_whole(toy_run, tiny_models, tmp_path_factory):  # noqa: F811
    """One GRPO update of the tiny student: on two FSDP2 processes, and in one plain process."""
    runs = {}
    for name in ("sharded", "whole"):
        out = tmp_path_factory.mktemp(name)
        args = [str(toy_run), str(tiny_models["student"]), str(out)]
        if name == "sharded":
            launch(out, STEP, args)
        else:
            script = out / "step.py"
            script.write_text(STEP)
            done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert done.returncode == 0, done.stderr[-6000:]
        ranks = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
        runs[name] = {"ranks": ranks, **torch.load(out / "tensors.pt")}
    return runs


def test_fsdp2_shards_the_policy_and_the_reference(sharded_and_whole):
    ranks = sharded_and_whole["sharded"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["processes"] == 2 for r in ranks)
    assert all(r["distributed_type"].endswith("FSDP") for r in ranks)
    first, second = (r["shards"] for r in ranks)
    assert first and first.keys() == second.keys(), "the policy's parameters are not sharded"
    for name, (local, whole) in first.items():  # each process holds its part of every weight's first dimension
        assert local[0] + second[name][0][0] == whole[0] and local[1:] == whole[1:], name
    assert sum(local[0] < whole[0] for local, whole in first.values()) > 0.9 * len(first)
    for r in ranks:
        assert r["reference_shards"] == r["reference_parameters"] > 0  # the reference too, all of it
        assert r["sharded_moments"] == r["optimizer_moments"] == 2 * len(first)  # and AdamW's state
    assert sharded_and_whole["whole"]["ranks"][0]["shards"] == {}  # one process: nothing is sharded


def test_sharded_grpo_equals_the_one_process_run(sharded_and_whole, tiny_models):
    tiny_student = tiny_models["student"]
    sharded, whole = sharded_and_whole["sharded"], sharded_and_whole["whole"]
    # generation from the sharded policy: the same tokens on both processes and in one process
    assert torch.equal(sharded["completions"], whole["completions"])
    assert sharded["ranks"][0]["texts"] == sharded["ranks"][1]["texts"] == whole["ranks"][0]["texts"]
    torch.testing.assert_close(sharded["ref_logps"], whole["ref_logps"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sharded["logps"], whole["logps"], rtol=1e-5, atol=1e-6)
    for r in sharded["ranks"]:
        assert r["losses"] == pytest.approx(whole["ranks"][0]["losses"], rel=1e-5)
        assert r["kl"] == pytest.approx(whole["ranks"][0]["kl"], rel=1e-4) and r["kl"] > 0
    assert sharded["weights"].keys() == whole["weights"].keys()
    for name, value in whole["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    initial, _ = load_model(tiny_student)
    moved = [n for n, p in initial.state_dict().items() if not torch.equal(p, whole["weights"][n])]
    assert len(moved) > 0.5 * len(whole["weights"])  # the update changed the weights being compared


STAGE = ON_CPU + '''
import sys

from sightsound import cli, rl

# The untrained tiny student never writes the answer format: with only the accuracy and format
# rewards every advantage would be 0. This reward varies within a group from the first step.
rl.REWARDS["length"] = lambda completion, label, options: len(completion) / 100
sys.exit(cli.main(sys.argv[1:]))
'''


def test_the_grpo_stage_trains_sharded_saves_whole_weights_and_resumes(toy_run, tiny_models, tmp_path):  # noqa: F811
    """`sightsound grpo` on two FSDP2 processes: the saved model is whole and loads as any other,
    and a run stopped after its first checkpoint resumes (sharded state, optimizer included) to
    the weights of the run that was not stopped."""
    args = ["grpo", "--out", None, f"model={tiny_models['student']}", "steps=2", "group_size=3", "prompts_per_step=1",
            "lr=1e-3", "max_completion_tokens=8", "save_every=1", "progress=false", "lora.enabled=false",
            "rewards={length: 1.0, format: 1.0}"]
    finals = {}
    for name in ("whole", "cut"):
        run = tmp_path / name
        shutil.copytree(toy_run, run)
        launch(tmp_path, STAGE, [str(run) if a is None else a for a in args])
        finals[name] = run
    cut = finals["cut"]
    shutil.rmtree(cut / "grpo" / "checkpoint-2")  # as if stopped after the first checkpoint
    shutil.rmtree(cut / "grpo" / "final")
    (cut / "manifests" / "grpo.json").unlink()
    done = launch(tmp_path, STAGE, [str(cut) if a is None else a for a in args])
    assert "resuming from" in done.stdout + done.stderr

    rows = list(read_jsonl(cut / "grpo" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["kl"] > 0
    assert read_manifest(cut, "grpo")["counts"]["steps"] == 2
    initial, _ = load_model(tiny_models["student"])
    whole, _ = load_model(finals["whole"] / "grpo" / "final")
    resumed, _ = load_model(cut / "grpo" / "final")
    initial, whole, resumed = (dict(m.named_parameters()) for m in (initial, whole, resumed))
    assert whole.keys() == initial.keys() == resumed.keys()  # every weight, gathered from its shards
    assert any(not torch.equal(whole[k], initial[k]) for k in whole)
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_sharded_run_refuses_validation_and_lora_before_loading_anything():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from sightsound.config import ConfigError
    from sightsound.stages.grpo import GRPOConfig
    from sightsound.training import sharding
    from sightsound.training.student import LoraConfig

    def accelerator(kind):
        return SimpleNamespace(distributed_type=kind, num_processes=2, state=SimpleNamespace(deepspeed_plugin=None))

    fsdp, ddp = accelerator(DistributedType.FSDP), accelerator(DistributedType.MULTI_GPU)
    full = GRPOConfig(lora=LoraConfig(enabled=False))
    sharding.check(full, fsdp)
    with pytest.raises(ConfigError, match="grpo.val_samples.*sharded model \\(fsdp\\)"):
        sharding.check(GRPOConfig(lora=LoraConfig(enabled=False), val_samples="val/samples.jsonl"), fsdp)
    with pytest.raises(ConfigError, match="grpo.lora.*ddp.yaml"):
        sharding.check(GRPOConfig(lora=LoraConfig(enabled=True)), fsdp)
    sharding.check(GRPOConfig(lora=LoraConfig(enabled=True), val_samples="val/samples.jsonl"), ddp)
    assert sharding.generation_kwargs(fsdp) == {"synced_gpus": True} and sharding.generation_kwargs(ddp) == {}
