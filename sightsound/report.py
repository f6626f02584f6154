"""The paper's tables from results on disk: `sightsound report RESULT.json... --out report.md`.

    sightsound report runs/eval/*/result.json --out runs/report.md     # also writes report.csv

Rows are (model label, method); each benchmark found among the results adds its columns:
MMAU test-mini Sound / Speech / Music / Avg and MUSIC-AVQA Temp / Comp / Cnt / Exist / Avg as in
Table 2, plain accuracy for AVQA (Table 1) and any other dataset. Numbers are percentages with one
decimal, computed from the per-sample predictions by `sightsound eval`; a missing cell is "—".
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

SHORT = {"Temporal": "Temp", "Comparative": "Comp", "Counting": "Cnt", "Existential": "Exist"}
TITLES = {"mmau": "MMAU test-mini", "music-avqa": "MUSIC-AVQA test", "avqa": "AVQA", "synth": "synthetic"}


def columns_of(result: dict) -> dict[str, float | None]:
    """(header → accuracy) for one result: the paper's columns where they exist, else the accuracy."""
    dataset = result.get("dataset") or "?"
    title = TITLES.get(dataset, dataset)
    paper = result.get("paper")
    if not paper:
        return {f"{title}": result["accuracy"]}
    cells = {f"{title} {SHORT.get(name, name.capitalize())}": (cell or {}).get("accuracy")
             for name, cell in paper["columns"].items()}
    cells[f"{title} Avg"] = result["accuracy"] if dataset == "mmau" else (paper["avg"] or {}).get("accuracy")
    return cells


def build_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows: dict[tuple[str, str], dict[str, float | None]] = {}
    headers: list[str] = []
    for result in results:
        cells = columns_of(result)
        headers += [h for h in cells if h not in headers]
        rows.setdefault((result.get("label") or "?", result.get("method") or "?"), {}).update(cells)
    body = [[label, method, *(_pct(cells.get(h)) for h in headers)] for (label, method), cells in rows.items()]
    return ["Model", "Method", *headers], body


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


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
    text = "# Results\n\nAccuracy (%) per benchmark column, from `sightsound eval` predictions.\n\n"
    text += markdown(headers, body)
    files = sorted({f"`{Path(f).name}` sha256 {h[:12]}" for r in results for f, h in r.get("dataset_files", {}).items()})
    if files:
        text += "\nBenchmark files: " + "; ".join(files) + "\n"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *body])
    out.with_suffix(".csv").write_text(buffer.getvalue())
    return text
