"""What the SFT and GRPO stages share: data order, validation, checkpoints and logs.

Checkpoints are `OUT/checkpoint-N/` (accelerate state: weights, optimizer, scheduler, RNG) with
`trainer_state.json` written last, so a checkpoint without it is known to be partial; the newest
complete one is resumed from. Saved models are ordinary HF folders (a LoRA adapter, or a full
model) with the processor beside them, so evaluation loads them like any checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from sightsound.records import Sample, read_jsonl, write_json, write_manifest


class Batches:
    """Indices of each global batch: a seeded shuffle per epoch, so a resumed run sees the same
    order as an uninterrupted one (`skip` batches are consumed first)."""

    def __init__(self, n: int, batch_size: int, seed: int, skip: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.queue = 0, []
        for _ in range(skip):
            self.next()

    def next(self) -> list[int]:
        while len(self.queue) < self.batch_size:
            order = list(range(self.n))
            random.Random(self.seed + self.epoch).shuffle(order)
            self.queue += order
            self.epoch += 1
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size:]
        return batch


def validate(accelerator, model, processor, cfg, method: str) -> float:
    """Greedy accuracy on `cfg.val_samples` (the first `cfg.val_limit`), asked with `method`."""
    from sightsound.models.hf import HFBackend
    from sightsound.stages import evaluate

    accuracy = 0.0
    if accelerator.is_main_process:
        samples = list(read_jsonl(cfg.val_samples, Sample))[: cfg.val_limit]
        backend = HFBackend.from_loaded(accelerator.unwrap_model(model).eval(), processor)
        eval_cfg = evaluate.EvalConfig(samples=cfg.val_samples, method=method, answer=cfg.answer,
                                       max_new_tokens=cfg.val_max_new_tokens)
        predictions, _, _ = evaluate.answer_all(backend, samples, eval_cfg)
        accuracy = sum(p.correct for p in predictions) / max(len(samples), 1)
    accelerator.wait_for_everyone()
    return float(accelerator.gather(torch.tensor([accuracy], device=accelerator.device))[0])


def save_model(accelerator, model, processor, path: Path, merge: bool = False) -> None:
    """An ordinary HF folder (a LoRA adapter, or with `merge` the full merged model) + processor."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if merge and hasattr(unwrapped, "merge_and_unload"):
            import copy

            unwrapped = copy.deepcopy(unwrapped).merge_and_unload()
        if path.exists():
            shutil.rmtree(path)
        unwrapped.save_pretrained(path)
        if hasattr(processor, "save_pretrained"):
            processor.save_pretrained(path)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, out: Path, state: dict, keep: int) -> None:
    """Everything accelerate prepared (weights, optimizer, scheduler, RNG), then the trainer state."""
    path = out / f"checkpoint-{state['step']}"
    accelerator.save_state(str(path / "state"))
    if accelerator.is_main_process:
        write_json(path / "trainer_state.json", state)  # written last: a checkpoint without it is partial
        for old in sorted(_checkpoints(out), key=_step)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def latest_checkpoint(out: Path) -> Path | None:
    done = [p for p in _checkpoints(out) if (p / "trainer_state.json").exists()]
    return max(done, key=_step) if done else None


def read_state(path: Path) -> dict:
    return json.loads((path / "trainer_state.json").read_text())


def _checkpoints(out: Path) -> list[Path]:
    return [p for p in out.glob("checkpoint-*") if p.is_dir()] if out.exists() else []


def _step(path: Path) -> int:
    return int(path.name.split("-")[1])


def open_board(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def write_training_manifest(run_dir: Path, cfg, digest: str, inputs: dict, started: float, state: dict,
                            curve: str, counts: dict, **extra) -> dict:
    """The manifest of an SFT or GRPO run (main process, after the final model is saved): `counts`
    plus steps, the first and last logged value of `curve` (loss, reward) and the best validation."""
    rows = list(read_jsonl(Path(run_dir) / cfg.subdir / "metrics.jsonl"))
    counts = {**counts, "steps": state["step"], f"first_{curve}": rows[0][curve], f"last_{curve}": rows[-1][curve],
              "best_val_accuracy": state["best_accuracy"], "best_step": state["best_step"]}
    return write_manifest(run_dir, cfg.subdir, config_hash=digest, inputs=inputs, started=started, counts=counts,
                          model=cfg.model, **extra)
