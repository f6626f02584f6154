"""Full-parameter GRPO sharded over two CPU processes (gloo, loopback), launched with the
project's own accelerate configs — FSDP2 (configs/accelerate/fsdp.yaml), DeepSpeed ZeRO-3
(zero3.yaml) and ZeRO-3 with AdamW in CPU memory (zero3-offload.yaml, the paper config's GRPO
launcher): the policy, its optimizer state and the frozen reference each
hold about half of every weight on each process, generation runs on the sharded policy, and the
reference's log-probs, the policy's, the loss and the updated weights equal a one-process run's.

accelerate 1.x enters FSDP and DeepSpeed only on accelerators (`AcceleratorState` keeps MULTI_CPU
on a CPU and drops the plugin), so the launcher below sets the state accelerate sets on a GPU,
from the same plugin (built from the FSDP_* / ACCELERATE_DEEPSPEED_* variables `accelerate launch`
exports for the config); from there on everything is accelerate's, DeepSpeed's or PyTorch's code
and this project's (`training.sharding`). The ZeRO-3 tests need DeepSpeed, which `make install`
puts in the venv (`DS_BUILD_OPS=0`: no compiled ops, DeepSpeed's CPU accelerator).
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
from tests.test_multiprocess import cpu_ranks_env, free_port
from tests.test_training import toy_run  # noqa: F401  (the fixture: 16 samples, CoT traces, unanimous labels)

ROOT = Path(__file__).resolve().parents[1]

ON_CPU = '''
import os

import accelerate
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

original = accelerate.Accelerator.__init__


def __init__(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if self.distributed_type != DistributedType.MULTI_CPU:
        return
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        AcceleratorState().fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables
        kind = DistributedType.FSDP
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        plugin = DeepSpeedPlugin()  # from the ACCELERATE_DEEPSPEED_* variables
        plugin.set_mixed_precision(AcceleratorState().mixed_precision)
        plugin.select(_from_accelerator_state=True)
        AcceleratorState().deepspeed_plugins = {"default": plugin}
        kind = DistributedType.DEEPSPEED
    else:
        return
    for state in (PartialState(), AcceleratorState()):  # each AcceleratorState() copies PartialState's
        state.distributed_type = kind


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
sharding.tell_deepspeed(accelerator, 4)  # as open_training does
rank = accelerator.process_index
# top_k 1: every process (whatever its seed) and the one-process run roll out the same tokens
cfg = grpo.GRPOConfig(out=str(run), model=str(model), lora=LoraConfig(enabled=False), group_size=2,
                      prompts_per_step=2, max_completion_tokens=6, top_k=1, lr=1e-3, beta=0.1, updates_per_batch=2,
                      progress=False)  # the second update moves the policy away from the reference: KL > 0
items, _ = grpo.load_prompts(run)
batch = items[:cfg.prompts_per_step]  # the same batch on every process: FSDP's mean of gradients is this batch's
policy, reference, processor, optimizer, trainable = grpo.prepare_models(cfg, accelerator, batch)


def numel(p):  # (elements held on this process, elements of the whole tensor)
    if hasattr(p, "to_local"):  # FSDP2's DTensor
        return [p.to_local().numel(), p.numel()]
    if hasattr(p, "ds_tensor"):  # DeepSpeed ZeRO-3's partitioned parameter
        return [p.ds_tensor.numel(), p.ds_numel]
    return [p.numel(), p.numel()]


shards = {name: numel(p) for name, p in policy.named_parameters()}
reference_shards = {name: numel(p) for name, p in reference.named_parameters()}
prompt_inputs, completion_ids, mask, texts = grpo.rollout(accelerator, policy, processor, batch, cfg, step=0)
with torch.no_grad():
    ref_logps = grpo._reference_logps(policy, accelerator.unwrap_model(policy), reference, prompt_inputs,
                                      completion_ids, cfg.group_size)
    logps = completion_logps(policy, prompt_inputs, completion_ids, repeats=cfg.group_size)
advantages = torch.tensor([1.0, -0.5, 0.25, 0.75])  # not summing to 0: a nonzero loss
losses, stats = grpo.update(accelerator, policy, reference, optimizer, trainable, cfg, prompt_inputs,
                            completion_ids, advantages, mask)
inner = optimizer.optimizer  # accelerate's wrapper's: AdamW, or DeepSpeed's ZeRO-3 optimizer around its AdamW
inner = getattr(inner, "optimizer", inner)
moments = [numel(v)[0] for st in inner.state.values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq")]
weights = accelerator.get_state_dict(policy)  # gathered from the shards on every process
if accelerator.is_main_process:
    torch.save({"completions": completion_ids, "ref_logps": ref_logps, "logps": logps, "weights": weights},
               out / "tensors.pt")
(out / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
    "losses": losses, "kl": stats["kl"], "texts": texts, "shards": shards, "reference_shards": reference_shards,
    "moments": sum(moments)}))
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()  # as a command does when it ends (cli._leave_process_group)
'''


# launcher: (its accelerate config, accelerate's distributed type, the second process's part of a checkpoint)
ZERO_PART = "pytorch_model/zero_pp_rank_1_mp_rank_00_optim_states.pt"
LAUNCHERS = {"fsdp": ("fsdp.yaml", "FSDP", "pytorch_model_fsdp_0/__1_0.distcp"),
             "zero3": ("zero3.yaml", "DEEPSPEED", ZERO_PART),
             "zero3-offload": ("zero3-offload.yaml", "DEEPSPEED", ZERO_PART)}  # the paper config's GRPO launcher


def launchers(*names):
    """`names` (default: all), ZeRO-3 only where DeepSpeed is installed (`make install` installs it)."""
    import importlib.util

    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    return [pytest.param(name, marks=[] if not name.startswith("zero") or has_deepspeed else
                         pytest.mark.skip(reason="DeepSpeed is not installed (make install installs it)"))
            for name in names or LAUNCHERS]


def launch(tmp_path: Path, launcher: str, script: str, args: list[str]) -> subprocess.CompletedProcess:
    """`script ARGS` on two CPU processes under configs/accelerate/<launcher's config> (full precision)."""
    path = tmp_path / f"script-{free_port()}.py"
    path.write_text(script)
    env = cpu_ranks_env(DS_ACCELERATOR="cpu")
    config = ROOT / "configs" / "accelerate" / LAUNCHERS[launcher][0]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", str(free_port()), str(path), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr:  # once in ~10 ZeRO-3 offload runs, at exit
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done


# A process aborting at exit, after its work and its files are done: a C++ thread still joinable
# when the interpreter tears down (seen under DeepSpeed's ZeRO-3 with the optimizer offloaded, on
# gloo, before a command left its process group at the end; rarely after). It is retried once.
TEARDOWN_ABORT = "terminate called without an active exception"


@pytest.fixture(scope="module")
def whole_step(toy_run, tiny_models, tmp_path_factory):  # noqa: F811
    """One GRPO step of the tiny student (two updates) in one plain process."""
    out = tmp_path_factory.mktemp("whole")
    script = out / "step.py"
    script.write_text(STEP)
    done = subprocess.run([sys.executable, str(script), str(toy_run), str(tiny_models["student"]), str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-6000:]
    return {"ranks": [json.loads((out / "rank0.json").read_text())], **torch.load(out / "tensors.pt")}


@pytest.fixture(scope="module", params=launchers())
def sharded_step(request, toy_run, tiny_models, tmp_path_factory):  # noqa: F811
    """The same step on two processes, sharded by the launcher `request.param`."""
    out = tmp_path_factory.mktemp(request.param)
    launch(out, request.param, STEP, [str(toy_run), str(tiny_models["student"]), str(out)])
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return {"launcher": request.param, "ranks": ranks, **torch.load(out / "tensors.pt")}


def test_the_policy_its_optimizer_and_the_reference_are_sharded(sharded_step, whole_step):
    ranks = sharded_step["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["processes"] == 2 for r in ranks)
    assert all(r["distributed_type"].endswith(LAUNCHERS[sharded_step["launcher"]][1]) for r in ranks)
    for part in ("shards", "reference_shards"):
        first, second = (r[part] for r in ranks)
        assert first and first.keys() == second.keys()
        for name, (held, whole) in first.items():  # each process holds half of every weight (ZeRO-3 pads to even)
            assert held < whole and held + second[name][0] in (whole, whole + 1), (part, name)
    total = sum(whole for _, whole in ranks[0]["shards"].values())
    assert whole_step["ranks"][0]["moments"] == 2 * total  # one process: AdamW's two moments of every weight
    for r in ranks:  # two processes: each holds the moments of its half
        assert total <= r["moments"] <= total + 2 * len(r["shards"])


def test_sharded_grpo_equals_the_one_process_run(sharded_step, whole_step, tiny_models):
    sharded, whole = sharded_step, whole_step
    # generation from the sharded policy: the same tokens on both processes and in one process
    assert torch.equal(sharded["completions"], whole["completions"])
    assert sharded["ranks"][0]["texts"] == sharded["ranks"][1]["texts"] == whole["ranks"][0]["texts"]
    torch.testing.assert_close(sharded["ref_logps"], whole["ref_logps"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sharded["logps"], whole["logps"], rtol=1e-5, atol=1e-6)
    for r in sharded["ranks"]:
        assert r["losses"] == pytest.approx(whole["ranks"][0]["losses"], rel=1e-5)
        assert r["kl"] == pytest.approx(whole["ranks"][0]["kl"], rel=1e-4) and r["kl"] > 0
    initial, _ = load_model(tiny_models["student"])
    initial = initial.state_dict()
    assert sharded["weights"].keys() == whole["weights"].keys() == initial.keys()
    # FSDP2 updates each half as one process would. DeepSpeed's ZeRO-3 steps AdamW on flat fp32
    # partitions and sums gradients in its own order, so a weight whose gradient is near AdamW's eps
    # moves a little differently: within 5% of the update (2 steps at lr 1e-3), the median 0.03%.
    tolerance = 1e-6 if sharded["launcher"] == "fsdp" else 1e-4  # DeepSpeed's AdamW offloaded or not
    for name, value in whole["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], value, rtol=0, atol=tolerance, msg=name)
    moved = [n for n, p in initial.items() if (p - whole["weights"][n]).abs().max() > 10 * tolerance]
    assert len(moved) > 0.5 * len(initial)  # the update moved the weights by more than the tolerance


STAGE = ON_CPU + '''
import sys

from sightsound import cli, rl

# The untrained tiny student never writes the answer format: with only the accuracy and format
# rewards every advantage would be 0. This reward varies within a group from the first step.
rl.REWARDS["length"] = lambda completion, label, options: len(completion) / 100
sys.exit(cli.main(sys.argv[1:]))
'''


@pytest.mark.parametrize("launcher", launchers("fsdp", "zero3-offload"))
def test_the_grpo_stage_trains_sharded_saves_whole_weights_and_resumes(launcher, toy_run, tiny_models,  # noqa: F811
                                                                       tmp_path):
    """`sightsound grpo` on two sharded processes: the saved model is whole and loads as any other,
    and a run stopped after its first checkpoint resumes (sharded state, optimizer included) to
    the weights of the run that was not stopped."""
    args = ["grpo", "--out", None, f"model={tiny_models['student']}", "steps=2", "group_size=3", "prompts_per_step=1",
            "lr=1e-3", "max_completion_tokens=8", "save_every=1", "progress=false", "lora.enabled=false",
            "rewards={length: 1.0, format: 1.0}"]
    finals = {}
    for name in ("whole", "cut"):
        run = tmp_path / name
        shutil.copytree(toy_run, run)
        launch(tmp_path, launcher, STAGE, [str(run) if a is None else a for a in args])
        finals[name] = run
    cut = finals["cut"]
    assert (cut / "grpo" / "checkpoint-1" / "state" / LAUNCHERS[launcher][2]).is_file()  # saved in shards
    shutil.rmtree(cut / "grpo" / "checkpoint-2")  # as if stopped after the first checkpoint
    shutil.rmtree(cut / "grpo" / "final")
    (cut / "manifests" / "grpo.json").unlink()
    done = launch(tmp_path, launcher, STAGE, [str(cut) if a is None else a for a in args])
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
