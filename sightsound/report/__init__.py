"""The report: the paper's tables from result files (`tables`), and a run directory's report
(`run_report`: Markdown, HTML, CSV and plots, with paired tests and the paper's claims as measured).

    sightsound report RESULT.json... --out OUT.md    # the tables (and OUT.csv)
    sightsound report RUN_DIR                        # the run report

The names below are what the rest of the code imports from `sightsound.report`.
"""

from sightsound.report.plots import plot_accuracy, plot_grpo, plot_sft
from sightsound.report.reading import read_results
from sightsound.report.render import CSS, render_html, render_markdown
from sightsound.report.run_report import write_run_report
from sightsound.report.settings import ReportConfig, read_settings
from sightsound.report.tables import build_table, columns_of, markdown, result_notes, write_csv, write_report

__all__ = ["CSS", "ReportConfig", "build_table", "columns_of", "markdown", "plot_accuracy", "plot_grpo", "plot_sft",
           "read_results", "read_settings", "render_html", "render_markdown", "result_notes", "write_csv",
           "write_report", "write_run_report"]
