"""sft: LoRA supervised fine-tuning of the audio student (paper §3.3 eq. 1, §4.1).

    sightsound sft --config configs/sightsound-r1.yaml           # paper: rank 8, alpha 16, lr 5e-5, 2000 steps
    accelerate launch --config_file configs/accelerate/ddp.yaml -m sightsound sft --config ...

Targets: `cot` — the fact-checked teacher traces (`corpus`: `corpus.jsonl` from verify, or one of the
ablation corpora verify's `corpora` writes), `teacher_label` — the
teacher's unanimous label only (`consensus.jsonl`), `gt_label` — the ground-truth label (the paper's
label-only baselines), `examples` — any (messages, response) pairs from the JSONL file `examples`
(one `{"messages": [...], "response": "..."}` per line, optionally with `given`: text that opens
the reply, read but not learned; a `video` part may name a `.frames.npy` file by `path`): this is
how the demo gives its tiny models their roles (sightsound/bootstrap.py).
`replay` mixes such pairs into any target, as `replay_share` of the training examples (the demo
replays the student's own answers so that it keeps its format on what it is not trained on).
The loss covers response tokens only. Writes `RUN_DIR/sft/` as the shared training loop does
(`sightsound.training.loop`: metrics, checkpoints resumed from, `best/`, `final/`) and, with
`merge: true`, `merged/` (LoRA folded into the base: an ordinary checkpoint). A manifest is written last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sightsound import formats, prompts, rundir
from sightsound.config import ConfigError
from sightsound.manifest import model_inputs
from sightsound.models.loading import load_model, render, video_frames
from sightsound.records import Consensus, CorpusRow, Sample
from sightsound.rundir import RunDir
from sightsound.store import read_jsonl, sha256_file
from sightsound.training.loop import TrainingConfig, checkpointing, finish_training, open_training, save_model, train
from sightsound.training import memory
from sightsound.training.student import (LoraConfig, add_lora, build_batch, prepare_for_training, response_loss,
                                         with_given)

TARGETS = ("cot", "teacher_label", "gt_label", "examples")


@dataclass
class SFTConfig(TrainingConfig):
    model: str = "runs/tiny/student"  # the student checkpoint to start from
    target: str = "cot"  # cot | teacher_label | gt_label | examples
    examples: str | None = None  # target examples: the JSONL file of (messages, response) pairs
    corpus: str = rundir.CORPUS  # target cot: the fact-checked corpus in the run directory (verify's corpora: corpus-<name>.jsonl)
    lora: LoraConfig = field(default_factory=LoraConfig)  # enabled: false trains every parameter
    lr: float = 5e-5  # paper
    steps: int = 2000  # paper: optimizer steps
    batch_size: int = 8  # paper: per device
    grad_accum: int = 1
    warmup_steps: int = 0
    scheduler: str = "constant_with_warmup"  # any transformers.get_scheduler name
    weight_decay: float = 0.0
    log_every: int = 10
    save_every: int = 500
    val_every: int = 500
    merge: bool = False  # also write merged/ (LoRA folded into the base)
    group_by_length: bool = False  # batches of similar token counts (less padding; `loop.Batches`)
    replay: str | None = None  # a JSONL file of (messages, response) pairs to mix in (the demo: the student's own answers)
    replay_share: float = 0.5  # the share of the training examples that are replayed
    subdir: str = "sft"  # the folder inside the run directory it trains into (a plain name)


def main(cfg: SFTConfig) -> dict:
    if cfg.target not in TARGETS:
        raise ConfigError(f"unknown SFT target {cfg.target!r} (known: {', '.join(TARGETS)})")
    run_dir = Path(cfg.out)
    examples, inputs = load_examples(run_dir, cfg)
    accelerator, stage = open_training(run_dir, cfg, inputs | model_inputs(cfg.model), cfg.grad_accum,
                                      micro_batch=cfg.batch_size)
    if stage.done:
        return stage.manifest

    model, processor = load_model(cfg.model, cfg.dtype, training=True)
    if cfg.lora.enabled and not hasattr(model, "peft_config"):
        model = add_lora(model, cfg.lora)
    recompute = checkpointing("sft", cfg, accelerator, lambda: memory.shapes_of(
        processor, [m for m, _ in examples], [r for _, r in examples]))
    model = prepare_for_training(model, recompute, cfg.freeze)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def step(next_batch, number: int) -> dict:
        losses = []
        for _ in range(cfg.grad_accum):
            batch = build_batch(processor, [examples[i] for i in next_batch()]).to(accelerator.device)
            with accelerator.accumulate(model):
                loss = response_loss(model, batch)  # model(**batch).loss, without the [B, T, V] logits
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(accelerator.gather(loss.detach()).mean().item())
        return {"loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0]}

    lengths = None
    if cfg.group_by_length:
        lengths = [token_count(processor, m, given + r) for m, r, given in map(with_given, examples)]
    state = train(accelerator, stage, cfg, model, processor, step, name="sft", items=len(examples),
                  batch_size=cfg.batch_size, batches_per_step=cfg.grad_accum, lengths=lengths,
                  val_method="zero_shot_cot" if cfg.target == "cot" else "direct", show={"loss": ".4f"})
    if cfg.merge:
        save_model(accelerator, model, processor, RunDir(run_dir).training(cfg.subdir).merged, merge=True)
    if not accelerator.is_main_process:
        return {}
    manifest = finish_training(stage, cfg, state, "loss", {"examples": len(examples)}, target=cfg.target)
    c = manifest["counts"]
    print(f"sft: {state['step']} steps on {len(examples)} training examples ({cfg.target}); loss "
          f"{c['first_loss']:.4f} → {c['last_loss']:.4f} → {run_dir / cfg.subdir}")
    return manifest


# --- data --------------------------------------------------------------------------------------


def token_count(processor, messages: list[dict], response: str) -> int:
    """The rendered conversation's text tokens (each clip counts as its placeholder: AVQA's are all
    10 s long, so the audio adds the same to every example)."""
    return len(processor.tokenizer(render(processor, messages, response)).input_ids)


def load_examples(run_dir: Path, cfg: SFTConfig) -> tuple[list[tuple], dict]:
    """(messages, response) pairs for the target — (messages, response, given) where an example has
    `given` — with `replay` mixed in, and the hashes of the files they came from."""
    examples, inputs = _target_examples(run_dir, cfg)
    if not cfg.replay:
        return examples, inputs
    if not 0 < cfg.replay_share < 1:
        raise ConfigError(f"replay_share is a share of the examples (0 < share < 1), not {cfg.replay_share}")
    replayed, replay_inputs = _read_examples(cfg.replay)
    wanted = round(len(examples) * cfg.replay_share / (1 - cfg.replay_share))
    random.Random(cfg.seed).shuffle(replayed)
    return examples + [replayed[i % len(replayed)] for i in range(wanted)], {**inputs, **replay_inputs}


def _target_examples(run_dir: Path, cfg: SFTConfig) -> tuple[list[tuple[list[dict], str]], dict]:
    target, answer, run = cfg.target, cfg.answer, RunDir(run_dir)
    if target == "examples":
        return _read_examples(cfg.examples)
    if target == "cot":  # the corpus stands alone: each row holds its question, options and audio
        if Path(cfg.corpus).name != cfg.corpus:
            raise ValueError(f"corpus must be a file name in the run directory, not {cfg.corpus!r}")
        sources = [rundir.needed(run / cfg.corpus, "verify")]
        examples = [(prompts.student_turn(row, "zero_shot_cot", answer), row.text.strip())
                    for row in read_jsonl(sources[0], CorpusRow)]
    elif target == "teacher_label":
        sources = [run.samples, rundir.needed(run.consensus, "teach")]
        samples = {s.id: s for s in read_jsonl(run.samples, Sample)}
        examples = [(prompts.student_turn(samples[r.id], "direct", answer),
                     prompts.label_text(samples[r.id].options, r.label, answer))
                    for r in read_jsonl(run.consensus, Consensus) if r.unanimous]
    else:
        sources = [run.samples]
        examples = [(prompts.student_turn(s, "direct", answer),
                     prompts.label_text(s.options, s.answer if s.options else s.answer_text, answer))
                    for s in read_jsonl(run.samples, Sample)]
    if not examples:
        raise ValueError(f"{sources[-1]}: no training examples for target {target!r}")
    return examples, {str(path): sha256_file(path) for path in sources}



def _read_examples(path: str | None) -> tuple[list[tuple], dict]:
    if not path:
        raise ValueError("target examples needs `examples`: a JSONL file of {messages, response} lines")
    examples = []
    for number, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row.get("messages"), list) or not isinstance(row.get("response"), str):
            raise ValueError(f"{path}: line {number}: needs `messages` (a list) and `response` (a string)")
        for message in row["messages"]:
            if isinstance(message["content"], list):
                message["content"] = [_frames_loaded(part) for part in message["content"]]
        if not isinstance(row.get("given", ""), str):
            raise ValueError(f"{path}: line {number}: `given` must be a string (the reply's opening, read but not learned)")
        examples.append((row["messages"], row["response"], row["given"]) if row.get("given") else
                        (row["messages"], row["response"]))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples, {str(path): sha256_file(path)}


def _frames_loaded(part: dict) -> dict:
    """A video part naming a frames file holds the frames themselves (read once, not at every batch)."""
    return {"type": "video", "frames": video_frames(part)} if part["type"] == "video" else part


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    text = (f"{c.get('examples')} examples, {c.get('steps')} steps, "
            f"loss {formats.num(c.get('first_loss'))} → {formats.num(c.get('last_loss'))}")
    return text + formats.best_val(c)
