"""The paper's tables from results on disk: `sightsound report RESULT.json... --out report.md`.

    sightsound report runs/eval/*/result.json --out runs/report.md     # also writes report.csv

Rows are (model label, method); each benchmark found among the results adds its columns:
MMAU test-mini Sound / Speech / Music / Avg and MUSIC-AVQA Temp / Comp / Cnt / Exist / Avg as in
Table 2, plain accuracy for AVQA (Table 1) and any other dataset. Numbers are percentages with one
decimal and their 95% Wilson interval, "57.5 (52.6–62.2)", computed from the per-sample
predictions by `sightsound eval`; a missing cell is "—".

A run directory's report (`sightsound report RUN_DIR`, written by `sightsound run` at its end) adds
the pipeline, the roles, training curves, an accuracy plot with intervals, paired tests between the
models (exact McNemar on the same questions) and "The paper's claims, as measured"
(`sightsound.claims`). What to compare and which model plays which part in the claims come from the
pipeline config's `report` section (`ReportConfig`), which the runner saves as `config/report.yaml`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sightsound import claims as paper_claims
from sightsound.config import read_yaml
from sightsound.datasets import BENCHMARKS
from sightsound.formats import count, num, p_is, p_value, seconds, share, with_interval
from sightsound.registry import STAGES
from sightsound.scoring import paired_test, wilson_interval


@dataclass
class ReportConfig:
    """The `report` section of a pipeline config (saved as RUN/config/report.yaml)."""

    rows: list[str] = field(default_factory=list)  # eval model names in table order (default: the eval models')
    compare: list[list[str]] = field(default_factory=list)  # [first, second] model names: paired tests per benchmark
    claims: dict[str, str] = field(default_factory=dict)  # a role of claims.ROLES → the model name playing it
    in_domain: str | None = None  # the benchmark vision can answer (AVQA's analogue), for the premise and claims
    acoustic: str | None = None  # the benchmark vision cannot answer (MMAU speech/music's analogue)

    def __post_init__(self):
        unknown = sorted(set(self.claims) - set(paper_claims.ROLES))
        if unknown:
            raise ValueError(f"report.claims: unknown role {unknown[0]!r} (roles: {', '.join(paper_claims.ROLES)})")


def columns_of(result: dict) -> dict[str, dict | None]:
    """(header → {accuracy, count, correct, ci95}) for one result: the paper's columns where they
    exist, else the whole benchmark's accuracy, headed by the benchmark's name when it has one."""
    dataset = result.get("dataset") or "?"
    benchmark = BENCHMARKS.get(dataset)
    title = benchmark.title.format(split=result.get("split") or benchmark.split) if benchmark else dataset
    paper = result.get("paper")
    if not paper:
        return {result.get("benchmark") or title: result}
    headers = benchmark.columns if benchmark else {}
    cells = {f"{title} {headers.get(name, name.capitalize())}": cell for name, cell in paper["columns"].items()}
    cells[f"{title} Avg"] = paper["avg"]
    return cells


def build_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows: dict[tuple[str, str], dict[str, dict | None]] = {}
    headers: list[str] = []
    for result in results:
        cells = columns_of(result)
        headers += [h for h in cells if h not in headers]
        rows.setdefault((result.get("label") or "?", result.get("method") or "?"), {}).update(cells)
    body = [[label, method, *(_pct(cells.get(h)) for h in headers)] for (label, method), cells in rows.items()]
    return ["Model", "Method", *headers], body


def _pct(cell: dict | None) -> str:
    """"57.5 (52.6–62.2)": an accuracy in percent with its 95% interval ("—" when missing)."""
    if not cell or cell.get("accuracy") is None:
        return "—"
    return with_interval(cell["accuracy"], _interval(cell))


def _interval(cell: dict) -> list[float] | None:
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
    path.write_text(buffer.getvalue())


# --- the run report: one run directory → report.md, report.html, report.csv, plots/*.png ---------------

CSS = """body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; }"""


def write_run_report(run_dir: str | Path, settings: ReportConfig | None = None) -> str:
    """Write report.md, report.html, report.csv and plots/*.png into `run_dir`; return the Markdown.

    `settings` default to the run's `config/report.yaml` (saved by `sightsound run`), else to none.
    Each section is made from what the run directory holds; a missing or unreadable file leaves its
    section (or line) out. Sections are (title, blocks), a block being ("text", str),
    ("table", headers, rows) or ("image", relative path, caption); both documents are rendered from them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or read_settings(run_dir)
    manifests = {stage: _read_json(run_dir / "manifests" / f"{stage}.json") for stage in STAGES}
    manifests = {stage: m for stage, m in manifests.items() if m is not None}
    evaluated = read_results(run_dir, settings.rows, [b for b in (settings.in_domain, settings.acoustic) if b])
    results = [r for r, _ in evaluated.values()]
    marks = {key: correct for key, (_, correct) in evaluated.items()}

    sections = [
        ("Pipeline", _pipeline_blocks(manifests, run_dir)),
        ("Bootstrapped roles", _bootstrap_blocks(manifests.get("bootstrap")) + _premise_blocks(manifests, marks, settings)),
        ("Teacher and checker", _teacher_checker_blocks(manifests.get("teach"), manifests.get("verify"))),
        ("Training curves", _curve_blocks(run_dir)),
        ("Evaluation", _evaluation_blocks(results) + _accuracy_plot_blocks(evaluated, run_dir)
         + _paired_blocks(evaluated, settings)),
        ("The paper's claims, as measured", _claims_blocks(marks, settings, manifests.get("verify"))),
        ("Timings", _timing_blocks(run_dir, manifests)),
    ]
    sections = [(title, blocks) for title, blocks in sections if blocks]
    title = f"SightSound-R1 run: {run_dir.resolve().name}"
    intro = ("Every number below is read from this run directory's files, as measured; shares are shown as "
             "percentages, accuracies with their 95% Wilson interval in brackets.")

    text = render_markdown(title, intro, sections)
    (run_dir / "report.md").write_text(text)
    (run_dir / "report.html").write_text(render_html(title, intro, sections, run_dir))
    if results:
        write_csv(run_dir / "report.csv", *build_table(results))
    return text


def read_settings(run_dir: Path) -> ReportConfig:
    """The run's report settings (`config/report.yaml`), or the defaults when it has none."""
    from sightsound.config import from_dict

    path = run_dir / "config" / "report.yaml"
    return from_dict(ReportConfig, read_yaml(path) or {}, str(path)) if path.exists() else ReportConfig()


def read_results(run_dir: Path, rows: list[str], benchmarks: list[str] = ()) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(benchmark, model) → (result.json, {question id: correct}) for every evaluation in the run,
    the models in `rows` order first (then the others by name), and within a model the benchmarks
    in `benchmarks` order first (then the others by name)."""
    found = {}
    for path in sorted(run_dir.glob("eval/*/*/result.json")):
        result = _read_json(path)
        if result is None:
            continue
        bench, model = path.parent.parent.name, path.parent.name
        result.setdefault("benchmark", bench)
        correct = {r["id"]: bool(r["correct"]) for r in _read_jsonl(path.parent / "predictions.jsonl")
                   if "id" in r and r.get("correct") is not None}  # unlabelled questions are not judged
        found[(bench, model)] = (result, correct)
    rank = {name: i for i, name in enumerate(rows)}
    place = {name: i for i, name in enumerate(benchmarks)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0][1], len(rank)), item[0][1],
                                                        place.get(item[0][0], len(place)), item[0][0])))


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


def _pipeline_blocks(manifests: dict[str, dict], run_dir: Path) -> list:
    rows = []
    for stage, m in manifests.items():
        rows.append([stage, _stage_summary(stage, m), seconds(m.get("seconds"))])
        if stage in ("sft", "grpo"):  # the other variants (Table 2's rows), by the folder they trained into
            for name, variant in _variants(run_dir, stage, manifests):
                rows.append([f"{stage} ({name})", _stage_summary(stage, variant), seconds(variant.get("seconds"))])
    if not rows:
        return []
    return [("table", ["Stage", "In → out", "Seconds"], rows)]


def _variants(run_dir: Path, stage: str, manifests: dict) -> list[tuple[str, dict]]:
    """SFT or GRPO runs of this run directory trained into folders other than the stage's own:
    their manifests are named after the folder (an SFT manifest has a `target`, GRPO's counts `prompts`)."""
    found = []
    for path in sorted((run_dir / "manifests").glob("*.json")):
        if path.stem in manifests or path.stem == "run" or path.stem in STAGES:
            continue
        m = _read_json(path)
        if m and ("target" in m if stage == "sft" else "prompts" in (m.get("counts") or {})):
            found.append((path.stem, m))
    return found


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
        "student": (f"direct accuracy {share(student.get('direct_accuracy'))} on the teacher's question types, "
                    f"{share(student.get('perception_accuracy'))} on its own (perception) ones"),
    }
    sees = {"teacher": "video frames only", "checker": "audio + a trace", "student": "audio"}
    rows = []
    for role in ["teacher", "student", "checker"]:
        trained = training.get(role) or {}
        how = (f"{count(trained.get('examples'))} examples, {count(trained.get('steps'))} steps, "
               f"loss {num(trained.get('first_loss'))} → {num(trained.get('last_loss'))}")
        if role == "checker" and trained.get("first_loss") is None:  # the audio–text verifier
            how = f"verifier calibrated on {count(trained.get('examples'))} traces, {count(trained.get('steps'))} steps"
        rows.append([role, sees[role], how, held_out[role]])
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
    """One plot per training folder of the run (sft/, grpo/ and any variants): GRPO's when its
    metrics carry rewards, SFT's otherwise."""
    blocks = []
    for folder in sorted(p.parent for p in run_dir.glob("*/metrics.jsonl")):
        rows = [r for r in _read_jsonl(folder / "metrics.jsonl") if "step" in r]
        if not rows:
            continue
        if any("reward" in r for r in rows):
            blocks.append(("image", plot_grpo(rows, run_dir / "plots" / f"{folder.name}.png", folder.name),
                           f"GRPO ({folder.name}): reward and KL"))
        else:
            blocks.append(("image", plot_sft(rows, run_dir / "plots" / f"{folder.name}_loss.png", folder.name),
                           f"SFT ({folder.name}): loss"))
    return blocks


def _evaluation_blocks(results: list[dict]) -> list:
    if not results:
        return []
    headers, body = build_table(results)
    blocks = [("text", "Accuracy (%) per benchmark column, with its 95% Wilson interval, from `sightsound eval` "
                       "predictions."), ("table", headers, body)]
    return blocks + [("text", note) for note in result_notes(results)]


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


def _accuracy_plot_blocks(evaluated: dict, run_dir: Path) -> list:
    if not evaluated:
        return []
    path = plot_accuracy({key: result for key, (result, _) in evaluated.items()}, run_dir / "plots" / "accuracy.png")
    return [("image", path, "Accuracy per benchmark with 95% intervals")]


def _paired_blocks(evaluated: dict, settings: ReportConfig) -> list:
    """The paired tests the report config asks for, on every benchmark both models answered."""
    rows = []
    labels = {model: result.get("label") or model for (_, model), (result, _) in evaluated.items()}
    benches = list(dict.fromkeys(bench for bench, _ in evaluated))
    for first, second in (pair for pair in settings.compare if len(pair) == 2):
        for bench in benches:
            a, b = evaluated.get((bench, first)), evaluated.get((bench, second))
            if a and b:
                test = paired_test(a[1], b[1])
                rows.append([bench, f"{labels[second]} vs {labels[first]}", count(test["count"]),
                             _points(test["difference"]), f"{test['first_only']} / {test['second_only']}",
                             p_value(test["p_value"]), "yes" if test["significant"] else "no"])
    if not rows:
        return []
    note = ("Paired tests on the same questions (exact McNemar): the difference in points, the questions only the "
            "first / only the second model got right, the two-sided p-value, and whether the difference is "
            "significant (p < 0.05).")
    return [("text", note), ("table", ["Benchmark", "Comparison", "Questions", "Difference", "Discordant",
                                       "p", "Significant"], rows)]


def _points(difference: float | None) -> str:
    return "—" if difference is None else f"{100 * difference:+.1f} pts"


def _premise_blocks(manifests: dict, marks: dict, settings: ReportConfig) -> list:
    """The paper's premise as this run measures it: the teacher ahead of the student on the
    in-domain benchmark, a share of hallucinated traces for the checker to catch, and a checker
    that catches them."""
    rows = []
    teacher, student = settings.claims.get("teacher"), settings.claims.get("direct")
    a, b = marks.get((settings.in_domain, student)), marks.get((settings.in_domain, teacher))
    if a and b:
        test = paired_test(a, b)
        rows.append([f"teacher − student (direct), {settings.in_domain}", "AVQA: 85.5 − 67.1 = +18.4 pts",
                     f"{_points(test['difference'])} ({p_is(test['p_value'])}, n = {test['count']})"])
    teach = (manifests.get("teach") or {}).get("counts") or {}
    if teach.get("hallucinated_traces") is not None:
        rows.append(["traces claiming a sound the clip lacks", "not reported",
                     f"{share(teach['hallucinated_traces'])} of {count(teach.get('traces'))}"])
    quality = (manifests.get("verify") or {}).get("quality") or {}
    if quality.get("f1") is not None:
        rows.append(["checker's rejection F1 against ground truth", "not reported",
                     f"{num(quality['f1'])} (precision {share(quality.get('precision'))}, recall "
                     f"{share(quality.get('recall'))}, {count(quality.get('traces'))} traces)"])
    if not rows:
        return []
    return [("text", "The paper's premise, measured in this run's pipeline:"),
            ("table", ["Premise", "Paper", "This run"], rows)]


def _claims_blocks(marks: dict, settings: ReportConfig, verify: dict | None) -> list:
    found = paper_claims.build_claims(marks, settings.claims, settings.in_domain, settings.acoustic, verify)
    if not found:
        return []
    roles = "; ".join(f"{role} = `{name}`" for role, name in settings.claims.items())
    note = ("Each claim of the paper this run can test, the paper's figure, ours (accuracy with its 95% interval, "
            "the difference and its p-value) and a verdict: holds (significant, the paper's way), contradicted "
            "(significant, the other way) or not shown (not significant). Models: " + roles + ".")
    return [("text", note), ("table", ["Claim", "Paper", "This run", "Verdict"],
                             [[c.claim, c.paper, c.ours, c.verdict] for c in found])]


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


def plot_sft(rows: list[dict], out: Path, folder: str = "sft") -> str:
    """Loss against step, and validation accuracy on a second axis when it was measured; returns the
    path relative to the run directory."""
    fig = _figure(4)
    ax = fig.add_subplot()
    points = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    lines = ax.plot([s for s, _ in points], [v for _, v in points], marker=".", color="tab:blue", label="loss")
    ax.set(title=f"SFT ({folder}): training loss", xlabel="step", ylabel="loss")
    _whole_steps(ax)
    val = [(r["step"], 100 * r["val_accuracy"]) for r in rows if r.get("val_accuracy") is not None]
    if val:
        twin = ax.twinx()
        lines += twin.plot([s for s, _ in val], [v for _, v in val], marker="o", color="tab:orange",
                           label="val accuracy (%)")
        twin.set_ylabel("val accuracy (%)")
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    return _save(fig, out)


def plot_grpo(rows: list[dict], out: Path, folder: str = "grpo") -> str:
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
    top.set(title=f"GRPO ({folder}): reward", ylabel="mean reward")
    _whole_steps(top)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the panel: no curve hidden
    kl = [(r["step"], r["kl"]) for r in rows if r.get("kl") is not None]
    bottom.plot([s for s, _ in kl], [v for _, v in kl], marker=".", color="tab:red", label="KL")
    bottom.set(title=f"GRPO ({folder}): KL to the reference policy", xlabel="step", ylabel="KL")
    _whole_steps(bottom)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, out)


def plot_accuracy(results: dict[tuple[str, str], dict], out: Path) -> str:
    """One panel per benchmark: each model's accuracy as a horizontal bar with its 95% interval as
    an error bar, models top to bottom in report order; returns the path relative to the run directory."""
    benches = list(dict.fromkeys(bench for bench, _ in results))
    models = list(dict.fromkeys(model for _, model in results))
    labels = {model: r.get("label") or model for (_, model), r in results.items()}
    fig = _figure(1.0 + 0.45 * len(models) * len(benches))
    axes = fig.subplots(len(benches), 1, squeeze=False)[:, 0]
    for ax, bench in zip(axes, benches):
        ys, values, low, high = [], [], [], []
        for y, model in enumerate(models):
            r = results.get((bench, model))
            if r is None or not r.get("count"):
                continue
            interval = _interval(r) or [r["accuracy"], r["accuracy"]]
            ys.append(y)
            values.append(100 * r["accuracy"])
            low.append(100 * (r["accuracy"] - interval[0]))
            high.append(100 * (interval[1] - r["accuracy"]))
        ax.barh(ys, values, xerr=[low, high], color="tab:blue", alpha=0.75, capsize=4)
        for y, value, up in zip(ys, values, high):
            inside = value >= 12  # a short bar's number goes past its error bar, in black
            ax.text(1 if inside else value + up + 1, y, f"{value:.1f}", va="center",
                    color="white" if inside else "black", fontsize="small")
        ax.set_yticks(range(len(models)), [labels[m] for m in models])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        count_of = max((results[(bench, m)].get("count") or 0) for m in models if (bench, m) in results)
        ax.set(title=f"{bench} ({count_of} questions)", xlabel="accuracy (%), 95% interval")
        ax.grid(axis="x", alpha=0.3)
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
