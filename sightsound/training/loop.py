"""The training loop SFT and GRPO share (resume, batches, metrics, validation keeping the best model,
checkpoints, the final model, the manifest); each stage passes only how one optimizer step is taken.

    accelerator, stage = open_training(run_dir, cfg, inputs)        # skips a finished run
    ...                                                             # load the model, build the optimizer
    state = train(accelerator, stage, cfg, model, processor, step, name="sft", items=len(examples),
                  batch_size=cfg.batch_size, val_method="zero_shot_cot", show={"loss": ".4f"})
    return finish_training(stage, cfg, state, "loss", {"examples": len(examples)})

Writes `RUN_DIR/<subdir>/` (`rundir.TrainingDir`): `metrics.jsonl`, `checkpoint-N/` (resumed
from), `best/` and `final/`; the keys both stages take are in `TrainingConfig`.
Details: docs/reference.md, "sightsound/training/loop.py".
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sightsound.config import ConfigError, check_name, to_dict
from sightsound.inference import Asking, answer_all
from sightsound.manifest import StageRun, open_stage
from sightsound.models.hf import HFBackend
from sightsound.models.loading import local_path
from sightsound.records import Sample
from sightsound.rundir import RunDir, TrainingDir
from sightsound.store import JsonlWriter, read_jsonl, write_json
from sightsound.training import memory, sharding


@dataclass
class TrainingConfig:
    """The keys SFT and GRPO share (each stage's config adds its own and sets its own defaults)."""

    out: str = "runs/demo"  # the run directory
    answer: str = "letter"  # letter | text: how prompts ask for (and labels give) a multiple-choice answer
    max_grad_norm: float = 1.0
    dtype: str = "float32"  # bfloat16 on GPUs
    gradient_checkpointing: bool | str = False  # recompute activations in backward; auto: when the memory estimate needs it
    freeze: list[str] = field(default_factory=list)  # regexes of parameter names kept frozen, e.g. [audio_tower]
    seed: int = 0
    keep_checkpoints: int = 2
    val_samples: str | None = None  # a prepared samples.jsonl to measure validation accuracy on
    val_limit: int | None = 200
    val_max_new_tokens: int = 256
    subdir: str = "train"  # the folder inside the run directory it trains into (a plain name)
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers: tensorboard, wandb (pip install wandb), ...
    trackers_optional: bool = False  # true: a report_to tracker whose package is missing is skipped with a warning
    progress: bool = True

    def __post_init__(self):
        check_name("subdir", self.subdir)
        if self.gradient_checkpointing not in (True, False, "auto"):
            raise ConfigError(f"gradient_checkpointing is true, false or auto, not {self.gradient_checkpointing!r}")


def checkpointing(name: str, cfg, accelerator, shapes) -> bool:
    """`cfg.gradient_checkpointing` resolved (`memory.checkpointing`: "auto" decides from the memory
    estimate at the shapes `shapes()` gives), and said when it was auto."""
    on, why = memory.checkpointing(name, cfg, accelerator, shapes)
    if cfg.gradient_checkpointing == "auto" and accelerator.is_main_process:
        print(f"{name}: gradient checkpointing {'on' if on else 'off'} ({why})")
    return on


def open_training(run_dir: Path, cfg, inputs: dict, grad_accum: int = 1, micro_batch: int = 1):
    """(accelerator, stage run): the stage is `done` when it already finished with this config and
    these inputs. Another config's training is not resumed: its folder is cleared first.
    `micro_batch`: the sequences a process passes forward at once (DeepSpeed asks for it)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(gradient_accumulation_steps=grad_accum, log_with=usable_trackers(cfg) or None,
                              project_dir=str(Path(run_dir) / cfg.subdir))
    sharding.check(cfg, accelerator)
    sharding.tell_deepspeed(accelerator, micro_batch)
    stage = open_stage(run_dir, cfg.subdir, cfg, inputs, [Path(run_dir) / cfg.subdir],
                       main_process=accelerator.is_main_process)
    if not stage.done:
        accelerator.wait_for_everyone()
        set_seed(cfg.seed)
    return accelerator, stage


def train(accelerator, stage: StageRun, cfg, model, processor, step, *, name: str, items: int, batch_size: int,
          batches_per_step: int = 1, val_method: str, merged_from: str | None = None,
          show: dict[str, str], lengths: list[int] | None = None) -> dict:
    """Run `step` until `cfg.steps`, resuming from the newest checkpoint; returns the trainer state
    (step, best_accuracy, best_step). `batch_size` examples per process make a batch, and a step
    takes `batches_per_step` of them; `merged_from` (the model a LoRA run started from) saves best/
    and final/ with LoRA folded in, and the adapter beside, in `adapter/`; `show` names the
    metrics on the progress bar, with their formats; `lengths` (one per item) forms batches of
    similar lengths (`Batches`)."""
    folder = RunDir(stage.run_dir).training(cfg.subdir)
    out = folder.root
    state = {"step": 0, "best_accuracy": None, "best_step": None}
    last = resume(accelerator, out, name)
    if last is not None:  # resumed: weights, optimizer, scheduler, data order and step
        state = read_state(last)
        accelerator.print(f"{name}: resuming from {last} (step {state['step']})")
    order = Batches(items, batch_size * accelerator.num_processes, cfg.seed, state["step"] * batches_per_step,
                    lengths=lengths)

    def next_batch() -> list[int]:
        return order.next()[accelerator.process_index::accelerator.num_processes]

    main = accelerator.is_main_process
    metrics = JsonlWriter(folder.metrics, id_of=lambda r: str(r["step"])) if main else None
    start_trackers(accelerator, stage, cfg)
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=name, unit="step", disable=not (cfg.progress and main))
    model.train()
    while state["step"] < cfg.steps:
        row = {"step": state["step"] + 1, **step(next_batch, state["step"])}
        state["step"] += 1
        bar.update(1)
        last_step = state["step"] == cfg.steps
        if cfg.val_samples and (state["step"] % cfg.val_every == 0 or last_step):
            row["val_accuracy"] = validate(accelerator, model, processor, cfg, val_method)
            if state["best_accuracy"] is None or row["val_accuracy"] > state["best_accuracy"]:
                state.update(best_accuracy=row["val_accuracy"], best_step=state["step"])
                save_model(accelerator, model, processor, folder.best, merged_from=merged_from)
            model.train()
        if main and (state["step"] % cfg.log_every == 0 or "val_accuracy" in row or last_step):
            metrics.write(row)
            accelerator.log({f"{name}/{key}": value for key, value in row.items() if key != "step"}, step=state["step"])
            bar.set_postfix({key: format(row[key], spec) for key, spec in show.items()})
        if state["step"] % cfg.save_every == 0 or last_step:
            save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
    bar.close()
    save_model(accelerator, model, processor, folder.final, merged_from=merged_from)
    if main:
        metrics.close()
    accelerator.end_training()  # closes the trackers
    return state


def finish_training(stage: StageRun, cfg, state: dict, curve: str, counts: dict, **extra) -> dict:
    """The manifest of an SFT or GRPO run (main process, after the final model is saved): `counts`
    plus steps, the first and last logged value of `curve` (loss, reward) and the best validation."""
    rows = list(read_jsonl(RunDir(stage.run_dir).training(cfg.subdir).metrics))
    counts = {**counts, "steps": state["step"], f"first_{curve}": rows[0][curve], f"last_{curve}": rows[-1][curve],
              "best_val_accuracy": state["best_accuracy"], "best_step": state["best_step"]}
    return stage.finish(counts, model=cfg.model, **extra)


LENGTH_WINDOW = 64  # with lengths, batches are formed by length within windows of this many batches


class Batches:
    """Indices of each global batch: a seeded shuffle per epoch, so a resumed run sees the same
    order as an uninterrupted one (`skip` batches are consumed first). With `lengths` (one per
    item), each epoch's shuffled order is cut into windows of `LENGTH_WINDOW` batches, each window
    sorted by length into batches whose order is shuffled again, as Hugging Face's
    `group_by_length` does: batches of similar lengths (little padding), in a random order."""

    def __init__(self, n: int, batch_size: int, seed: int, skip: int = 0, lengths: list[int] | None = None):
        self.n, self.batch_size, self.seed, self.lengths = n, batch_size, seed, lengths
        self.epoch, self.queue = 0, []
        for _ in range(skip):
            self.next()

    def next(self) -> list[int]:
        while len(self.queue) < self.batch_size:
            self.queue += self._epoch_order()
            self.epoch += 1
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size:]
        return batch

    def _epoch_order(self) -> list[int]:
        order = list(range(self.n))
        rng = random.Random(self.seed + self.epoch)
        rng.shuffle(order)
        if self.lengths is None:
            return order
        size, grouped = LENGTH_WINDOW * self.batch_size, []
        for start in range(0, len(order), size):
            window = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches = [window[i:i + self.batch_size] for i in range(0, len(window), self.batch_size)]
            rng.shuffle(batches)
            grouped += [i for batch in batches for i in batch]
        return grouped


def validate(accelerator, model, processor, cfg, method: str) -> float:
    """Greedy accuracy on `cfg.val_samples` (the first `cfg.val_limit`), asked with `method`."""
    accuracy = 0.0
    if accelerator.is_main_process:
        samples = list(read_jsonl(cfg.val_samples, Sample))[: cfg.val_limit]
        backend = HFBackend.from_loaded(accelerator.unwrap_model(model).eval(), processor)
        ask = Asking(method=method, answer=cfg.answer, max_new_tokens=cfg.val_max_new_tokens)
        predictions, _, _ = answer_all(backend, samples, ask)
        accuracy = sum(p.correct for p in predictions) / max(len(samples), 1)
    accelerator.wait_for_everyone()
    return float(accelerator.gather(torch.tensor([accuracy], device=accelerator.device))[0])


ADAPTER = "adapter"  # a merged LoRA model's own adapter, in its folder


def save_model(accelerator, model, processor, path: Path, merge: bool = False, merged_from: str | None = None) -> None:
    """An ordinary HF folder + processor: a LoRA adapter as it is, or with `merge` the full merged
    model; with `merged_from` (the model the adapter was trained on) the merged model and the
    adapter in `path/adapter/`, its `base_model_name_or_path` that model, so PEFT loads it too.
    A sharded model's weights are gathered first, on every process."""
    accelerator.wait_for_everyone()
    gathered = accelerator.get_state_dict(model) if sharding.is_sharded(accelerator) else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        lora = hasattr(unwrapped, "merge_and_unload")
        if path.exists():
            shutil.rmtree(path)
        if lora and (merge or merged_from):
            import copy

            copy.deepcopy(unwrapped).merge_and_unload().save_pretrained(path)
            if merged_from:
                unwrapped.save_pretrained(path / ADAPTER)
                settings = path / ADAPTER / "adapter_config.json"
                config = json.loads(settings.read_text())
                config["base_model_name_or_path"] = local_path(merged_from)
                settings.write_text(json.dumps(config, indent=2) + "\n")
        else:
            unwrapped.save_pretrained(path, state_dict=gathered)
        if hasattr(processor, "save_pretrained"):
            processor.save_pretrained(path)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, out: Path, state: dict, keep: int) -> None:
    """Everything accelerate prepared (weights, optimizer, scheduler, RNG), then the trainer state."""
    path = TrainingDir(out).checkpoint(state["step"])
    accelerator.save_state(str(path / "state"))
    if accelerator.is_main_process:
        write_json(TrainingDir.trainer_state(path), state)  # written last: a checkpoint without it is partial
        for old in sorted(_checkpoints(out), key=_step)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume(accelerator, out: Path, name: str) -> Path | None:
    """Load the newest checkpoint whose state loads (a damaged one is passed over with a warning,
    for the one before it); None when there is none. A random state that cannot be restored is a
    warning: training goes on, but not bit-identically to an uninterrupted run."""
    import torch

    done = sorted((p for p in _checkpoints(out) if TrainingDir.trainer_state(p).exists()), key=_step, reverse=True)
    for number, checkpoint in enumerate(done):
        try:
            accelerator.load_state(str(checkpoint / "state"))
        except Exception as exc:  # noqa: BLE001 (torch, safetensors and pickle each raise their own)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
            if number + 1 == len(done):
                raise OSError(f"{checkpoint} cannot be loaded ({reason}) and no earlier checkpoint can; delete "
                              f"{out} to train from the start") from exc
            accelerator.print(f"{name}: WARNING: {checkpoint} cannot be loaded ({reason}); "
                              f"resuming from {done[number + 1].name} instead")
            continue
        rng = checkpoint / "state" / f"random_states_{accelerator.process_index}.pkl"
        try:
            torch.load(rng, weights_only=False)
        except Exception:  # noqa: BLE001
            accelerator.print(f"{name}: WARNING: the random state in {rng} cannot be restored; training resumes, "
                              "but not bit-identically to an uninterrupted run")
        return checkpoint
    return None


def read_state(path: Path) -> dict:
    return json.loads(TrainingDir.trainer_state(path).read_text())


def _checkpoints(out: Path) -> list[Path]:
    return TrainingDir(out).checkpoints()


def _step(path: Path) -> int:
    return int(path.name.split("-")[1])


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",), "dvclive": ("dvclive",),
                    "swanlab": ("swanlab",), "trackio": ("trackio",)}


def usable_trackers(cfg) -> list[str]:
    """`report_to`, checked before training starts: a tracker whose package is not installed stops
    the stage (a run that was meant to be tracked and is not is found out too late), unless
    `trackers_optional`, when it is left out with a warning."""
    import importlib.util

    usable = []
    for name in cfg.report_to:
        packages = TRACKER_PACKAGES.get(name, (name,))
        if any(importlib.util.find_spec(p) is not None for p in packages):
            usable.append(name)
        elif cfg.trackers_optional:
            print(f"{cfg.subdir}: WARNING: report_to {name!r}: {packages[0]} is not installed; training without it")
        else:
            raise ConfigError(f"report_to {name!r}: the {packages[0]} package is not installed (pip install "
                              f"{packages[0]}); or drop it from report_to, or set trackers_optional: true")
    return usable


def start_trackers(accelerator, stage: StageRun, cfg) -> None:
    """accelerate's trackers (`report_to`): TensorBoard events in `<subdir>/tensorboard/`; wandb in
    project `sightsound`, the run named after the run directory and subdir."""
    if not accelerator.log_with:
        return
    config = {k: v for k, v in to_dict(cfg).items() if isinstance(v, (int, float, str, bool))}
    accelerator.init_trackers("tensorboard", config=config, init_kwargs={
        "wandb": {"project": "sightsound", "name": f"{stage.run_dir.name}/{cfg.subdir}"}})
