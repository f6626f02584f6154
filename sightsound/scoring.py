"""Score a predictions file: accuracy overall, per category and per record.

    sightsound score runs/demo/eval/mmau/sft/predictions.jsonl --out RESULT.json --scorer mmau
    result = score_file(run.eval("mmau", "sft").predictions, "RESULT.json", scorer="default")   # run: a RunDir

Each input line holds `response`, `options` ([] when open-ended) and `answer` (an index or the
text; null or "" when not public: `unlabelled`, read but left out of every accuracy), optionally
`id` and `category`. Scorers: `default` (`sightsound.answers.is_correct`, as the GRPO reward),
`mmau` and `mmau-pro` (the benchmarks' official rules). RESULT.json holds each accuracy with its
95% Wilson interval (`ci95`) and one row per record; `paired_test` compares two models (exact
McNemar) and `rejection_metrics` scores a checker.
Details: docs/reference.md, "sightsound/scoring.py".
"""

from __future__ import annotations

import json
from pathlib import Path

from sightsound.answers import (SIMILARITY_THRESHOLD, Embedder, bare_letter, closest_options, extract_answer,
                                is_correct, match_option, mmau_correct, normalize_open, option_index,
                                thinking)
from sightsound.config import ConfigError
from sightsound.store import write_json

SCORERS = ("default", "mmau", "mmau-pro")


def score_file(predictions_path: str | Path, out_path: str | Path, scorer: str = "default",
               **match_kwargs) -> dict:
    """Score `predictions_path` and write the result to `out_path` atomically; returns the result."""
    result = score_predictions(predictions_path, scorer, **match_kwargs)
    write_json(out_path, result)
    return result


def score_predictions(path: str | Path, scorer: str = "default", *,
                      similarity_threshold: float | None = SIMILARITY_THRESHOLD,
                      embedder: Embedder | None = None) -> dict:
    """The result dict described in docs/reference.md ("sightsound/scoring.py") (nothing is written)."""
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such predictions file; `sightsound eval` writes one "
                                "(EVAL_DIR/<model>/predictions.jsonl)")
    match_kwargs = {"similarity_threshold": similarity_threshold, "embedder": embedder}
    records, categories = [], {}
    unmatched = 0
    for where, row in _read(Path(path)):
        if scorer == "mmau" and not row["options"]:
            raise ValueError(f"{where}: field 'options' is empty, and the mmau scorer needs choices")
        pred, correct = judge(row, scorer, **match_kwargs)
        if row["options"] and pred is None:
            unmatched += 1
        records.append({"id": row["id"], "pred_index": pred, "correct": correct})
        if row["category"] is not None and correct is not None:
            categories.setdefault(row["category"], []).append(correct)
    if not records:
        raise ValueError(f"{path}: no predictions to score")
    marks = [r["correct"] for r in records if r["correct"] is not None]
    return {
        "scorer": scorer,
        "predictions": str(path),
        **tally(marks),
        "unlabelled": len(records) - len(marks),
        "unmatched": unmatched,
        "per_category": {name: tally(marks) for name, marks in sorted(categories.items())},
        "records": records,
    }


def labelled(row) -> bool:
    """Whether a prediction row (or sample dict) has an answer to be judged against."""
    return row["answer"] is not None and row["answer"] != ""


def parsable(response: str, options: list[str]) -> bool:
    """Whether an answer can be read at all: for a multiple-choice question, the extractor names an
    option without the similarity fallback (a model that answers "horn" to "how many sources?"
    names none); for an open-ended one, the answer is not empty. An accuracy decided by answers that
    are not parsable measures the format, not the model's hearing: reports show this share beside it."""
    if options:
        return match_option(response, options, similarity_threshold=None) is not None
    return bool(normalize_open(extract_answer(response)))


def unparsable(rows) -> dict:
    """{count, share} of prediction rows (`response`, `options`) whose answer is not `parsable`."""
    return counted([not parsable(r["response"], r["options"]) for r in rows])


def counted(flags) -> dict:
    """{count, share} of the true ones among `flags` (share None when there are none)."""
    flags = list(flags)
    return {"count": sum(map(bool, flags)), "share": round(sum(map(bool, flags)) / len(flags), 4) if flags else None}


ONE_ANSWER = 0.95  # a model giving one option to this share of a question type's questions answers by rote


def one_answer(chosen) -> dict:
    """{share, categories} for (category, chosen option text) pairs of a model's answers (None when
    it named no option; left out): per category, the share of its answers that are its most common
    one; `share` over all categories, weighted by their answers. At `ONE_ANSWER` or above, the model
    gives one answer to a question type whatever the clip (the tiny student's "high" to every pitch
    question): an accuracy, or a comparison, decided by such answers measures the rote answer's
    base rate, not hearing."""
    per: dict[str, dict[str, int]] = {}
    for category, text in chosen:
        if text is not None:
            counts = per.setdefault(str(category), {})
            counts[text] = counts.get(text, 0) + 1
    tops = {name: (max(counts.values()), sum(counts.values())) for name, counts in per.items()}
    answered = sum(total for _, total in tops.values())
    return {"share": round(sum(top for top, _ in tops.values()) / answered, 4) if answered else None,
            "categories": {name: round(top / total, 4) for name, (top, total) in sorted(tops.items())}}


def one_thinking(responses) -> dict:
    """`one_answer` for reasoning: {share, categories} for (category, response) pairs, over the
    responses that think (`answers.thinking`): per category, the share whose reasoning is the one
    the model writes most for that question type. Near 100% it reasons by rote, one thinking
    whatever the clip: the untrained student's "I listen to the audio." (by design: the paper's
    student cannot reason usefully), or a policy whose reasoning RL collapsed to a template. Its
    answers then come from somewhere other than its reasoning; reports show this beside accuracy.
    {share: None} when no response thinks."""
    return one_answer((category, thinking(response)) for category, response in responses)


def chosen_option(row) -> str | None:
    """The option a prediction row (`options`, `pred_index`) chose, as text; None when none."""
    index = row.get("pred_index")
    return row["options"][index] if row.get("options") and index is not None else None


def judge(row, scorer: str = "default", **match_kwargs) -> tuple[int | None, bool | None]:
    """(pred_index, correct) for one prediction (`response`, `options`, `answer`) by a scorer;
    `correct` is None when the row is unlabelled (its option is still read, for a submission)."""
    if not labelled(row):
        return (match_option(row["response"], row["options"], **match_kwargs) if row["options"] else None), None
    if scorer == "mmau":
        pred = match_option(row["response"], row["options"], **match_kwargs)
        answer_text = row["options"][option_index(row["answer"], row["options"])]
        said = extract_answer(row["response"])
        letter = bare_letter(said, len(row["options"]))
        return pred, mmau_correct(said if letter is None else row["options"][letter], answer_text, row["options"])
    if scorer == "mmau-pro" and row["options"]:
        said = extract_answer(row["response"])
        letter = bare_letter(said, len(row["options"]))
        pred = closest_options([said if letter is None else row["options"][letter]], [row["options"]],
                               float("-inf"), match_kwargs.get("embedder"))[0]
        return pred, pred is not None and row["options"][pred] == row["options"][option_index(row["answer"], row["options"])]
    return is_correct(row["response"], row, **match_kwargs)


def rejection_metrics(should_reject, rejected) -> dict:
    """Counts and precision/recall/F1 of rejection: a true positive is a rejected trace that should
    be rejected (hallucinated, or labelled false). Undefined ratios are None."""
    pairs = [(bool(s), bool(r)) for s, r in zip(should_reject, rejected, strict=True)]
    tp = sum(s and r for s, r in pairs)
    fp = sum(r and not s for s, r in pairs)
    fn = sum(s and not r for s, r in pairs)
    tn = sum(not s and not r for s, r in pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    rounded = {k: None if v is None else round(v, 4) for k, v in
               {"precision": precision, "recall": recall, "f1": f1}.items()}
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, **rounded}


CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # a paired difference is called significant below this p-value


def tally(marks: list[bool]) -> dict:
    """Accuracy, count, correct and the accuracy's 95% Wilson interval `ci95` [low, high] (accuracy
    and interval None when there are no marks)."""
    correct = sum(bool(m) for m in marks)
    return {"accuracy": correct / len(marks) if marks else None, "count": len(marks), "correct": correct,
            "ci95": wilson_interval(correct, len(marks))}


def wilson_interval(correct: int, count: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """The Wilson score interval [low, high] of a proportion correct/count; None when count is 0."""
    from scipy.stats import binomtest

    if count == 0:
        return None
    ci = binomtest(correct, count).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def paired_test(first: dict, second: dict) -> dict:
    """Exact McNemar test of two models on the questions both answered: `first` and `second` map a
    question id to whether the model got it right. Returns the questions compared (`count`), each
    model's accuracy on them, the `difference` (second − first), the discordant counts
    (`first_only`, `second_only`: right by that model alone), the two-sided `p_value` and
    `significant` (p < SIGNIFICANCE). Questions only one of them answered are left out."""
    from scipy.stats import binomtest

    shared = set(first) & set(second)
    a = [bool(first[q]) for q in shared]
    b = [bool(second[q]) for q in shared]
    first_only = sum(x and not y for x, y in zip(a, b))
    second_only = sum(y and not x for x, y in zip(a, b))
    discordant = first_only + second_only
    p_value = binomtest(first_only, discordant, 0.5).pvalue if discordant else 1.0
    n = len(shared)
    return {"count": n, "first_accuracy": sum(a) / n if n else None, "second_accuracy": sum(b) / n if n else None,
            "difference": (sum(b) - sum(a)) / n if n else None, "first_only": first_only,
            "second_only": second_only, "p_value": round(min(1.0, p_value), 6),
            "significant": bool(discordant) and p_value < SIGNIFICANCE}


def _read(path: Path):
    """Yield ("FILE, line N", checked row) for each non-blank line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                where = f"{path}, line {number}"
                yield where, _check(line, where, number)


def _check(line: str, where: str, number: int) -> dict:
    """The line's fields, validated; `id` defaults to the line number."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(row).__name__}")

    def bad(name: str, problem: str):
        return ValueError(f"{where}: field {name!r} {problem}")

    for name in ("response", "options", "answer"):
        if name not in row:
            raise bad(name, "is missing")
    if not isinstance(row["response"], str):
        raise bad("response", f"should be text, found {row['response']!r}")
    options = row["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise bad("options", f"should be a list of strings, found {options!r}")
    answer = row["answer"]
    if answer is None or answer == "":
        pass  # unlabelled: read, not judged
    elif options:
        try:
            option_index(answer, options)
        except ValueError as exc:
            raise bad("answer", f"is unusable: {exc}") from None
    elif not isinstance(answer, str) or not answer.strip():
        raise bad("answer", f"should be the answer text when 'options' is empty, found {answer!r}")
    category = row.get("category")
    if category is not None and not isinstance(category, str):
        raise bad("category", f"should be text, found {category!r}")
    return {"id": row.get("id", number), "response": row["response"], "options": options,
            "answer": answer, "category": category}
