"""eval: a model on a prepared benchmark with one of the paper's inference methods.

    sightsound eval --samples runs/mmau/samples.jsonl --out runs/eval/mmau-direct \\
        model.model=Qwen/Qwen2-Audio-7B-Instruct method=direct label="Qwen2-Audio-7B-Instruct"

Methods (paper Tables 1-2):
- `direct`: the model answers from its `inputs` (audio, video or both) with the option letter only.
- `zero_shot_cot`: the same inputs, asked to reason in <think> and answer in <answer>.
- `zero_shot_audio_cot`: a vision model on the *silent* video with the teacher's audio-focused prompt.
- `test_time_cot_distill`: the student hears the audio, with the teacher's trace for the same clip
  (from `teacher_traces`, a teach stage's traces.jsonl) placed in its prompt.
A trained checkpoint is evaluated by pointing `model.model` at it (with `direct` or `zero_shot_cot`).

Writes `OUT/predictions.jsonl` (per sample: prompt, response, pred_index, correct, category, ...),
`OUT/result.json` (accuracy overall, per category, per difficulty / modality where the benchmark
has them, the paper's columns, counts, and the dataset file's hash) and a manifest. Resumable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sightsound import answers, media, prompts, scoring
from sightsound.config import config_hash
from sightsound.models import ModelConfig, Request, Sampling, load_backend
from sightsound.records import (JsonlWriter, Prediction, Sample, begin_stage, model_inputs, read_jsonl,
                                read_manifest, sha256_file, write_json, write_manifest)

METHODS = ("direct", "zero_shot_cot", "zero_shot_audio_cot", "test_time_cot_distill")

# The paper's Table 2 columns: MMAU by task; MUSIC-AVQA by question type over the audio and
# audio-visual questions (Location and visual-only questions reported apart).
PAPER_COLUMNS = {
    "mmau": {"columns": ["sound", "speech", "music"], "modalities": None},
    "music-avqa": {"columns": ["Temporal", "Comparative", "Counting", "Existential"],
                   "modalities": ["Audio", "Audio-Visual"]},
}


@dataclass
class EvalConfig:
    samples: str = "runs/demo/eval/samples.jsonl"  # a prepared benchmark
    out: str = "runs/demo/eval/direct"  # predictions.jsonl, result.json
    model: ModelConfig = field(default_factory=lambda: ModelConfig(model="runs/tiny/student"))
    label: str | None = None  # the model's name in reports (default: model.model)
    method: str = "direct"  # one of METHODS
    answer: str = "letter"  # letter | text: how the prompt asks for a multiple-choice answer
    inputs: str = "audio"  # audio | video | both (zero_shot_audio_cot always uses video)
    teacher_traces: str | None = None  # traces.jsonl, for test_time_cot_distill
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy
    num_frames: int = 8
    frame_size: int | None = 448
    scorer: str = "default"  # default | mmau (MMAU's official string rule)
    similarity_threshold: float | None = answers.SIMILARITY_THRESHOLD  # the extractor's fallback; null: off
    chunk: int = 32
    limit: int | None = None
    progress: bool = True


def main(cfg: EvalConfig) -> dict:
    _check(cfg)
    out = Path(cfg.out)
    samples_path = Path(cfg.samples)
    inputs = {str(samples_path): sha256_file(samples_path), **model_inputs(cfg.model.model)}
    if cfg.teacher_traces:
        inputs[cfg.teacher_traces] = sha256_file(cfg.teacher_traces)
    digest = config_hash(cfg)
    predictions_path = out / "predictions.jsonl"
    manifest = begin_stage(out, "eval", cfg, digest, inputs, [predictions_path])
    if manifest is not None:
        print(f"eval: already done in {out}")
        return manifest
    started = time.time()

    samples = list(read_jsonl(samples_path, Sample))[: cfg.limit]
    traces = _first_traces(cfg.teacher_traces) if cfg.method == "test_time_cot_distill" else {}
    backend = None
    failures, unusable = 0, {}
    with JsonlWriter(predictions_path) as predictions:
        todo = [s for s in samples if s.id not in predictions]
        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"eval {cfg.method}", unit="q",
                   disable=not cfg.progress)
        for start in range(0, len(todo), cfg.chunk):
            chunk = todo[start:start + cfg.chunk]
            backend = backend or load_backend(cfg.model)
            answered, bad, failed = answer_all(backend, chunk, cfg, traces)
            for prediction in answered:
                predictions.write(prediction)
            unusable.update(bad)
            failures += failed
            bar.update(len(chunk))
        bar.close()

    result = summarize(predictions_path, samples, cfg, inputs)
    result["unusable"] = unusable
    write_json(out / "result.json", result)
    if failures:
        print(f"eval: {failures} questions failed in the backend; rerun to retry them (no manifest written)")
        return result
    write_manifest(out, "eval", config_hash=digest, inputs=inputs, started=started,
                   counts={"questions": result["count"], "accuracy": result["accuracy"]})
    print(f"eval: {cfg.label or cfg.model.model} / {cfg.method}: accuracy {result['accuracy']:.4f} "
          f"over {result['count']} questions → {out / 'result.json'}")
    return result


def _check(cfg: EvalConfig) -> None:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r} (known: {', '.join(METHODS)})")
    if cfg.inputs not in ("audio", "video", "both"):
        raise ValueError(f"inputs must be audio, video or both, not {cfg.inputs!r}")
    if cfg.method == "test_time_cot_distill" and not cfg.teacher_traces:
        raise ValueError("test_time_cot_distill needs teacher_traces (a teach stage's traces.jsonl)")
    if not Path(cfg.samples).exists():
        raise FileNotFoundError(f"{cfg.samples}: not found; run `sightsound prepare` first")


def answer_all(backend, samples: list[Sample], cfg: EvalConfig, traces: dict[str, str] | None = None
               ) -> tuple[list[Prediction], dict[str, str], int]:
    """Ask each sample once, greedily: (predictions, unusable sample → why, backend failures)."""
    requests, unusable = {}, {}
    for sample in samples:
        try:
            requests[sample.id] = Request(sample.id, messages(sample, cfg, traces or {}))
        except (media.MediaError, ValueError) as exc:  # cannot be asked: reported, not scored
            unusable[sample.id] = str(exc)
    by_id = {s.id: s for s in samples}
    sampling = Sampling(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=0)
    predictions, failures = [], 0
    for generation in backend.generate(list(requests.values()), sampling):
        if generation.error:  # left for the next run
            failures += 1
            continue
        prompt = requests[generation.request_id].messages[0]["content"][-1]["text"]
        predictions.append(predict(by_id[generation.request_id], prompt, generation.texts[0], cfg))
    if cfg.similarity_threshold is not None:
        _closest_for_unmatched(predictions, cfg)
    return predictions, unusable, failures


def _closest_for_unmatched(predictions: list[Prediction], cfg: EvalConfig) -> None:
    """The paper's fallback (closest option by content similarity) for every answer that named no
    option, in one embedding call rather than one per answer."""
    unmatched = [p for p in predictions if p.options and p.pred_index is None]
    if not unmatched:
        return
    closest = answers.closest_options([p.response for p in unmatched], [p.options for p in unmatched],
                                      cfg.similarity_threshold)
    for prediction, pred in zip(unmatched, closest):
        prediction.pred_index = pred
        if pred is not None and cfg.scorer == "default":  # the mmau rule judges the text, not the index
            expected = prediction.options[answers.option_index(prediction.answer, prediction.options)]
            prediction.correct = answers.same_option(prediction.options[pred], expected)


def messages(sample: Sample, cfg: EvalConfig, traces: dict[str, str]) -> list[dict]:
    """The one user turn a method asks: media parts, then the prompt text."""
    inputs = "video" if cfg.method == "zero_shot_audio_cot" else cfg.inputs
    parts = []
    if inputs in ("video", "both"):
        if not sample.video:
            raise media.MediaError(f"sample {sample.id}: no video", "media-missing")
        frames = media.decode(sample.video, num_frames=cfg.num_frames, frame_size=cfg.frame_size, audio=False).frames
        parts.append({"type": "video", "frames": frames})
    if inputs in ("audio", "both"):
        parts.append({"type": "audio", "path": sample.audio})
    # Models that hear get the paper's audio variant of the question ("video" → "audio").
    question = sample.question if inputs == "video" else prompts.audio_variant(sample.question)
    if cfg.method == "direct":
        text = prompts.fill(prompts.DIRECT_PROMPT, question, sample.options, cfg.answer)
    elif cfg.method == "zero_shot_cot":
        text = prompts.fill(prompts.STUDENT_PROMPT, question, sample.options, cfg.answer)
    elif cfg.method == "zero_shot_audio_cot":
        text = prompts.fill(prompts.TEACHER_PROMPT, question, sample.options, cfg.answer)
    else:
        trace = traces.get(sample.id)
        if trace is None:
            raise ValueError(f"sample {sample.id}: no teacher trace in {cfg.teacher_traces}")
        text = prompts.fill(prompts.DISTILL_PROMPT, question, sample.options, cfg.answer, trace=trace)
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def _first_traces(path: str) -> dict[str, str]:
    """The teacher's first trace per sample (its reasoning, without the teacher's own answer)."""
    traces: dict[str, str] = {}
    for row in read_jsonl(path):
        if row["index"] == 0:
            traces[row["sample_id"]] = answers.think_text(row["text"])
    return traces


def predict(sample: Sample, prompt: str, response: str, cfg: EvalConfig) -> Prediction:
    row = {"response": response, "options": sample.options,
           "answer": sample.answer if sample.options else sample.answer_text}
    # The similarity fallback runs afterwards, batched over all unmatched answers (_closest_for_unmatched).
    pred, correct = scoring.judge(row, cfg.scorer, similarity_threshold=None)
    groups = {k: sample.meta[k] for k in ("difficulty", "modality") if k in sample.meta}
    return Prediction(id=sample.id, prompt=prompt, response=response, options=sample.options,
                      answer=row["answer"], pred_index=pred, correct=correct, category=sample.category,
                      meta={"dataset": sample.dataset, **groups})


def summarize(predictions_path: Path, samples: list[Sample], cfg: EvalConfig, inputs: dict) -> dict:
    ids = {s.id for s in samples}
    rows = [r for r in read_jsonl(predictions_path) if r["id"] in ids]
    dataset = samples[0].dataset if samples else None
    result = {
        "label": cfg.label or cfg.model.model,
        "method": cfg.method,
        "inputs": "video" if cfg.method == "zero_shot_audio_cot" else cfg.inputs,
        "dataset": dataset,
        "scorer": cfg.scorer,
        **(scoring.tally([r["correct"] for r in rows]) if rows else {"accuracy": 0.0, "count": 0, "correct": 0}),
        "unmatched": sum(1 for r in rows if r["options"] and r["pred_index"] is None),
        "per_category": _by(rows, lambda r: r["category"]),
        "per_difficulty": _by(rows, lambda r: r["meta"].get("difficulty")),
        "per_modality": _by(rows, lambda r: r["meta"].get("modality")),
        "dataset_files": _dataset_files(Path(cfg.samples)),
        "inputs_sha256": inputs,
    }
    if dataset in PAPER_COLUMNS:
        spec = PAPER_COLUMNS[dataset]
        kept = [r for r in rows if spec["modalities"] is None or r["meta"].get("modality") in spec["modalities"]]
        kept = [r for r in kept if r["category"] in spec["columns"]] if spec["modalities"] else kept
        columns = _by(kept, lambda r: r["category"])
        result["paper"] = {"columns": {c: columns.get(c) for c in spec["columns"]},
                           "avg": scoring.tally([r["correct"] for r in kept]) if kept else None}
    return result


def _by(rows: list[dict], key) -> dict:
    groups: dict[str, list[bool]] = {}
    for r in rows:
        if key(r) is not None:
            groups.setdefault(str(key(r)), []).append(r["correct"])
    return {name: scoring.tally(marks) for name, marks in sorted(groups.items())}


def _dataset_files(samples_path: Path) -> dict:
    """The benchmark files the samples came from, with their sha256 (prepare's manifest)."""
    manifest = read_manifest(samples_path.parent, "prepare")
    return manifest["inputs"] if manifest else {}
