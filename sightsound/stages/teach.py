"""teach: the vision-language teacher watches each *silent* clip and samples n chains of thought.

    sightsound teach --config configs/demo.yaml            # or: sightsound teach --out RUN_DIR model.model=...

Reads `RUN_DIR/samples.jsonl`; writes `traces.jsonl` (`records.Trace`, one per sampled trace) and
`consensus.jsonl` (`records.Consensus`, one vote per sample). A sample is kept for distillation
exactly when the paper keeps it (§3.1): all n extracted answers are the same, recognizable one.
Chunks are sampled with seed + chunk number, so a rerun ends with the records of an uninterrupted
run; a failed request goes to `teach_errors.jsonl` and is retried on the next run.
Details: docs/reference.md, "sightsound/stages/teach.py".
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sightsound import answers, formats, media, prompts
from sightsound.config import ConfigError
from sightsound.datasets.synth import oracle
from sightsound.engine import EngineConfig, map_jobs
from sightsound.manifest import StageRun, model_inputs, open_stage
from sightsound.models import Generation, ModelConfig, Request, Sampling, load_backend
from sightsound.records import Consensus, Sample, Trace
from sightsound.rundir import RunDir
from sightsound.store import JsonlWriter, keep_only, read_jsonl, record_id, sha256_file


IDENTICAL_WARNING = 0.5  # warn when at least this share of samples got n identical traces


@dataclass
class TeachConfig:
    out: str = "runs/demo"  # the run directory: reads samples.jsonl, writes traces/consensus
    model: ModelConfig = field(default_factory=lambda: ModelConfig(model="runs/tiny/teacher"))
    prompt: str = "audio_cot"  # a key of prompts.TEACHER_PROMPTS
    answer: str = "letter"  # letter | text: how the prompt asks for a multiple-choice answer
    n: int = 4  # traces per sample (self-consistency); the paper does not state its n
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # None: the backend's default; -1 tells vLLM not to use the model's own
    max_new_tokens: int = 512
    seed: int = 0
    num_frames: int = 8  # frames shown per clip
    frame_size: int | None = 448  # longest side in pixels
    chunk: int = 32  # samples sent to the backend at once; results are written after each chunk
    limit: int | None = None  # only the first N samples
    engine: EngineConfig = field(default_factory=EngineConfig)  # where the chunks run (sightsound/engine.py)
    progress: bool = True


def main(cfg: TeachConfig) -> dict:
    run = RunDir(cfg.out)
    if not run.samples.exists():
        raise FileNotFoundError(f"{run.samples}: not found; run `sightsound prepare` first")
    if cfg.prompt not in prompts.TEACHER_PROMPTS:
        raise ConfigError(f"unknown teacher prompt {cfg.prompt!r} (known: {', '.join(prompts.TEACHER_PROMPTS)})")
    inputs = {str(run.samples): sha256_file(run.samples), **model_inputs(cfg.model.model)}
    stage = open_stage(run.root, "teach", cfg, inputs, [run.traces, run.consensus, run.teach_errors],
                       note=lambda m: f"{m['counts']['unanimous']} unanimous samples")
    if stage.done:
        return stage.manifest

    samples = list(read_jsonl(run.samples, Sample))[: cfg.limit]
    _forget_votes_without_traces(run, cfg.n)
    with JsonlWriter(run.traces) as traces, JsonlWriter(run.consensus) as consensus, \
            JsonlWriter(run.teach_errors) as errors:
        jobs = []  # (chunk number, its samples, the ids still to do): the number seeds the chunk's draws
        for number, start in enumerate(range(0, len(samples), cfg.chunk)):
            chunk = samples[start:start + cfg.chunk]
            todo = [s.id for s in chunk if s.id not in consensus]
            if todo:
                jobs.append((number, chunk, todo))
        bar = tqdm(total=len(samples), initial=len(samples) - sum(len(todo) for _, _, todo in jobs), desc="teach",
                   unit="clip", disable=not cfg.progress)
        for (number, chunk, todo), (generations, unusable) in map_jobs(
                cfg.engine, functools.partial(load_backend, cfg.model), functools.partial(sample_chunk, cfg), jobs):
            for sample in (s for s in chunk if s.id in todo):
                if sample.id in unusable:
                    consensus.write(vote(sample, [], error=unusable[sample.id]))
                    continue
                generation = generations[sample.id]
                if generation.error or len(generation.texts) < cfg.n:
                    errors.write({"id": f"{sample.id}@{time.time()}", "sample_id": sample.id,
                                  "error": generation.error or f"{len(generation.texts)} of {cfg.n} texts came back"})
                    continue
                sample_traces = [make_trace(sample, i, text) for i, text in enumerate(generation.texts)]
                for trace in sample_traces:
                    traces.write(trace)
                consensus.write(dataclasses.replace(vote(sample, sample_traces), server=generation.server))
            bar.update(len(todo))
        bar.close()

    return count_and_finish(stage, cfg, samples)


def _forget_votes_without_traces(run: RunDir, n: int) -> None:
    """A vote is written after its sample's traces, so one whose traces are not all on disk (a
    damaged traces.jsonl) is dropped: the sample is asked again (its draws are seeded by its
    chunk, so its traces come back the same) and voted on again."""
    if not (run.consensus.exists() and run.traces.exists()):
        return
    have = {record_id(t) for t in read_jsonl(run.traces)}
    complete = lambda row: bool(row.get("error")) or all(f"{row['id']}#{i}" in have for i in range(n))  # noqa: E731
    rows = list(read_jsonl(run.consensus))
    if not all(map(complete, rows)):
        keep_only(run.consensus, complete)
        print(f"teach: {sum(not complete(r) for r in rows)} samples lost some of their traces; asking again")


def sample_chunk(cfg: TeachConfig, backend, job) -> tuple[dict[str, Generation], dict[str, str]]:
    """One chunk's generations by sample id, and the samples that cannot be asked (why): the work
    an engine runs where the model is. The chunk is sampled with seed + its number."""
    number, chunk, todo = job
    requests, unusable = [], {}
    # a local model's draws depend on the whole batch: it gets the whole chunk, as an uninterrupted run did
    for sample in (chunk if getattr(backend, "batch_dependent_draws", True) else [s for s in chunk if s.id in todo]):
        try:
            requests.append(Request(sample.id, teacher_messages(sample, cfg)))
        except media.MediaError as exc:
            unusable[sample.id] = str(exc)
    sampling = Sampling(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + number)
    return {g.request_id: g for g in backend.generate(requests, sampling)}, unusable


def teacher_messages(sample: Sample, cfg: TeachConfig) -> list[dict]:
    """The silent frames and the audio-focused prompt, as one user turn."""
    if not sample.video:
        raise media.MediaError(f"sample {sample.id}: no video for the teacher to watch", "media-missing")
    return prompts.teacher_turn(load_frames(sample, cfg), sample.question, sample.options, cfg.answer, cfg.prompt)


def load_frames(sample: Sample, cfg: TeachConfig) -> np.ndarray:
    """The frames `prepare` cached when their spec matches; otherwise decoded now (video only)."""
    cached = sample.meta.get("frames")
    spec = f".{cfg.num_frames}x{cfg.frame_size or 'full'}.frames.npy"
    if cached and cached.endswith(spec) and Path(cached).exists():
        try:
            return media.load_frames(cached)
        except media.MediaError as exc:  # a damaged cache: decode the video again
            print(f"teach: {exc}; decoding sample {sample.id}'s video instead")
    return media.decode(sample.video, num_frames=cfg.num_frames, frame_size=cfg.frame_size, audio=False).frames


def make_trace(sample: Sample, index: int, text: str) -> Trace:
    answer = answers.extract_answer(text)
    if sample.options:
        pred = answers.match_option(text, sample.options, similarity_threshold=None)
        return Trace(sample.id, index, text, pred, answer=answer)
    return Trace(sample.id, index, text, None, answer=answers.normalize_open(answer) or None)


def vote(sample: Sample, traces: list[Trace], error: str | None = None) -> Consensus:
    """Self-consistency: unanimous when every trace gives the same, recognizable answer."""
    votes = [t.pred_index if sample.options else t.answer for t in traces]
    unanimous = bool(votes) and len(set(votes)) == 1 and votes[0] is not None
    label = votes[0] if unanimous else None
    if sample.options:
        correct = None if sample.answer is None or label is None else label == sample.answer
    else:
        correct = None if label is None else answers.match_open(label, sample.answer_text)
    return Consensus(sample.id, votes, unanimous, label,
                     sample.options[label] if (sample.options and label is not None) else label,
                     correct, sample.category, error)


def count_and_finish(stage: StageRun, cfg: TeachConfig, samples) -> dict:
    """Count what is on disk for these samples, and write the manifest unless some are pending."""
    run = RunDir(stage.run_dir)
    ids = {s.id for s in samples}
    rows = [r for r in read_jsonl(run.consensus, Consensus) if r.id in ids]
    traces = [t for t in read_jsonl(run.traces, Trace) if t.sample_id in ids]
    by_id = {s.id: s for s in samples}
    kept = [r for r in rows if r.unanimous]
    judged = [t for t in traces if by_id[t.sample_id].options and by_id[t.sample_id].answer is not None]
    counts = {
        "samples": len(rows),
        "pending": len(ids - {r.id for r in rows}),  # never negative, whatever the file holds
        "traces": len(traces),
        "unanimous": len(kept),
        "unanimity_rate": round(len(kept) / len(rows), 4) if rows else 0.0,
        "trace_accuracy": round(sum(t.pred_index == by_id[t.sample_id].answer for t in judged) / len(judged), 4)
        if judged else None,
        "label_accuracy": round(sum(bool(r.label_correct) for r in kept) / len(kept), 4) if kept else None,
        "unusable": sum(1 for r in rows if r.error),
        "identical_traces": identical_share(traces),
        "hallucinated_traces": hallucinated_share(traces, by_id),
    }
    warnings = []
    if (counts["identical_traces"] or 0) >= IDENTICAL_WARNING:
        warnings.append(f"for {counts['identical_traces']:.0%} of samples all {cfg.n} traces are the same text, so a "
                        "unanimous vote says little. Either the backend hardly samples (temperature "
                        f"{cfg.temperature} here; a server may sample by the model's own generation config, e.g. "
                        "top_k 1: pass model.extra_body, vLLM {top_k: -1}), or the teacher is nearly certain of "
                        "every word (the CPU demo's tiny teacher writes one template per clip)")
        print(f"teach: WARNING: {warnings[-1]}")
    answered = {r.id for r in rows}
    keep_only(run.teach_errors, lambda e: e["sample_id"] not in answered)  # only what is pending
    if counts["pending"]:
        return stage.incomplete(counts, f"{counts['pending']} samples failed", run.teach_errors)
    manifest = stage.finish(counts, model=cfg.model.model, backend=cfg.model.backend, warnings=warnings)
    print(f"teach: {counts['samples']} samples, {counts['traces']} traces, {counts['unanimous']} unanimous "
          f"({counts['unanimity_rate']:.0%}); label accuracy {counts['label_accuracy']}")
    return manifest


def hallucinated_share(traces: list[Trace], samples: dict[str, Sample]) -> float | None:
    """Where samples carry the synthetic world's ground truth: the share of all traces that claim a
    sound their clip does not contain (what AGFV exists to catch); None otherwise."""
    facts = [(t.text, samples[t.sample_id].meta.get("facts")) for t in traces]
    facts = [(text, f) for text, f in facts if f]
    return round(sum(oracle.hallucinated(text, f) for text, f in facts) / len(facts), 4) if facts else None


def identical_share(traces: list[Trace]) -> float | None:
    """The share of samples with several traces whose traces are all the same text."""
    texts: dict[str, list[str]] = {}
    for trace in traces:
        texts.setdefault(trace.sample_id, []).append(trace.text)
    several = [t for t in texts.values() if len(t) > 1]
    return round(sum(len(set(t)) == 1 for t in several) / len(several), 4) if several else None


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    text = (f"{c.get('samples')} samples → {c.get('traces')} traces, {c.get('unanimous')} unanimous "
            f"({formats.share(c.get('unanimity_rate'))}), label accuracy {formats.share(c.get('label_accuracy'))}")
    return text + (f", {c['unusable']} unusable" if c.get("unusable") else "")
