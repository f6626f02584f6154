"""eval: a model on a prepared benchmark with one of the paper's inference methods.

    sightsound eval --samples runs/mmau/samples.jsonl --out runs/eval/mmau-direct \\
        model.model=Qwen/Qwen2-Audio-7B-Instruct method=direct label="Qwen2-Audio-7B-Instruct"

Methods (paper Tables 1-2): `direct`, `zero_shot_cot`, `zero_shot_audio_cot` (a vision model on
the silent video) and `test_time_cot_distill` (the teacher's trace in the student's prompt); a
trained checkpoint is evaluated by pointing `model.model` at it. Questions are asked and judged by
`sightsound.inference`, with the benchmark's own scorer unless `scorer` says otherwise. Writes
`OUT/predictions.jsonl`, `OUT/result.json` and a manifest; resumable.
Details: docs/reference.md, "sightsound/stages/evaluate.py".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sightsound import answers, datasets, formats, scoring
from sightsound.config import ConfigError
from sightsound.engine import EngineConfig, map_jobs
from sightsound.inference import Asking, answer_all, inputs_of, scorer_for
from sightsound.manifest import input_files, model_inputs, open_stage, read_manifest
from sightsound.models import ModelConfig, load_backend
from sightsound.prompts import METHODS
from sightsound.records import Sample
from sightsound.rundir import RunDir
from sightsound.store import JsonlWriter, read_jsonl, sha256_file, write_json


@dataclass
class EvalConfig(Asking):
    samples: str = "runs/demo/eval/samples.jsonl"  # a prepared benchmark
    out: str = "runs/demo/eval/direct"  # predictions.jsonl, result.json
    model: ModelConfig = field(default_factory=lambda: ModelConfig(model="runs/tiny/student"))
    label: str | None = None  # the model's name in reports (default: model.model)
    benchmark: str | None = None  # the benchmark's name in reports (a pipeline sets it; default: the dataset's)
    teacher_traces: str | None = None  # for test_time_cot_distill: teach's traces.jsonl or the teacher's predictions.jsonl
    chunk: int = 32  # questions sent to the backend at once; predictions are written after each
    limit: int | None = None  # only the first N questions
    engine: EngineConfig = field(default_factory=EngineConfig)  # where the chunks run (sightsound/engine.py)
    progress: bool = True


def main(cfg: EvalConfig) -> dict:
    _check(cfg)
    out = RunDir(cfg.out)
    samples_path = Path(cfg.samples)
    inputs = {str(samples_path): sha256_file(samples_path), **model_inputs(cfg.model.model)}
    if cfg.teacher_traces:
        inputs[cfg.teacher_traces] = sha256_file(cfg.teacher_traces)
    stage = open_stage(out.root, "eval", cfg, inputs, [out.predictions])
    if stage.done:
        return stage.manifest

    samples = list(read_jsonl(samples_path, Sample))[: cfg.limit]
    traces = _first_traces(cfg.teacher_traces) if cfg.method == "test_time_cot_distill" else {}
    failures, unusable = 0, {}
    with JsonlWriter(out.predictions) as predictions:
        todo = [s for s in samples if s.id not in predictions]
        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"eval {cfg.method}", unit="q",
                   disable=not cfg.progress)
        jobs = [todo[start:start + cfg.chunk] for start in range(0, len(todo), cfg.chunk)]
        jobs = [(chunk, {s.id: traces[s.id] for s in chunk if s.id in traces}) for chunk in jobs]
        for (chunk, _), (answered, bad, failed) in map_jobs(cfg.engine, functools.partial(load_backend, cfg.model),
                                                            functools.partial(_answer, cfg), jobs):
            for prediction in answered:
                predictions.write(prediction)
            unusable.update(bad)
            failures += failed
            bar.update(len(chunk))
        bar.close()

    result = summarize(out.predictions, samples, cfg, inputs)
    result["unusable"] = unusable
    write_json(out.result, result)
    if failures:
        stage.incomplete({"questions": result["count"]}, f"{failures} questions failed in the backend")
        return result
    stage.finish({"questions": result["count"], "accuracy": result["accuracy"]})
    hidden = f"; {result['unlabelled']} without a public answer, answered, not scored" if result["unlabelled"] else ""
    print(f"eval: {cfg.label or cfg.model.model} / {cfg.method}: accuracy {formats.num(result['accuracy'])} "
          f"over {result['count']} questions{hidden} → {out.result}")
    return result


def _answer(cfg: EvalConfig, backend, job):
    """A chunk's predictions, unusable samples and backend failures (where an engine runs it)."""
    chunk, traces = job
    return answer_all(backend, chunk, cfg, traces)


def _check(cfg: EvalConfig) -> None:
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r} (known: {', '.join(METHODS)})")
    if cfg.inputs not in ("audio", "video", "both"):
        raise ValueError(f"inputs must be audio, video or both, not {cfg.inputs!r}")
    if cfg.method == "test_time_cot_distill" and not cfg.teacher_traces:
        raise ValueError("test_time_cot_distill needs teacher_traces (a teach stage's traces.jsonl)")
    if not Path(cfg.samples).exists():
        raise FileNotFoundError(f"{cfg.samples}: not found; run `sightsound prepare` first")


def _first_traces(path: str) -> dict[str, str]:
    """The teacher's first trace per sample (its reasoning, without the teacher's own answer), from
    a teach stage's traces.jsonl or from the teacher's own evaluation (predictions.jsonl, one
    response per question: how the demo gives it the benchmark's questions)."""
    traces: dict[str, str] = {}
    for row in read_jsonl(path):
        if "sample_id" in row and row["index"] == 0:
            traces[row["sample_id"]] = answers.think_text(row["text"])
        elif "sample_id" not in row:
            traces[row["id"]] = answers.think_text(row["response"])
    return traces


def summarize(predictions_path: Path, samples: list[Sample], cfg: EvalConfig, inputs: dict) -> dict:
    ids = {s.id for s in samples}
    answered = [r for r in read_jsonl(predictions_path) if r["id"] in ids]
    rows = [r for r in answered if r["correct"] is not None]  # unlabelled questions are not judged
    dataset = samples[0].dataset if samples else None
    result = {
        "label": cfg.label or cfg.model.model,
        "benchmark": cfg.benchmark,
        "method": cfg.method,
        "inputs": inputs_of(cfg),
        "dataset": dataset,
        "split": samples[0].split if samples else None,
        "scorer": scorer_for(cfg, dataset),
        **scoring.tally([r["correct"] for r in rows]),
        "unlabelled": len(answered) - len(rows),
        "unmatched": sum(1 for r in answered if r["options"] and r["pred_index"] is None),
        "unparsable": scoring.unparsable(answered),  # answers the extractor cannot read (no fallback)
        "per_category": _by(rows, lambda r: r["category"]),
        "per_difficulty": _by(rows, lambda r: r["meta"].get("difficulty")),
        "per_modality": _by(rows, lambda r: r["meta"].get("modality")),
        "dataset_files": _dataset_files(Path(cfg.samples)),
        "inputs_sha256": inputs,
    }
    benchmark = datasets.BENCHMARKS.get(dataset)
    if benchmark is not None and benchmark.columns:  # the paper's columns and their average
        kept = rows
        if benchmark.modalities is not None:
            kept = [r for r in rows if r["meta"].get("modality") in benchmark.modalities
                    and r["category"] in benchmark.columns]
        columns = _by(kept, lambda r: r["category"])
        result["paper"] = {"columns": {c: columns.get(c) for c in benchmark.columns},
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
    return input_files(samples_path.parent, manifest) if manifest else {}
