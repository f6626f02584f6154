"""verify: a checker that can hear says yes or no to each teacher trace against the real audio (AGFV, §3.2).

    sightsound verify --config configs/demo.yaml                 # the checker the config names
    sightsound verify --out runs/demo checker=trained verifier=runs/verifier
    sightsound verify --config configs/sightsound-r1.yaml        # GPT-4o-audio, key from OPENAI_API_KEY

Checks every trace of every unanimous sample of `consensus.jsonl` (its reasoning,
`answers.think_text`, with the clip's audio) by the checker `checker` names: `local`, `api`,
`trained` or `none` (`checking.checkers.CHECKERS`). Writes `verdicts.jsonl` (`records.Verdict`);
then `write_outputs` writes the fact-checked corpus `corpus.jsonl` (`records.CorpusRow`, all SFT
needs), the `corpora` ablations and the manifest. A rerun checks only the traces without a verdict.
Details: docs/reference.md, "sightsound/stages/verify.py".
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sightsound import formats
from sightsound.checking.checkers import CHECKERS
from sightsound.config import ConfigError, check_name
from sightsound.datasets.synth import oracle
from sightsound.engine import EngineConfig, map_jobs
from sightsound.manifest import StageRun, model_inputs, open_stage
from sightsound.models import ModelConfig
from sightsound.records import UNPARSEABLE, Consensus, CorpusRow, Sample, Trace, Verdict
from sightsound.rundir import RunDir
from sightsound.scoring import rejection_metrics
from sightsound.store import JsonlWriter, keep_only, read_jsonl, sha256_file, write_jsonl


@dataclass
class VerifyConfig:
    out: str = "runs/demo"  # the run directory: reads samples/traces/consensus, writes verdicts/corpus
    checker: str = "local"  # a key of CHECKERS: local | api | trained | none (accept all: no AGFV)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(model="runs/tiny/student"))  # local, api
    verifier: str = "runs/verifier"  # trained: the folder `sightsound verifier train` wrote
    threshold: float = 0.5  # local, trained: accept when the probability is at least this
    max_new_tokens: int = 16  # api: the reply's length (only its first word decides)
    api_logprobs: bool = False  # api: also ask for P(yes) from log-probs as `score` (one more request each)
    device: str | None = None  # trained: where its audio encoder runs (None: cuda when available)
    chunk: int = 64  # traces per checker call; verdicts are written after each
    limit: int | None = None  # only the first N unanimous samples
    # Extra corpora for the paper's ablations, written as corpus-<name>.jsonl: name → {tts, agfv}.
    # tts false: each sample's first trace (n = 1, no vote; its own answer is the label) instead of
    # the unanimous samples' traces; agfv false: every such trace, checked or not.
    corpora: dict[str, dict[str, bool]] = field(default_factory=dict)
    engine: EngineConfig = field(default_factory=EngineConfig)  # where the chunks run (sightsound/engine.py)
    progress: bool = True


def main(cfg: VerifyConfig) -> dict:
    if cfg.checker not in CHECKERS:  # the config first, then the files
        raise ConfigError(f"unknown checker {cfg.checker!r} (known: {', '.join(CHECKERS)})")
    run = RunDir(cfg.out)
    for path, stage_name in ((run.samples, "prepare"), (run.traces, "teach"), (run.consensus, "teach")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run `sightsound {stage_name}` first")
    inputs = {**{str(p): sha256_file(p) for p in (run.samples, run.traces, run.consensus)},
              **model_inputs(cfg.model.model)}
    if cfg.checker == "trained":  # verdicts depend on the verifier's weights too
        inputs |= {str(p): sha256_file(p) for p in sorted(Path(cfg.verifier).glob("*")) if p.is_file()}
    _check_corpora(cfg.corpora)
    corpora = [run.corpus()] + [run.corpus(name) for name in cfg.corpora]
    stage = open_stage(run.root, "verify", cfg, inputs, [run.verdicts, run.verify_errors, *corpora],
                       exclude=("out", "progress", "chunk", "engine"),  # chunking changes no verdict
                       note=lambda m: f"{m['counts']['accepted']} traces accepted")
    if stage.done:
        return stage.manifest

    samples = {s.id: s for s in read_jsonl(run.samples, Sample)}
    consensus = [row for row in read_jsonl(run.consensus, Consensus) if row.unanimous][: cfg.limit]
    kept = {row.id for row in consensus}
    firsts = any(not spec.get("tts", True) for spec in cfg.corpora.values())  # n = 1 corpora need every first trace
    items = [(samples[t.sample_id], t) for t in read_jsonl(run.traces, Trace)
             if t.sample_id in kept or (firsts and _first(t))]
    with JsonlWriter(run.verdicts) as verdicts, JsonlWriter(run.verify_errors) as errors:
        bar = tqdm(total=len(items), desc=f"verify ({cfg.checker})", unit="trace", disable=not cfg.progress)
        jobs = []
        for start in range(0, len(items), cfg.chunk):
            chunk = items[start:start + cfg.chunk]
            todo = [(s, t) for s, t in chunk if t.id not in verdicts]
            bar.update(len(chunk) - len(todo))
            audible = []
            for sample, trace in todo:
                if sample.audio and Path(sample.audio).exists():
                    audible.append((sample, trace))
                else:
                    errors.write(_error(trace, f"audio file {sample.audio} not found"))
                    bar.update(1)
            if audible:
                jobs.append(audible)
        for audible, results in map_jobs(cfg.engine, functools.partial(CHECKERS[cfg.checker], cfg), _check, jobs):
            for (sample, trace), result in zip(audible, results, strict=True):
                if isinstance(result, Verdict):
                    verdicts.write(result)
                else:
                    errors.write(_error(trace, result))
            bar.update(len(audible))
        bar.close()

    return write_outputs(stage, cfg, items, {row.id: row for row in consensus})


def _check(checker, audible: list) -> list:
    """A chunk's verdicts (or why none), by the checker an engine built where it runs."""
    return checker(audible)


def _first(trace: Trace) -> bool:
    """A sample's first trace, with an answer: what the teacher says when asked once (n = 1)."""
    return trace.index == 0 and (trace.pred_index is not None or bool(trace.answer))


def _check_corpora(corpora: dict) -> None:
    for name, spec in corpora.items():
        check_name(f"corpora.{name}", name)
        if not isinstance(spec, dict) or set(spec) - {"tts", "agfv"} or \
                not all(isinstance(v, bool) for v in spec.values()):
            raise ValueError(f"corpora.{name}: expected {{tts: true|false, agfv: true|false}}, not {spec!r}")


def _error(trace: Trace, reason: str) -> dict:
    return {"id": f"{trace.id}@{time.time()}", "sample_id": trace.sample_id, "index": trace.index, "error": reason}


# --- the summary and the corpus ----------------------------------------------------------------


def write_outputs(stage: StageRun, cfg: VerifyConfig, items, consensus: dict[str, Consensus]) -> dict:
    """Once every trace has its verdict: the corpora, then the manifest (acceptance overall and per
    category, and the checker's quality where the world's ground truth is known)."""
    run = RunDir(stage.run_dir)
    wanted = {t.id for _, t in items}
    found = {v.id: v for v in read_jsonl(run.verdicts, Verdict) if v.id in wanted}
    judged = [(s, t, found[t.id]) for s, t in items if t.id in found]
    accepted = [(s, t) for s, t, v in judged if v.accept]
    counts = {
        "samples": len(consensus),
        "traces": len(items),
        "pending": len(items) - len(judged),
        "accepted": len(accepted),
        "rejected": len(judged) - len(accepted),
        "acceptance_rate": _rate(len(accepted), len(judged)),
        "unparseable": sum(v.reply.startswith(UNPARSEABLE) for _, _, v in judged),
    }
    keep_only(run.verify_errors, lambda e: f"{e['sample_id']}#{e['index']}" not in found)
    if counts["pending"]:  # no corpus either: it is written whole or not at all
        return stage.incomplete(counts, f"{counts['pending']} traces got no verdict", run.verify_errors)

    per_category = {}
    totals, taken = Counter(s.category for s, _, _ in judged), Counter(s.category for s, _ in accepted)
    for category in sorted(totals):
        per_category[category] = {"traces": totals[category], "accepted": taken[category],
                                  "acceptance_rate": _rate(taken[category], totals[category])}
    quality = _quality(judged)
    corpus = [(s, t, consensus[s.id].label) for s, t in accepted if s.id in consensus]  # unanimous: TTS
    _write_corpus(run.corpus(), corpus)
    sizes = {}
    for name, spec in cfg.corpora.items():
        chosen = [(s, t, consensus[s.id].label if spec.get("tts", True) else _own_label(s, t))
                  for s, t, v in judged
                  if (s.id in consensus if spec.get("tts", True) else _first(t)) and (v.accept or not spec.get("agfv", True))]
        _write_corpus(run.corpus(name), chosen)
        sizes[name] = len(chosen)
    manifest = stage.finish(counts, checker=cfg.checker, model=cfg.model.model if cfg.checker != "trained" else None,
                            verifier=cfg.verifier if cfg.checker == "trained" else None,
                            per_category=per_category, quality=quality, corpora={"corpus": len(corpus), **sizes})
    _print_summary(cfg, counts, per_category, quality)
    return manifest


def _quality(judged) -> dict | None:
    """Where samples carry the world's ground truth: how well the verdicts reject the traces that
    claim a sound the clip does not contain, and how many accepted/rejected traces are right."""
    with_facts = [(s, t, v) for s, t, v in judged if s.meta.get("facts")]
    if not with_facts:
        return None
    hallucinated = [oracle.hallucinated(t.text, s.meta["facts"]) for s, t, _ in with_facts]
    right = [t.pred_index == s.answer for s, t, _ in with_facts]  # the trace's label is the true answer
    kept = [v.accept for _, _, v in with_facts]
    return {"traces": len(with_facts), "hallucinated": sum(hallucinated),
            **rejection_metrics(hallucinated, [not k for k in kept]),
            "accepted_traces": sum(kept), "accepted_correct": sum(r and k for r, k in zip(right, kept)),
            "rejected_traces": len(kept) - sum(kept),
            "rejected_correct": sum(r and not k for r, k in zip(right, kept))}


def _print_summary(cfg: VerifyConfig, counts: dict, per_category: dict, quality: dict | None) -> None:
    print(f"verify ({cfg.checker}): {counts['accepted']} of {counts['traces']} traces accepted "
          f"({counts['acceptance_rate']:.0%}) from {counts['samples']} unanimous samples"
          + (f"; {counts['unparseable']} replies unparseable" if counts["unparseable"] else ""))
    for category, row in per_category.items():
        print(f"  {category}: {row['accepted']}/{row['traces']} ({row['acceptance_rate']:.0%})")
    if quality:
        print(f"  against ground truth, rejecting hallucinated traces: precision {quality['precision']} "
              f"recall {quality['recall']} (TP {quality['tp']} FP {quality['fp']} FN {quality['fn']} TN {quality['tn']})")


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _own_label(sample: Sample, trace: Trace):
    return trace.pred_index if sample.options else trace.answer


def _write_corpus(path: Path, chosen) -> None:
    """The chosen (sample, trace, label) at once, atomically: the corpus is whole or absent."""
    rows = []
    for sample, trace, label in chosen:
        label_text = sample.options[label] if (sample.options and label is not None) else label
        rows.append(CorpusRow(trace.id, sample.id, trace.index, sample.dataset, sample.split, sample.category,
                              sample.audio, sample.question, sample.options, trace.text, label, label_text))
    write_jsonl(path, rows)


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    text = (f"{c.get('accepted')} of {c.get('traces')} traces accepted ({formats.share(c.get('acceptance_rate'))}) "
            f"by {manifest.get('checker') or '?'}")
    return text + (f", {c['unparseable']} replies unparseable" if c.get("unparseable") else "")
