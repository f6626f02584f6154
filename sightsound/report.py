"""The paper's tables from results on disk: `sightsound report RESULT.json... --out report.md`.

    sightsound report runs/eval/*/result.json --out runs/report.md     # also writes report.csv

Rows are (model label, method); each benchmark found among the results adds its columns:
MMAU test-mini Sound / Speech / Music / Avg and MUSIC-AVQA Temp / Comp / Cnt / Exist / Avg as in
Table 2, plain accuracy for AVQA (Table 1) and any other dataset. Numbers are percentages with one
decimal, computed from the per-sample predictions by `sightsound eval`; a missing cell is "—".
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path

from sightsound.datasets import BENCHMARKS
from sightsound.formats import count, num, seconds, share
from sightsound.registry import STAGES


def columns_of(result: dict) -> dict[str, float | None]:
    """(header → accuracy) for one result: the paper's columns where they exist, else the accuracy."""
    dataset = result.get("dataset") or "?"
    benchmark = BENCHMARKS.get(dataset)
    title = benchmark.title if benchmark else dataset
    paper = result.get("paper")
    if not paper:
        return {f"{title}": result["accuracy"]}
    headers = benchmark.columns if benchmark else {}
    cells = {f"{title} {headers.get(name, name.capitalize())}": (cell or {}).get("accuracy")
             for name, cell in paper["columns"].items()}
    cells[f"{title} Avg"] = (paper["avg"] or {}).get("accuracy")
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
    write_csv(out.with_suffix(".csv"), headers, body)
    return text


def write_csv(path: Path, headers: list[str], body: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *body])
    path.write_text(buffer.getvalue())


# --- the run report: one run directory → report.md, report.html, report.csv, plots/*.png ---------------

CSS = """body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; }"""


def write_run_report(run_dir: str | Path) -> str:
    """Write report.md, report.html, report.csv and plots/*.png into `run_dir`; return the Markdown.

    Each section is made from what the run directory holds; a missing or unreadable file leaves its
    section (or line) out. Sections are (title, blocks), a block being ("text", str),
    ("table", headers, rows) or ("image", relative path, caption); both documents are rendered from them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifests = {stage: _read_json(run_dir / "manifests" / f"{stage}.json") for stage in STAGES}
    manifests = {stage: m for stage, m in manifests.items() if m is not None}
    results = [r for r in (_read_json(p) for p in sorted(run_dir.glob("eval/*/*/result.json"))) if r is not None]

    sections = [
        ("Pipeline", _pipeline_blocks(manifests)),
        ("Bootstrapped roles", _bootstrap_blocks(manifests.get("bootstrap"))),
        ("Teacher and checker", _teacher_checker_blocks(manifests.get("teach"), manifests.get("verify"))),
        ("Training curves", _curve_blocks(run_dir)),
        ("Evaluation", _evaluation_blocks(results)),
        ("Timings", _timing_blocks(run_dir, manifests)),
    ]
    sections = [(title, blocks) for title, blocks in sections if blocks]
    title = f"SightSound-R1 run: {run_dir.resolve().name}"
    intro = "Every number below is read from this run directory's files, as measured; shares are shown as percentages."

    text = render_markdown(title, intro, sections)
    (run_dir / "report.md").write_text(text)
    (run_dir / "report.html").write_text(render_html(title, intro, sections, run_dir))
    if results:
        write_csv(run_dir / "report.csv", *build_table(results))
    return text


def _read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_jsonl(path: Path) -> list[dict]:
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


# --- sections ---------------------------------------------------------------------------------


def _pipeline_blocks(manifests: dict[str, dict]) -> list:
    rows = [[stage, _stage_summary(stage, m), seconds(m.get("seconds"))] for stage, m in manifests.items()]
    if not rows:
        return []
    return [("table", ["Stage", "In → out", "Seconds"], rows)]


def _stage_summary(stage: str, manifest: dict) -> str:
    """One line saying what came into a stage and what came out of it (the stage's own `summary`)."""
    summary = STAGES[stage].summary if stage in STAGES else None
    if summary is not None:
        return summary(manifest)
    return ", ".join(f"{k} {v}" for k, v in (manifest.get("counts") or {}).items())


def _bootstrap_blocks(manifest: dict | None) -> list:
    if manifest is None:
        return []
    c = manifest.get("counts") or {}
    training = c.get("training") or {}
    teacher, checker, student = c.get("teacher") or {}, c.get("checker") or {}, c.get("student") or {}
    held_out = {
        "teacher": (f"accuracy {share(teacher.get('accuracy'))}, agrees with a pure watcher "
                    f"{share(teacher.get('watcher_agreement'))}, format {share(teacher.get('format'))}, "
                    f"reasoning exact {share(teacher.get('reasoning_exact'))}"),
        "checker": (f"accuracy {share(checker.get('accuracy'))}; rejecting absent sounds: precision "
                    f"{share(checker.get('precision'))}, recall {share(checker.get('recall'))}, "
                    f"F1 {share(checker.get('f1'))} (TP {checker.get('tp')}, FP {checker.get('fp')}, "
                    f"FN {checker.get('fn')}, TN {checker.get('tn')})"),
        "student": f"direct accuracy {share(student.get('direct_accuracy'))}",
    }
    sees = {"teacher": "video frames only", "checker": "audio + a trace", "student": "audio"}
    rows = []
    for role in ["teacher", "checker", "student"]:
        trained = training.get(role) or {}
        rows.append([role, sees[role],
                     f"{count(trained.get('examples'))} examples, {count(trained.get('steps'))} steps, "
                     f"loss {num(trained.get('first_loss'))} → {num(trained.get('last_loss'))}",
                     held_out[role]])
    note = (f"The demo's tiny models after training into their roles on {c.get('train_questions')} questions, "
            f"measured on {c.get('heldout_questions')} held-out questions.")
    return [("text", note), ("table", ["Role", "Sees", "Training", "Held out"], rows)]


def _teacher_checker_blocks(teach: dict | None, verify: dict | None) -> list:
    blocks = []
    if teach is not None:
        c = teach.get("counts") or {}
        blocks.append(("text", f"Teacher: {c.get('unanimous')} of {c.get('samples')} samples unanimous "
                               f"(unanimity rate {share(c.get('unanimity_rate'))}); label accuracy of the unanimous "
                               f"samples {share(c.get('label_accuracy'))}; trace accuracy "
                               f"{share(c.get('trace_accuracy'))}"
                               + (f"; all traces identical for {share(c['identical_traces'])} of samples"
                                  if c.get("identical_traces") is not None else "") + "."))
        blocks += [("text", f"Warning: {warning}") for warning in teach.get("warnings") or []]
    if verify is not None:
        c = verify.get("counts") or {}
        blocks.append(("text", f"Checker ({verify.get('checker') or '?'}): {c.get('accepted')} of {c.get('traces')} "
                               f"traces accepted ({share(c.get('acceptance_rate'))})."))
        per_category = verify.get("per_category") or {}
        if per_category:
            rows = [[name, count(row.get("traces")), count(row.get("accepted")), share(row.get("acceptance_rate"))]
                    for name, row in per_category.items()]
            blocks.append(("table", ["Category", "Traces", "Accepted", "Acceptance"], rows))
        quality = verify.get("quality")
        if quality:
            blocks.append(("text", f"Against ground truth ({quality.get('traces')} traces of synthetic clips): "
                                   f"hallucinated traces caught {quality.get('tp')} of {quality.get('hallucinated')}; "
                                   f"rejection precision {share(quality.get('precision'))}, recall "
                                   f"{share(quality.get('recall'))}, F1 {share(quality.get('f1'))} "
                                   f"(TP {quality.get('tp')}, FP {quality.get('fp')}, FN {quality.get('fn')}, "
                                   f"TN {quality.get('tn')})."))
    return blocks


def _curve_blocks(run_dir: Path) -> list:
    blocks = []
    sft_rows = [r for r in _read_jsonl(run_dir / "sft" / "metrics.jsonl") if "step" in r]
    if sft_rows:
        blocks.append(("image", plot_sft(sft_rows, run_dir / "plots" / "sft_loss.png"), "SFT loss"))
    grpo_rows = [r for r in _read_jsonl(run_dir / "grpo" / "metrics.jsonl") if "step" in r]
    if grpo_rows:
        blocks.append(("image", plot_grpo(grpo_rows, run_dir / "plots" / "grpo.png"), "GRPO reward and KL"))
    return blocks


def _evaluation_blocks(results: list[dict]) -> list:
    if not results:
        return []
    headers, body = build_table(results)
    blocks = [("text", "Accuracy (%) per benchmark column, from `sightsound eval` predictions."),
              ("table", headers, body)]
    files = sorted({f"`{Path(f).name}` sha256 {h[:12]}" for r in results for f, h in r.get("dataset_files", {}).items()})
    if files:
        blocks.append(("text", "Benchmark files: " + "; ".join(files)))
    return blocks


def _timing_blocks(run_dir: Path, manifests: dict[str, dict]) -> list:
    blocks = []
    run = _read_json(run_dir / "manifests" / "run.json")
    stages = [s for s in (run or {}).get("stages") or [] if isinstance(s, dict)]
    if stages:
        rows = [[str(s.get("stage")), str(s.get("status")), seconds(s.get("seconds"))] for s in stages]
        total = sum(s.get("seconds") or 0 for s in stages)
        blocks.append(("text", "Wall time of each stage in the latest pipeline invocation (`manifests/run.json`)."))
        blocks.append(("table", ["Stage", "Status", "Seconds"], rows + [["total", "", seconds(total)]]))
    elif manifests:
        rows = [[stage, seconds(m.get("seconds"))] for stage, m in manifests.items()]
        total = sum(m.get("seconds") or 0 for m in manifests.values())
        blocks.append(("text", "Seconds each stage took when it last ran (from its manifest)."))
        blocks.append(("table", ["Stage", "Seconds"], rows + [["total", seconds(total)]]))
    evals = []
    for path in sorted(run_dir.glob("eval/*/*/manifests/eval.json")):
        manifest = _read_json(path)
        if manifest is not None:
            evals.append([f"{path.parents[2].name}/{path.parents[1].name}", seconds(manifest.get("seconds"))])
    if evals:
        blocks.append(("table", ["Evaluation", "Seconds"], evals))
    return blocks


# --- plots ------------------------------------------------------------------------------------


def _figure(height: float):
    """An 8-inch-wide matplotlib figure drawn by the Agg backend (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _whole_steps(ax) -> None:
    """Step ticks at whole numbers, and a light grid."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_sft(rows: list[dict], out: Path) -> str:
    """Loss against step, and validation accuracy on a second axis when it was measured; returns the
    path relative to the run directory."""
    fig = _figure(4)
    ax = fig.add_subplot()
    points = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    lines = ax.plot([s for s, _ in points], [v for _, v in points], marker=".", color="tab:blue", label="loss")
    ax.set(title="SFT: training loss", xlabel="step", ylabel="loss")
    _whole_steps(ax)
    val = [(r["step"], 100 * r["val_accuracy"]) for r in rows if r.get("val_accuracy") is not None]
    if val:
        twin = ax.twinx()
        lines += twin.plot([s for s, _ in val], [v for _, v in val], marker="o", color="tab:orange",
                           label="val accuracy (%)")
        twin.set_ylabel("val accuracy (%)")
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    return _save(fig, out)


def plot_grpo(rows: list[dict], out: Path) -> str:
    """Total reward and each reward_* component against step in one panel, KL in a second; returns
    the path relative to the run directory."""
    fig = _figure(6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    names = ["reward"] + sorted({k for r in rows for k in r if k.startswith("reward_") and k != "reward_std"})
    for name in names:
        points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        top.plot([s for s, _ in points], [v for _, v in points], marker=".",
                 label="reward (total)" if name == "reward" else name.removeprefix("reward_"),
                 linewidth=2 if name == "reward" else 1)
    top.set(title="GRPO: reward", ylabel="mean reward")
    _whole_steps(top)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the panel: no curve hidden
    kl = [(r["step"], r["kl"]) for r in rows if r.get("kl") is not None]
    bottom.plot([s for s, _ in kl], [v for _, v in kl], marker=".", color="tab:red", label="KL")
    bottom.set(title="GRPO: KL to the reference policy", xlabel="step", ylabel="KL")
    _whole_steps(bottom)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, out)


def _save(fig, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    return f"{out.parent.name}/{out.name}"


# --- rendering --------------------------------------------------------------------------------


def render_markdown(title: str, intro: str, sections: list) -> str:
    return "".join([f"# {title}\n\n{intro}\n", *_render(
        sections, heading=lambda h: f"\n## {h}\n", text=lambda t: f"\n{t}\n",
        table=lambda headers, rows: "\n" + markdown(headers, rows),
        image=lambda path, caption: f"\n![{caption}]({path})\n")])


def render_html(title: str, intro: str, sections: list, run_dir: Path) -> str:
    """One standalone HTML page: the same content as the Markdown, the plots embedded as base64 PNGs."""
    def text(value: str) -> str:  # escaped, with `code` spans kept as code
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value))

    def table(headers: list[str], rows: list[list[str]]) -> str:
        return "\n".join(["<table><thead><tr>" + "".join(f"<th>{text(h)}</th>" for h in headers) + "</tr></thead><tbody>",
                          *("<tr>" + "".join(f"<td>{text(cell)}</td>" for cell in row) + "</tr>" for row in rows),
                          "</tbody></table>"])

    def image(path: str, caption: str) -> str:
        data = base64.b64encode((run_dir / path).read_bytes()).decode("ascii")
        return f'<p><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></p>'

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             f"<style>\n{CSS}\n</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{text(intro)}</p>"]
    parts += _render(sections, heading=lambda h: f"<h2>{html.escape(h)}</h2>", text=lambda t: f"<p>{text(t)}</p>",
                     table=table, image=image)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _render(sections: list, heading, text, table, image) -> list[str]:
    """Each section's heading, then its blocks, each rendered by the function for its kind."""
    kinds = {"text": text, "table": table, "image": image}
    parts = []
    for title, blocks in sections:
        parts.append(heading(title))
        parts += [kinds[block[0]](*block[1:]) for block in blocks]
    return parts
