"""The report of a run over several seeds (`run.seeds`): each seed is a whole run in
`OUT/seed-<k>/` with its own report; this one, in `OUT/`, pools them. Its tables give each model's
accuracy over every seed's questions together (with the interval), the per-seed figures and
their spread, and the claims tested on the pooled questions — a verdict counts only when the pooled
test is significant and every seed's difference points the same way (`sightsound.claims`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from sightsound import claims as paper_claims
from sightsound.formats import count
from sightsound.manifest import read_manifest
from sightsound.report import sections as build
from sightsound.report.reading import hallucination_share, read_results
from sightsound.report.render import write_documents
from sightsound.report.settings import ReportConfig
from sightsound.scoring import counted, one_answer, one_thinking, tally

QUALITY = ("accepted_traces", "accepted_correct", "rejected_traces", "rejected_correct")


def write_pooled_report(run_dir: str | Path, seed_dirs: dict[int, Path], settings: ReportConfig) -> str:
    """Write OUT/report.md, .html and .csv pooling the seeds' runs; return the Markdown."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    benches = list(settings.benchmark_roles().values())
    per_seed = {seed: read_results(Path(folder), settings.rows, benches) for seed, folder in seed_dirs.items()}
    keys = list(dict.fromkeys(key for found in per_seed.values() for key in found))
    marks, parsed, told, results, answers, thinking = {}, {}, {}, [], {}, {}
    for key in keys:
        present = {seed: found[key] for seed, found in per_seed.items() if key in found}
        marks[key], parsed[key], told[key] = ({f"seed{s}{paper_claims.SEED_MARK}{q}": v for s, e in present.items()
                                               for q, v in getattr(e, field).items()}
                                              for field in ("correct", "parsable", "hallucinated"))
        chosen, said = ([(f"seed{s}{paper_claims.SEED_MARK}{category}", text)  # rote answers are a seed's own
                         for s, e in present.items() for category, text in getattr(e, field).values()]
                        for field in ("chosen", "said"))
        results.append(_pooled_result([e.result for e in present.values()], parsed[key], one_answer(chosen),
                                      one_thinking(said), list(told[key].values())))
        answers[key], thinking[key] = results[-1]["one_answer"]["share"], results[-1]["one_thinking"]["share"]
    verify = _pooled_quality([read_manifest(Path(f), "verify", strict=False) for f in seed_dirs.values()])
    sections = [
        ("Seeds", [("text", f"{len(seed_dirs)} seeds, each a whole run (world, initialisation and sampling): "
                            + ", ".join(f"`{Path(f).name}`" for f in seed_dirs.values()) + ".")]),
        ("Evaluation, pooled over seeds", build.evaluation_blocks(results, settings.in_domain)),
        ("Per seed", _spread_blocks(per_seed, keys)),
        ("The paper's claims, as measured", build.claims_blocks(
            marks, settings, verify, parsed, answers, build.grounded(told), thinking)),
    ]
    title = f"SightSound-R1 run over {len(seed_dirs)} seeds: {Path(run_dir).resolve().name}"
    intro = ("Every number below is read from the seeds' run directories; accuracies pool every seed's questions, "
             "with their 95% Wilson interval in brackets.")
    return write_documents(Path(run_dir), title, intro, sections, results)


def _pooled_result(results: list[dict], parsed: dict[str, bool], answered_once: dict, thought_once: dict,
                   hallucinated: list[bool | None]) -> dict:
    """One result from the seeds' results of a model on a benchmark: counts summed, intervals anew."""
    first = dict(results[0])
    correct, total = sum(r.get("correct") or 0 for r in results), sum(r.get("count") or 0 for r in results)
    categories: dict[str, list[int]] = {}
    for result in results:
        for name, cell in (result.get("per_category") or {}).items():
            pair = categories.setdefault(name, [0, 0])
            pair[0], pair[1] = pair[0] + cell["correct"], pair[1] + cell["count"]
    first.update(_counts(correct, total), per_category={n: _counts(c, t) for n, (c, t) in categories.items()},
                 unparsable=counted(not ok for ok in parsed.values()), one_answer=answered_once,
                 one_thinking=thought_once, dataset_files={})
    first.pop("hallucinated_reasoning", None)
    if hallucinated:
        first["hallucinated_reasoning"] = hallucination_share(hallucinated)
    return first


def _counts(correct: int, total: int) -> dict:
    return tally([True] * correct + [False] * (total - correct))


def _pooled_quality(manifests: list[dict | None]) -> dict | None:
    """The verify manifests' label-precision counts, summed over seeds (for the corpus claim)."""
    qualities = [(m or {}).get("quality") or {} for m in manifests]
    if not qualities or not all(all(q.get(k) is not None for k in QUALITY) for q in qualities):
        return None
    return {"quality": {k: sum(q[k] for q in qualities) for k in QUALITY}}


def _spread_blocks(per_seed: dict, keys: list) -> list:
    """Each model's accuracy per benchmark in each seed, their mean and standard deviation."""
    seeds = list(per_seed)
    rows = []
    for bench, model in keys:
        accuracies = [per_seed[s][(bench, model)].result.get("accuracy") if (bench, model) in per_seed[s] else None
                      for s in seeds]
        known = [a for a in accuracies if a is not None]
        spread = f"{100 * statistics.stdev(known):.1f}" if len(known) > 1 else "—"
        label = per_seed[seeds[0]].get((bench, model))
        name = f"{label.result.get('label')} / {label.result.get('method')}" if label else model
        rows.append([bench, name, *("—" if a is None else f"{100 * a:.1f}" for a in accuracies),
                     f"{100 * statistics.mean(known):.1f}" if known else "—", spread])
    if not rows:
        return []
    return [("text", f"Accuracy (%) in each seed, on {count(len(seeds))} seeds; mean and standard deviation "
                     "across seeds (the spread a single-seed figure carries)."),
            ("table", ["Benchmark", "Model / method", *(f"seed {s}" for s in seeds), "Mean", "SD"], rows)]
