"""The paper's tables from result files: `sightsound report RESULT.json... --out OUT.md` (and OUT.csv).

Rows are (model label, method); each benchmark adds its columns: MMAU test-mini Sound / Speech /
Music / Avg and MUSIC-AVQA Temp / Comp / Cnt / Exist / Avg as in Table 2, each category and their
average for a benchmark that asks for it (the synthetic world's), plain accuracy for AVQA (Table 1)
and any other dataset. A cell is a percentage with one decimal and its 95% Wilson
interval, "57.5 (52.6–62.2)", from the per-sample predictions of `sightsound eval`; a missing one is "—".
Each benchmark's "unparsable" column is the share of answers the extractor could not read; its
"one answer" column the share of answers that are the one its question type gets most (100%: the
model gives each question type one answer, whatever the clip; `scoring.one_answer`); its "one
thinking" column, for a model that reasons, the same for its reasoning (`scoring.one_thinking`);
on the synthetic world, its "hallucinated reasoning" column, of the reasoning that says what is
sounding, the share naming a sound the clip lacks (`reading.hallucination_share`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sightsound.datasets import BENCHMARKS
from sightsound.formats import share, with_interval
from sightsound.scoring import wilson_interval
from sightsound.store import write_if_changed


def columns_of(result: dict) -> dict[str, dict | None]:
    """(header → {accuracy, count, correct, ci95}) for one result: the paper's columns where they
    exist, else the whole benchmark's accuracy, headed by the benchmark's name when it has one."""
    dataset = result.get("dataset") or "?"
    benchmark = BENCHMARKS.get(dataset)
    title = benchmark.title.format(split=result.get("split") or benchmark.split) if benchmark else dataset
    paper = result.get("paper")
    name = result.get("benchmark") or title
    categories = result.get("per_category") or {}
    if not paper and benchmark and benchmark.per_category and len(categories) > 1:  # Table 2's way, per category
        cells = {f"{name} {category}": cell for category, cell in categories.items()}
        cells[f"{name} Avg"] = result
    elif not paper:
        cells = {name: result}
    else:
        headers = benchmark.columns if benchmark else {}
        cells = {f"{title} {headers.get(name, name.capitalize())}": cell for name, cell in paper["columns"].items()}
        cells[f"{title} Avg"] = paper["avg"]
    for key, column in SHARES.items():  # beside every accuracy, where measured
        if (result.get(key) or {}).get("share") is not None:
            cells[f"{name} {column}"] = {k: result[key][k] for k in ("share", "of") if k in result[key]}
    return cells


SHARES = {"unparsable": "unparsable",  # answers naming no option (scoring.unparsable)
          "one_answer": "one answer",  # answers by rote (scoring.one_answer)
          "one_thinking": "one thinking",  # reasoning by rote (scoring.one_thinking)
          "hallucinated_reasoning": "hallucinated reasoning"}  # unheard sounds said to sound (synthetic world)


def build_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows: dict[tuple[str, str], dict[str, dict | None]] = {}
    headers: list[str] = []
    for result in results:
        cells = columns_of(result)
        headers += [h for h in cells if h not in headers]
        rows.setdefault((result.get("label") or "?", result.get("method") or "?"), {}).update(cells)
    body = [[label, method, *(percent_cell(cells.get(h)) for h in headers)] for (label, method), cells in rows.items()]
    return ["Model", "Method", *headers], body


def percent_cell(cell: dict | None) -> str:
    """"57.5 (52.6–62.2)": an accuracy in percent with its 95% interval ("—" when missing); for
    a share column, the share ("12.5%"), and what it is a share of where that is not every answer
    ("66.7% of 6")."""
    if cell and "share" in cell:
        return share(cell["share"]) + (f" of {cell['of']}" if "of" in cell else "")
    if not cell or cell.get("accuracy") is None:
        return "—"
    return with_interval(cell["accuracy"], cell_interval(cell))


def cell_interval(cell: dict) -> list[float] | None:
    """A result's 95% interval: its own `ci95`, else computed from its counts (results written
    before intervals were), else None."""
    if cell.get("ci95"):
        return cell["ci95"]
    return wilson_interval(cell["correct"], cell["count"]) if cell.get("count") and cell.get("correct") is not None \
        else None


def markdown(headers: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def write_report(result_paths: list[str | Path], out: str | Path) -> str:
    results = []
    for path in result_paths:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read result: {exc}") from exc
    headers, body = build_table(results)
    text = "# Results\n\nAccuracy (%) per benchmark column with its 95% interval, from `sightsound eval` predictions.\n\n"
    text += markdown(headers, body)
    text += "".join(f"\n{note}\n" for note in result_notes(results))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    write_csv(out.with_suffix(".csv"), headers, body)
    return text


def write_csv(path: Path, headers: list[str], body: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *body])
    write_if_changed(path, buffer.getvalue())


def result_notes(results: list[dict]) -> list[str]:
    """What a results table needs said beside it: the benchmark files (with their hashes) and the
    questions answered without a public answer to score them against."""
    notes = []
    files = sorted({f"`{Path(f).name}` sha256 {h[:12]}" for r in results for f, h in r.get("dataset_files", {}).items()})
    if files:
        notes.append("Benchmark files: " + "; ".join(files))
    hidden = [f"{r.get('benchmark') or r.get('dataset')} ({r.get('label')}): {r['unlabelled']}"
              for r in results if r.get("unlabelled")]
    if hidden:
        notes.append("Questions without a public answer, answered but not scored here (`sightsound export EVAL_DIR "
                     "--format mmau-submission` writes them for the leaderboard): " + "; ".join(hidden))
    return notes
