"""What the run report reads from a run directory, leniently: a file that is missing, unreadable
or not what it should be is left out (a line that does not parse, say half written, is skipped).
Every path comes from `RunDir`; manifests are read by `sightsound.manifest.read_manifest`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from sightsound.datasets.synth.oracle import hallucinated_reasoning
from sightsound.manifest import read_manifest
from sightsound.rundir import RunDir
from sightsound.scoring import chosen_option, counted, one_answer, one_thinking, parsable, unparsable


class Evaluation(NamedTuple):
    """One model on one benchmark: its result, and per question id whether it was right (labelled
    questions only), whether its answer could be read at all (`scoring.parsable`) and (category,
    the option it chose) for `scoring.one_answer`, (category, response) for `scoring.one_thinking`
    and, on the synthetic world, whether its reasoning says a sound the clip lacks is sounding (None:
    it says nothing is; `oracle.hallucinated_reasoning`)."""

    result: dict
    correct: dict[str, bool]
    parsable: dict[str, bool]
    chosen: dict[str, tuple]
    said: dict[str, tuple]
    hallucinated: dict[str, bool | None]


def read_results(run_dir: Path, rows: list[str], benchmarks: list[str] = ()) -> dict[tuple[str, str], Evaluation]:
    """(benchmark, model) → its Evaluation for every evaluation in the run, the models in `rows`
    order first (then the others by name), and within a model the benchmarks in `benchmarks` order
    first (then the others by name). A result written before the unparsable share was gets it here."""
    found, facts = {}, {}
    for evaluation in RunDir(run_dir).evaluations():
        result = read_json(evaluation.result)
        if result is None:
            continue
        bench, model = evaluation.root.parent.name, evaluation.root.name
        result.setdefault("benchmark", bench)
        predictions = [r for r in read_jsonl(evaluation.predictions) if "id" in r]
        correct = {r["id"]: bool(r["correct"]) for r in predictions
                   if r.get("correct") is not None}  # unlabelled questions are not judged
        parsed = {r["id"]: parsable(r.get("response", ""), r.get("options") or []) for r in predictions}
        result.setdefault("unparsable", unparsable(
            {"response": r.get("response", ""), "options": r.get("options") or []} for r in predictions))
        chosen = {r["id"]: (r.get("category"), chosen_option(r)) for r in predictions if r.get("options")}
        said = {r["id"]: (r.get("category"), r.get("response", "")) for r in predictions}
        result["one_answer"] = one_answer(chosen.values())
        result["one_thinking"] = one_thinking(said.values())
        if bench not in facts:
            facts[bench] = clip_facts(evaluation.root.parent)
        told = hallucinated_reasoning({q: response for q, (_, response) in said.items()}, facts[bench])
        if told:
            result["hallucinated_reasoning"] = hallucination_share(told.values())
        found[(bench, model)] = Evaluation(result, correct, parsed, chosen, said, told)
    rank = {name: i for i, name in enumerate(rows)}
    place = {name: i for i, name in enumerate(benchmarks)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0][1], len(rank)), item[0][1],
                                                        place.get(item[0][0], len(place)), item[0][0])))


def hallucination_share(told) -> dict:
    """{count, share, of}: of the `of` pieces of reasoning that say some sound is sounding, how many
    (and what share) say one the clip lacks is. `told` holds True, False or None per question, as
    `oracle.hallucinated_reasoning` gives them; share is None when no reasoning says. Reasoning that
    says nothing of what sounds ("I listen to the audio.") is neither grounded nor hallucinated, so it
    is left out: the report shows "—" for a model whose reasoning never says, not a 0% that would
    read as grounded."""
    said = [flag for flag in told if flag is not None]
    return {**counted(said), "of": len(said)}


def clip_facts(benchmark_dir: Path) -> dict[str, dict]:
    """Question id → its clip's facts (what sounds, what is seen), from a synthetic benchmark's
    prepared samples; empty for any other dataset."""
    return {r["id"]: r["meta"]["facts"] for r in read_jsonl(RunDir(benchmark_dir).samples)
            if "id" in r and isinstance(r.get("meta"), dict) and isinstance(r["meta"].get("facts"), dict)}


def eval_manifests(run_dir: Path) -> list[tuple[str, str, dict]]:
    """(benchmark, model, manifest) for every evaluation of the run with a readable eval manifest,
    sorted by path; an evaluation without a result counts too (`RunDir.evaluations()` lists only
    those with one, so the manifests are globbed by the pattern a relative `RunDir` spells)."""
    found = []
    for path in sorted(Path(run_dir).glob(str(RunDir("").eval("*", "*").manifest("eval")))):
        evaluation = RunDir(path.parents[1])
        manifest = read_manifest(evaluation.root, "eval", strict=False)
        if manifest is not None:
            found.append((evaluation.root.parent.name, evaluation.root.name, manifest))
    return found


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects in `path`, one a line; a line that does not parse (say, half written) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
