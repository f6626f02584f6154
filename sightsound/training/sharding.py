"""What training does differently when each process holds only a part of every weight (FSDP2 or
DeepSpeed ZeRO-3, chosen by the accelerate config the stage is launched with), and what DeepSpeed
needs to be told.

    check(cfg, accelerator)                          # refuses what cannot run sharded, before loading
    reference = prepare_reference(accelerator, ref)  # GRPO's frozen reference, sharded like the policy
    model.generate(..., **generation_kwargs(accelerator))  # every process steps until all have ended

- The policy is sharded by `accelerator.prepare` (accelerate's FSDP2 or DeepSpeed plugin), its
  optimizer state with it. The frozen reference is sharded the same way, so a device holds 1/N of
  it, not all of it (15.6 GiB of Qwen2-Audio-7B in bf16): under FSDP2 through accelerate's own
  `fsdp2_prepare_model` (the policy's wrap policy and mixed precision, no optimizer); under ZeRO-3
  through `deepspeed.initialize` with the run's DeepSpeed config and no optimizer, as TRL prepares
  its reference model.
- A sharded layer is gathered when a forward pass reaches it, so every process must run the same
  number of forward passes: generation runs with `synced_gpus=True` (a process whose rows have all
  ended keeps stepping until every process's have). transformers sets this by itself only under
  ZeRO-3 and for models it sharded itself, not for accelerate's `fully_shard`.
- Saving gathers the whole weights on every process (`accelerator.get_state_dict`, a collective)
  before the main process writes them (`loop.save_model`).

Both run in the test suite on two CPU processes (`tests/test_sharding.py`), through the
project's accelerate configs: accelerate enters FSDP and DeepSpeed only on accelerators (its
`AcceleratorState` keeps MULTI_CPU on a CPU), so the test's launcher sets the state accelerate
sets on GPUs, and everything after that is accelerate's, DeepSpeed's and this project's own code.
Neither has run on GPUs here.
"""

from __future__ import annotations

import copy

from sightsound.config import ConfigError
from sightsound.training import memory


def is_sharded(accelerator) -> bool:
    """Whether this run's processes each hold a part of every weight (FSDP, DeepSpeed ZeRO-3)."""
    return memory.launcher_of_accelerator(accelerator)[0] in memory.SHARDED


def generation_kwargs(accelerator) -> dict:
    """What `generate` needs on this run: `synced_gpus` when the model is sharded."""
    return {"synced_gpus": True} if is_sharded(accelerator) else {}


def check(cfg, accelerator) -> None:
    """Refuse, before any model is loaded, what a sharded run cannot do: validation (it generates
    on the main process alone, and a sharded forward pass needs every process) and LoRA (its saved
    models are merged on the main process, which needs the whole weights; LoRA fits every GPU
    without sharding anyway)."""
    launcher = memory.launcher_of_accelerator(accelerator)[0]
    if launcher not in memory.SHARDED:
        return
    if cfg.val_samples:
        raise ConfigError(f"{cfg.subdir}.val_samples: validation generates on the main process alone, which a "
                          f"sharded model ({launcher}) cannot do; leave it unset and evaluate the saved "
                          "checkpoints with `sightsound eval`")
    if cfg.lora.enabled:
        raise ConfigError(f"{cfg.subdir}.lora: LoRA training is not sharded ({launcher}); launch it with "
                          "DDP (configs/accelerate/ddp.yaml), where it fits, or set lora.enabled: false")


def tell_deepspeed(accelerator, micro_batch: int) -> None:
    """Under DeepSpeed, the sequences a process passes forward at once. accelerate reads it from
    a prepared dataloader, and the stages prepare none (they draw their own batches, `loop.Batches`);
    without it `accelerator.prepare` stops ("requires you to pass at least one of training or
    evaluation dataloaders"). DeepSpeed uses it for its own bookkeeping, not to batch anything."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch


def prepare_reference(accelerator, reference):
    """GRPO's frozen reference on this process: sharded like the policy under FSDP2 or ZeRO-3
    (see the module docstring), else whole on the device."""
    from accelerate.utils import DistributedType

    reference.eval().requires_grad_(False)
    if accelerator.distributed_type == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise ConfigError("the FSDP launcher: only FSDP2 is supported (fsdp_version: 2 in the accelerate "
                              "config, as in configs/accelerate/fsdp.yaml)")
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, reference)
    if is_sharded(accelerator):  # DeepSpeed ZeRO-3
        import deepspeed

        settings = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
        settings.pop("optimizer", None)
        settings.pop("scheduler", None)
        settings["zero_optimization"].pop("offload_optimizer", None)  # no optimizer to offload
        engine, *_ = deepspeed.initialize(model=reference, config=settings)
        engine.eval()  # DeepSpeed's returns None
        return engine
    return reference.to(accelerator.device)
