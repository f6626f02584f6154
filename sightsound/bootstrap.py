"""Give the demo's tiny models the paper's roles, by the project's own SFT on the synthetic world's truth.

    sightsound run configs/demo.yaml          # the `bootstrap` section runs first (and is cached)

A freshly built tiny model knows nothing, so nothing would flow through the pipeline. This stage
generates a separate synthetic world, builds the tiny Qwen models, fine-tunes the **teacher**
(Qwen2.5-VL: a watcher's reasoning from the frames) and the **student** (Qwen2-Audio: perception
only, direct answers) with `sightsound sft` (target `examples`), and calibrates the **checker**, an
audio–text verifier. Each role is measured on held-out clips, into the manifest; everything lives
under `out` and is reused when done. It runs other stages (synth, prepare, sft), so it sits above them.
Details: docs/reference.md, "sightsound/bootstrap.py".
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from sightsound import answers, media, prompts
from sightsound.checking import verifier
from sightsound.config import config_hash
from sightsound.datasets.synth import oracle
from sightsound.datasets.synth.world import QUESTION_TYPES, SynthConfig
from sightsound.inference import Asking, answer_all
from sightsound.manifest import read_manifest, write_manifest
from sightsound.models import ModelConfig, Request, Sampling, load_backend, tiny
from sightsound.records import Sample
from sightsound.rundir import RunDir
from sightsound.rl import format_reward
from sightsound.scoring import rejection_metrics, unparsable
from sightsound.stages import prepare, sft, synth
from sightsound.store import read_jsonl, sha256_file

ROLES = ("teacher", "student", "checker")  # made in this order: the checker uses the student's audio encoder
RECIPE = 2  # what the roles learn from (the example builders below); bumped when they change, so a cache is rebuilt


@dataclass
class RoleConfig:
    steps: int = 400
    lr: float = 1e-3
    batch_size: int = 16


@dataclass
class CheckerRole:
    steps: int = 500  # full-batch AdamW steps of the verifier's classifier
    lr: float = 0.01
    rank: int = 16  # width of its audio and text projections
    features: str = "log-mel"  # what it hears: the student checkpoint's log-mel frames (its tower hears little)
    pooling: str = "mean+max"


@dataclass
class BootstrapConfig:
    out: str = "runs/demo-models"  # the bootstrapped models are cached here
    world: SynthConfig = field(default_factory=lambda: SynthConfig(clips=600, seed=1, val_fraction=0.1))
    teacher_questions: list[str] = field(default_factory=lambda: ["Which", "Count"])  # the in-domain types
    student_questions: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))  # its own hearing, every type
    num_frames: int = 4
    frame_size: int = 56
    teacher: RoleConfig = field(default_factory=lambda: RoleConfig(steps=600))
    checker: CheckerRole = field(default_factory=CheckerRole)
    student: RoleConfig = field(default_factory=lambda: RoleConfig(steps=300))
    student_audio: dict[str, int] = field(default_factory=dict)  # its audio encoder over tiny.AUDIO: narrower hears less
    heldout_limit: int = 64  # held-out questions each role is measured on
    seed: int = 0
    progress: bool = True


def cache_key(cfg: BootstrapConfig) -> str:
    """What a cached bootstrap must match to be reused: its config and the recipe of its examples
    (models trained from an older recipe are not the roles this code describes)."""
    return f"{config_hash(cfg)}-recipe{RECIPE}"


def models(cfg: BootstrapConfig) -> dict[str, str]:
    """Where each bootstrapped role is saved: HF folders for the teacher and the student, a verifier
    folder for the checker."""
    out = RunDir(cfg.out)
    return {"teacher": str(out.training("teacher").final), "student": str(out.training("student").final),
            "checker": str(out / "checker")}  # the checker is a verifier folder, not an HF checkpoint


def main(cfg: BootstrapConfig) -> dict:
    out = Path(cfg.out)
    digest = cache_key(cfg)
    done = read_manifest(out, "bootstrap")
    if done is not None and done["config_hash"] == digest and all(Path(p).exists() for p in models(cfg).values()):
        print(f"bootstrap: already done in {out} (models reused)")
        return done
    started = time.time()
    print(f"bootstrap: training the demo's tiny models into their roles (teacher, student, checker) in {out}: "
          f"about {_minutes(cfg)} minutes on 2 CPU cores, once (later runs reuse them)")

    world = dataclasses.replace(cfg.world, out=str(RunDir(out).world), progress=cfg.progress)
    synth.main(world)
    for split in ("train", "val"):
        prepare.main(prepare.PrepareConfig(dataset="synth", root=world.out, split=split, out=str(out / split),
                                           num_frames=cfg.num_frames, frame_size=cfg.frame_size,
                                           progress=cfg.progress))
    tiny.build_all(out / "base", seed=cfg.seed, student_audio=cfg.student_audio)  # seconds; follows the config

    train_samples, val_samples = RunDir(out / "train").samples, RunDir(out / "val").samples
    rng = random.Random(cfg.seed)
    train = list(read_jsonl(train_samples, Sample))
    visual = with_other_targets([s for s in train if s.category in cfg.teacher_questions], rng)
    still_rng = random.Random(cfg.seed + 1)  # its own draws: the student's examples stay as they were
    write_examples(out / "examples" / "teacher.jsonl",
                   [teacher_example(s, rng) for s in visual]
                   + [teacher_example(s, still_rng) for s in with_still_sources(visual, still_rng)])
    write_examples(out / "examples" / "checker.jsonl", [ex for s in one_per_clip(visual) for ex in checker_examples(s)])
    own = with_other_targets([s for s in train if s.category in cfg.student_questions], rng)
    write_examples(out / "examples" / "student.jsonl", [ex for s in own for ex in student_examples(s, rng, visual)])
    base = {"teacher": out / "base" / "teacher", "student": out / "base" / "student"}
    training = {}
    for role in ("teacher", "student"):
        role_cfg: RoleConfig = getattr(cfg, role)
        manifest = sft.main(sft.SFTConfig(
            out=str(out), subdir=role, model=str(base[role]), target="examples",
            examples=str(out / "examples" / f"{role}.jsonl"), lora=sft.LoraConfig(enabled=False),
            lr=role_cfg.lr, steps=role_cfg.steps, batch_size=role_cfg.batch_size, scheduler="constant",
            seed=cfg.seed, log_every=10, save_every=role_cfg.steps, keep_checkpoints=1, progress=cfg.progress))
        training[role] = manifest["counts"]
    info = verifier.train(verifier.TrainConfig(
        calibration=str(out / "examples" / "checker.jsonl"), out=models(cfg)["checker"],
        audio_encoder=models(cfg)["student"], features=cfg.checker.features, pooling=cfg.checker.pooling,
        steps=cfg.checker.steps, lr=cfg.checker.lr, rank=cfg.checker.rank, seed=cfg.seed))
    training["checker"] = {"examples": info["calibration"]["train"], "steps": cfg.checker.steps}
    training["student"]["replay"] = write_replay(cfg, own, out / "examples" / REPLAY)

    heldout = list(read_jsonl(val_samples, Sample))
    counts = {"train_questions": len(train), "training": training, **measure(cfg, heldout)}
    inputs = {str(train_samples): sha256_file(train_samples)}
    manifest = write_manifest(out, "bootstrap", config_hash=digest, inputs=inputs, counts=counts, started=started,
                              models=models(cfg))
    print("bootstrap: " + json.dumps({k: v for k, v in counts.items() if k != "training"}))
    return manifest


# --- what each role learns from ------------------------------------------------------------------


PICK_ONE = ("Which", "Hear")  # "which of these is sounding": one heard source among silent ones


def with_other_targets(samples: list[Sample], rng: random.Random) -> list[Sample]:
    """The samples, then each "which one sounds" question asked again of every other heard source
    of its clip (`<id>~<name>`), as the world could have asked it: the same clip with other
    options and another answer, so a model must read the options, not just name what it sees.
    Both roles learn from them. Without, 23% of the teacher's in-domain "which" answers named no
    option, and up to 29% of the student's direct answers (a sound it heard that is not among the
    options); with, 0.7% and 0%. Reading the options lifts the student's in-domain accuracy too
    (to 67.6%, Qwen2-Audio's 67.1% on AVQA); the premise holds because the teacher sees 8 frames,
    not 4 (82.4% against 72–74%)."""
    names = list(dict.fromkeys(name for s in samples for name in s.options if s.category in PICK_ONE))
    extra = []
    for sample in samples:
        if sample.category not in PICK_ONE:
            continue
        heard = [s["name"] for s in sample.meta["facts"]["sources"] if s["sounding"]]
        silent = [name for name in names if name not in heard]
        for name in heard:
            if name != sample.options[sample.answer]:
                options = [name] + rng.sample(silent, min(3, len(silent)))
                rng.shuffle(options)
                extra.append(asked_again(sample, name, options, name))
    return samples + extra


def with_still_sources(samples: list[Sample], rng: random.Random) -> list[Sample]:
    """Each "which one sounds" question of a clip where a source is seen but still, asked again
    (`<id>~still`) with every still source among its options, the rest of them silent: a watcher
    must answer with what its reasoning says is sounding, not with any source it sees. Only the
    teacher learns from them. Without, the teacher answered with a source its own reasoning had
    called silent in 21 of the demo pipeline's 145 in-domain "which" questions; over two training
    draws of 900 steps, its in-domain accuracy rose from 79.7% / 81.0% to 83.8% / 84.1% and its
    agreement with a perfect watcher from 91–92% to 96–97% (with 1,100 steps, the demo's: 85.2%;
    Qwen2.5-VL-32B: 85.5% on AVQA)."""
    extra = []
    for sample in samples:
        still = [s["name"] for s in sample.meta["facts"]["sources"] if s["visible"] and not s["moving"]]
        if sample.category not in PICK_ONE or not still:
            continue
        answer = sample.options[sample.answer]
        others = [name for name in sample.options if name != answer and name not in still]
        options = [answer] + still + rng.sample(others, len(sample.options) - 1 - len(still))
        rng.shuffle(options)
        extra.append(asked_again(sample, "still", options, answer))
    return extra


def asked_again(sample: Sample, tag: str, options: list[str], answer: str) -> Sample:
    """`sample`'s question asked again of the same clip (`<id>~<tag>`), with other options."""
    return dataclasses.replace(sample, id=f"{sample.id}~{tag}", options=options, answer=options.index(answer),
                               answer_text=answer)


def teacher_example(sample: Sample, rng: random.Random) -> dict:
    reasoning = oracle.visual_reasoning(sample.meta["facts"]["sources"])
    answer = sample.options[rng.choice(oracle.watcher_choices(sample))]
    return {"messages": prompts.teacher_turn(sample.meta["frames"], sample.question, sample.options, "text"),
            "response": f"<think>{reasoning}</think><answer>{answer}</answer>"}


def checker_examples(sample: Sample) -> list[dict]:
    """Calibration lines for the checker (`audio`, `text`, `label`): the watcher's own reasoning
    about the clip and, for each visible source in turn, that reasoning with the source's motion
    flipped (a silent source said to sound, or a sounding one said to be silent); each labelled
    true (accept) when every source it says is sounding can be heard. Flipping every visible source
    rather than one at random raised the checker's rejection F1 on the demo pipeline's traces
    from 0.67 to 0.79 (same clips, 1,379 → 1,814 lines)."""
    facts = sample.meta["facts"]
    variants = [facts["sources"]]
    for number, source in enumerate(facts["sources"]):
        if source["visible"]:
            flipped = [dict(s) for s in facts["sources"]]
            flipped[number]["moving"] = not source["moving"]
            variants.append(flipped)
    texts = list(dict.fromkeys(oracle.visual_reasoning(variant) for variant in variants))  # distinct, in order
    return [{"audio": sample.audio, "text": text, "label": not oracle.hallucinated(text, facts)} for text in texts]


def one_per_clip(samples: list[Sample]) -> list[Sample]:
    """The first question of each clip (a clip's calibration lines do not depend on the question)."""
    first = {}
    for sample in samples:
        first.setdefault(sample.audio, sample)
    return list(first.values())


STUDENT_THINKING = "I listen to the audio."  # the student's own chain of thought: no reasoning in it


REPLAY = "student-replay.jsonl"  # the student's own answers, for SFT to mix in (`sft.replay`)


def student_examples(sample: Sample, rng: random.Random, visual: list[Sample]) -> list[dict]:
    """The student answers each question asked directly, asked to think first, and with a watcher's
    reasoning in the prompt (test-time distillation's format). Like the paper's Qwen2-Audio, whose
    "backbone lacks reasoning capacity for helpful CoT" (§4), its thinking says nothing; the
    reasoning it is shown is of *another* clip, so it learns the format, not to follow a teacher:
    what it answers comes from its hearing alone. Like an instruction-tuned LALM, it answers with
    one of the options whatever its reasoning says: asked to think, it is also handed that other
    clip's reasoning as its own thinking (`given`, read but not learned) and still answers what it
    hears: it learns to end that thinking and answer, not to write it (`measure`:
    given_reasoning_unparsable). Without these examples, a tiny student handed a watcher's
    reasoning named no option in 40-55% of its answers (a sound to "how many?"), and after SFT on
    the teacher's traces answered with a sound from its own reasoning that was not among the
    options; handed the thinking already closed, it did not learn to close it and, after SFT,
    broke off its reasoning mid-word on questions it had not been taught to reason about."""
    answer = prompts.label_text(sample.options, sample.answer, "text")
    thought = f"<think>{STUDENT_THINKING}</think><answer>{answer}</answer>"
    other = oracle.visual_reasoning(rng.choice(visual).meta["facts"]["sources"])
    cot = prompts.student_turn(sample, "zero_shot_cot", "text")
    return [{"messages": prompts.student_turn(sample, "direct", "text"), "response": answer},
            {"messages": cot, "response": thought},
            {"messages": cot, "given": f"<think>{other}", "response": f"</think><answer>{answer}</answer>"},
            {"messages": prompts.student_turn(sample, "test_time_cot_distill", "text", trace=other),
             "response": thought}]


def write_replay(cfg: BootstrapConfig, own: list[Sample], path: Path, limit: int = 600) -> int:
    """What the student itself answers (greedy, right or wrong) to `limit` of its own training
    questions, asked directly and asked to think: SFT mixes these in (`sft.replay`) so that training
    on the teacher's traces keeps the student's format on everything else — its own behaviour, no
    new labels. Returns the number of examples."""
    student = load_backend(ModelConfig(model=models(cfg)["student"], dtype="float32", batch_size=64))
    picked = random.Random(cfg.seed).sample(own, min(limit, len(own)))
    rows = []
    for method in ("direct", "zero_shot_cot"):
        answered, _, _ = answer_all(student, picked, Asking(method=method, answer="text", max_new_tokens=24))
        by_id = {p.id: p.response for p in answered}
        rows += [{"messages": prompts.student_turn(s, method, "text"), "response": by_id[s.id]}
                 for s in picked if s.id in by_id]
    write_examples(path, rows)
    return len(rows)


def write_examples(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# --- how well each role plays its part, on held-out clips ------------------------------------------


def measure(cfg: BootstrapConfig, heldout: list[Sample]) -> dict:
    """Each role on up to `heldout_limit` held-out questions of its own kind; the student on the
    teacher's (in-domain) questions and on twice as many of its other types, asked directly and
    asked to think, with the share of its answers naming no option."""
    paths = models(cfg)
    own = [s for s in heldout if s.category in cfg.student_questions and s.category not in cfg.teacher_questions]
    own = own[: 2 * cfg.heldout_limit]
    heldout = [s for s in heldout if s.category in cfg.teacher_questions][: cfg.heldout_limit]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=96)
    teacher = load_backend(ModelConfig(model=paths["teacher"], dtype="float32", batch_size=64))
    turns = [prompts.teacher_turn(media.load_frames(s.meta["frames"]), s.question, s.options, "text") for s in heldout]
    replies = teacher.generate([Request(s.id, turn) for s, turn in zip(heldout, turns)], greedy)
    picked = [answers.match_option(g.texts[0] if g.texts else "", s.options, similarity_threshold=None)
              for s, g in zip(heldout, replies)]
    told = [oracle.visual_reasoning(s.meta["facts"]["sources"]) for s in heldout]
    said = [answers.think_text(g.texts[0]) if g.texts else "" for g in replies]
    teacher_scores = {"format": _share(format_reward(g.texts[0] if g.texts else "") for g in replies),
                      "reasoning_exact": _share(a.strip() == b for a, b in zip(said, told)),
                      "accuracy": _share(p == s.answer for p, s in zip(picked, heldout)),
                      "watcher_agreement": _share(p in oracle.watcher_choices(s) for p, s in zip(picked, heldout))}

    cases = [ex for s in one_per_clip(heldout) for ex in checker_examples(s)]
    p_accept = verifier.Verifier.load(paths["checker"]).predict([c["audio"] for c in cases], [c["text"] for c in cases])
    should_reject = [not c["label"] for c in cases]
    rejected = [p < 0.5 for p in p_accept]
    checker_scores = {"accuracy": _share(a == b for a, b in zip(should_reject, rejected)),
                      **rejection_metrics(should_reject, rejected)}

    student = load_backend(ModelConfig(model=paths["student"], dtype="float32", batch_size=64))
    scores = {}
    for name, questions in (("direct", heldout), ("perception", own)):
        for method in ("direct", "zero_shot_cot"):
            answered, _, _ = answer_all(student, questions, Asking(method=method, answer="text", max_new_tokens=24))
            key = name if method == "direct" else f"{name}_cot"
            scores[f"{key}_accuracy"] = _share(p.correct for p in answered)
            scores[f"{key}_unparsable"] = unparsable([dataclasses.asdict(p) for p in answered])["share"]
    half = len(told) // 2
    others = told[half:] + told[:half]  # another clip's reasoning (a clip's two questions sit together), handed as its own
    replies = continuations(paths["student"], [prompts.student_turn(s, "zero_shot_cot", "text") for s in heldout],
                            [f"<think>{o}" for o in others], follows="</think>")
    rows = [{"response": reply, "options": s.options} for reply, s in zip(replies, heldout)]
    scores["given_reasoning_accuracy"] = _share(answers.match_option(r["response"], s.options) == s.answer
                                                for r, s in zip(rows, heldout))
    scores["given_reasoning_unparsable"] = unparsable(rows)["share"]
    return {"heldout_questions": len(heldout), "teacher": teacher_scores, "checker": checker_scores,
            "student": scores}


def continuations(model_path: str, turns: list[list[dict]], openings: list[str], follows: str = "",
                  max_new_tokens: int = 24) -> list[str]:
    """Each reply a model writes (greedy) when handed its opening: how the demo measures a student's
    answers after a reasoning it did not write (the backends generate replies from their start, so
    this reads the checkpoint directly). The model is fed the opening's tokens up to where
    `follows` (what comes next in training, e.g. "</think>") would join it, as SFT trains it
    (`training.student.reply_token_count`); the reply returned starts with what it was fed."""
    import torch

    from sightsound.models.loading import encode, load_model, render
    from sightsound.training.student import reply_token_count

    model, processor = load_model(model_path)
    model.eval()
    tokenizer = processor.tokenizer
    replies = []
    for turn, opening in zip(turns, openings):  # one at a time: each is cut at its own token
        text, prompt = render(processor, turn, opening + follows), render(processor, turn)
        cut = reply_token_count(tokenizer, text, len(prompt + opening))
        inputs = encode(processor, [turn], "left", responses=[opening + follows])
        prompt_length = inputs["input_ids"].shape[1] - reply_token_count(tokenizer, text, len(prompt))
        inputs["input_ids"], inputs["attention_mask"] = inputs["input_ids"][:, :-cut], inputs["attention_mask"][:, :-cut]
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        replies.append(tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True))
    return replies


def _minutes(cfg: BootstrapConfig) -> int:
    """A rough forecast, from the demo's own timing on 2 CPU cores: 444 s for a 900-clip world, a
    teacher's 900 steps of batch 16 on 8 frames and a student's 600 (a teacher's step costs about
    one per 4 frames; about a quarter of it all is the world and its measurement). With the
    student at 900 steps it forecasts 486 s; measured: 469 s. With the teacher at 1,100 as well:
    541 s forecast, 516 s measured."""
    teacher = cfg.teacher.steps * cfg.teacher.batch_size * max(cfg.num_frames, 1) / 4
    steps = teacher + cfg.student.steps * cfg.student.batch_size
    return max(1, round((0.25 * cfg.world.clips / 900 + 0.75 * steps / 38_400) * 444 / 60))


def _share(flags) -> float:
    flags = list(flags)
    return round(sum(bool(f) for f in flags) / len(flags), 4) if flags else 0.0


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    return (f"{c.get('train_questions')} training questions, {c.get('heldout_questions')} held out; "
            f"roles trained: {', '.join(c.get('training') or {}) or '—'}")
