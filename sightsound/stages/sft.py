"""sft: LoRA supervised fine-tuning of the audio student (paper §3.3 eq. 1, §4.1).

    sightsound sft --config configs/sightsound-r1.yaml           # paper: rank 8, alpha 16, lr 5e-5, 2000 steps
    accelerate launch --config_file configs/accelerate/ddp.yaml -m sightsound sft --config ...

Targets: `cot` — the fact-checked teacher traces (`corpus.jsonl` from verify), `teacher_label` — the
teacher's unanimous label only (`consensus.jsonl`), `gt_label` — the ground-truth label (the paper's
label-only baselines), `examples` — any (messages, response) pairs from the JSONL file `examples`
(one `{"messages": [...], "response": "..."}` per line; a `video` part may name a `.frames.npy`
file by `path`): this is how the demo gives its tiny models their roles (sightsound/bootstrap.py).
The loss covers response tokens only. Writes `RUN_DIR/sft/`: `metrics.jsonl`
(and TensorBoard events), `checkpoint-N/` (model + optimizer state; the newest is resumed from),
`best/` (highest validation accuracy, when `val_samples` is set), `final/`, and with `merge: true`
`merged/` (LoRA folded into the base: an ordinary checkpoint). A manifest is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sightsound import media, prompts
from sightsound.config import config_hash
from sightsound.records import JsonlWriter, Sample, begin_stage, model_inputs, read_jsonl, sha256_file
from sightsound.student import LoraConfig, add_lora, build_batch, load_model
from sightsound.training import (Batches, latest_checkpoint, open_board, read_state, save_checkpoint, save_model,
                                 validate, write_training_manifest)

TARGETS = ("cot", "teacher_label", "gt_label", "examples")


@dataclass
class SFTConfig:
    out: str = "runs/demo"  # the run directory (samples.jsonl, corpus.jsonl, consensus.jsonl)
    model: str = "runs/tiny/student"  # the student checkpoint to start from
    target: str = "cot"  # cot | teacher_label | gt_label | examples
    examples: str | None = None  # target examples: the JSONL file of (messages, response) pairs
    answer: str = "letter"  # letter | text: how prompts ask for (and labels give) a multiple-choice answer
    lora: LoraConfig = field(default_factory=LoraConfig)  # enabled: false trains every parameter
    lr: float = 5e-5  # paper
    steps: int = 2000  # paper: optimizer steps
    batch_size: int = 8  # paper: per device
    grad_accum: int = 1
    warmup_steps: int = 0
    scheduler: str = "constant_with_warmup"  # any transformers.get_scheduler name
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dtype: str = "float32"  # bfloat16 on GPUs
    seed: int = 0
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    val_samples: str | None = None  # a prepared samples.jsonl to measure validation accuracy on
    val_every: int = 500
    val_limit: int | None = 200
    val_max_new_tokens: int = 256
    merge: bool = False  # also write merged/ (LoRA folded into the base)
    subdir: str = "sft"
    progress: bool = True


def main(cfg: SFTConfig) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if cfg.target not in TARGETS:
        raise ValueError(f"unknown SFT target {cfg.target!r} (known: {', '.join(TARGETS)})")
    run_dir, out = Path(cfg.out), Path(cfg.out) / cfg.subdir
    examples, inputs = load_examples(run_dir, cfg)
    inputs |= model_inputs(cfg.model)
    digest = config_hash(cfg)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    # another config's training is not resumed: begin_stage clears `out` unless this config started it
    manifest = begin_stage(run_dir, cfg.subdir, cfg, digest, inputs, [out], accelerator.is_main_process)
    if manifest is not None:
        accelerator.print(f"sft: already done in {out}")
        return manifest
    accelerator.wait_for_everyone()
    started = time.time()
    set_seed(cfg.seed)

    model, processor = load_model(cfg.model, cfg.dtype)
    if cfg.lora.enabled and not hasattr(model, "peft_config"):
        model = add_lora(model, cfg.lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = {"step": 0, "best_accuracy": None, "best_step": None}
    last = latest_checkpoint(out)
    if last is not None:  # resume: weights, optimizer, scheduler, data order and step
        accelerator.load_state(str(last / "state"))
        state = read_state(last)
        accelerator.print(f"sft: resuming from {last} (step {state['step']})")

    order = Batches(len(examples), cfg.batch_size * accelerator.num_processes, cfg.seed, state["step"] * cfg.grad_accum)
    metrics = JsonlWriter(out / "metrics.jsonl", id_of=lambda r: str(r["step"])) if accelerator.is_main_process else None
    board = open_board(out) if accelerator.is_main_process else None
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="sft", unit="step",
               disable=not (cfg.progress and accelerator.is_main_process))
    model.train()
    while state["step"] < cfg.steps:
        losses = []
        for _ in range(cfg.grad_accum):
            indices = order.next()[accelerator.process_index::accelerator.num_processes]
            batch = build_batch(processor, [examples[i] for i in indices]).to(accelerator.device)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(accelerator.gather(loss.detach()).mean().item())
        state["step"] += 1
        bar.update(1)
        row = {"step": state["step"], "loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0]}
        if cfg.val_samples and (state["step"] % cfg.val_every == 0 or state["step"] == cfg.steps):
            row["val_accuracy"] = validate(accelerator, model, processor, cfg,
                                           "zero_shot_cot" if cfg.target == "cot" else "direct")
            if state["best_accuracy"] is None or row["val_accuracy"] > state["best_accuracy"]:
                state.update(best_accuracy=row["val_accuracy"], best_step=state["step"])
                save_model(accelerator, model, processor, out / "best")
            model.train()
        if accelerator.is_main_process and (state["step"] % cfg.log_every == 0 or "val_accuracy" in row
                                            or state["step"] == cfg.steps):
            metrics.write(row)
            for key, value in row.items():
                if key != "step":
                    board.add_scalar(f"sft/{key}", value, state["step"])
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if state["step"] % cfg.save_every == 0 or state["step"] == cfg.steps:
            save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
    bar.close()

    save_model(accelerator, model, processor, out / "final")
    if cfg.merge:
        save_model(accelerator, model, processor, out / "merged", merge=True)
    if not accelerator.is_main_process:
        return {}
    metrics.close()
    board.close()
    manifest = write_training_manifest(run_dir, cfg, digest, inputs, started, state, "loss",
                                       {"examples": len(examples)}, target=cfg.target)
    c = manifest["counts"]
    print(f"sft: {state['step']} steps on {len(examples)} training examples ({cfg.target}); loss "
          f"{c['first_loss']:.4f} → {c['last_loss']:.4f} → {out}")
    return manifest


# --- data --------------------------------------------------------------------------------------


def load_examples(run_dir: Path, cfg: SFTConfig) -> tuple[list[tuple[list[dict], str]], dict]:
    """(messages, response) pairs for the target, and the hashes of the files they came from."""
    target, answer = cfg.target, cfg.answer
    if target == "examples":
        return _read_examples(cfg.examples)
    samples_path = run_dir / "samples.jsonl"
    samples = {s.id: s for s in read_jsonl(samples_path, Sample)}
    if target == "cot":
        source = run_dir / "corpus.jsonl"
        if not source.exists():
            raise FileNotFoundError(f"{source}: not found; run `sightsound verify` first (the fact-checked corpus)")
        pairs = [(samples[row["sample_id"]], row["text"]) for row in read_jsonl(source)]
        examples = [(student_messages(s, prompts.STUDENT_PROMPT, answer), text.strip()) for s, text in pairs]
    elif target == "teacher_label":
        source = run_dir / "consensus.jsonl"
        if not source.exists():
            raise FileNotFoundError(f"{source}: not found; run `sightsound teach` first")
        rows = [r for r in read_jsonl(source) if r["unanimous"]]
        examples = [(student_messages(samples[r["id"]], prompts.DIRECT_PROMPT, answer),
                     label_text(samples[r["id"]], r["label"], answer)) for r in rows]
    else:
        source = samples_path
        examples = [(student_messages(s, prompts.DIRECT_PROMPT, answer),
                     label_text(s, s.answer if s.options else s.answer_text, answer)) for s in samples.values()]
    if not examples:
        raise ValueError(f"{source}: no training examples for target {target!r}")
    return examples, {str(samples_path): sha256_file(samples_path), str(source): sha256_file(source)}


def _read_examples(path: str | None) -> tuple[list[tuple[list[dict], str]], dict]:
    if not path:
        raise ValueError("target examples needs `examples`: a JSONL file of {messages, response} lines")
    examples = []
    for number, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row.get("messages"), list) or not isinstance(row.get("response"), str):
            raise ValueError(f"{path}: line {number}: needs `messages` (a list) and `response` (a string)")
        for message in row["messages"]:
            if isinstance(message["content"], list):
                message["content"] = [new for part in message["content"] for new in _frames_as_images(part)]
        examples.append((row["messages"], row["response"]))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples, {str(path): sha256_file(path)}


def _frames_as_images(part: dict) -> list[dict]:
    """A video part naming a frames file becomes one image part per frame, as the HF backend sends
    frames to a model whose processor has no video support (no torchvision)."""
    if part["type"] != "video" or "path" not in part:
        return [part]
    return [{"type": "image", "image": frame} for frame in media.load_frames(part["path"])]


def student_messages(sample: Sample, template: str, answer: str = "letter") -> list[dict]:
    """The student hears the clip and reads the audio variant of the question."""
    text = prompts.fill(template, prompts.audio_variant(sample.question), sample.options, answer)
    return [{"role": "user", "content": [{"type": "audio", "path": sample.audio}, {"type": "text", "text": text}]}]


def label_text(sample: Sample, label, answer: str = "letter") -> str:
    """A label as the student should say it: the option letter (or, with answer "text", the
    option's words), or the open-ended answer."""
    if not sample.options:
        return str(label)
    return sample.options[label].strip() if answer == "text" else prompts.LETTERS[label]
