"""A run directory's report: `sightsound report RUN_DIR`, also written by `sightsound run` at its end.

Writes the Markdown and HTML reports, the results table as CSV and the plots into the run
directory (every path from `RunDir`), from what it holds: the stage manifests, the training
metrics and the evaluations. Sections are built by `sections`, rendered by `render`; what to compare
and which model plays which role come from the run's report settings (`settings.ReportConfig`).
"""

from __future__ import annotations

from pathlib import Path

from sightsound.manifest import read_manifest
from sightsound.registry import STAGES
from sightsound.report import sections as build
from sightsound.report.reading import read_results
from sightsound.report.render import write_documents
from sightsound.report.settings import ReportConfig, read_settings


def write_run_report(run_dir: str | Path, settings: ReportConfig | None = None) -> str:
    """Write the report (Markdown, HTML, CSV) and the plots into `run_dir`; return the Markdown.

    `settings` default to the run's saved report settings (by `sightsound run`), else to none.
    Each section is made from what the run directory holds; a missing or unreadable file leaves its
    section (or line) out. Sections are (title, blocks), a block being ("text", str),
    ("table", headers, rows) or ("image", relative path, caption); both documents are rendered from them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or read_settings(run_dir)
    manifests = {stage: read_manifest(run_dir, stage, strict=False) for stage in STAGES}
    manifests = {stage: m for stage, m in manifests.items() if m is not None}
    evaluated = read_results(run_dir, settings.rows, list(settings.benchmark_roles().values()))
    results = [e.result for e in evaluated.values()]
    marks = {key: e.correct for key, e in evaluated.items()}
    parsed = {key: e.parsable for key, e in evaluated.items()}
    answers = {key: e.result["one_answer"]["share"] for key, e in evaluated.items()}
    thinking = {key: e.result["one_thinking"]["share"] for key, e in evaluated.items()}
    told = {key: e.hallucinated for key, e in evaluated.items()}

    sections = [
        ("Pipeline", build.pipeline_blocks(manifests, run_dir)),
        ("Bootstrapped roles", build.bootstrap_blocks(manifests.get("bootstrap"))
         + build.premise_blocks(manifests, marks, settings)),
        ("Teacher and checker", build.teacher_checker_blocks(manifests.get("teach"), manifests.get("verify"))),
        ("Training curves", build.curve_blocks(run_dir)),
        ("Evaluation", build.evaluation_blocks(results, settings.in_domain) + build.accuracy_plot_blocks(evaluated, run_dir)
         + build.paired_blocks(evaluated, settings)),
        ("The paper's claims, as measured", build.claims_blocks(
            marks, settings, manifests.get("verify"), parsed, answers, build.grounded(told), thinking)),
        ("Timings", build.timing_blocks(run_dir, manifests)),
    ]
    sections = [(title, blocks) for title, blocks in sections if blocks]
    title = f"SightSound-R1 run: {run_dir.resolve().name}"
    intro = ("Every number below is read from this run directory's files, as measured; shares are shown as "
             "percentages, accuracies with their 95% Wilson interval in brackets.")

    return write_documents(run_dir, title, intro, sections, results)
