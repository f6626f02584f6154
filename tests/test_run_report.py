"""The run report from small run directories written by hand: which sections, files and numbers appear."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sightsound import report


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def manifest(counts: dict, seconds: float, **extra) -> dict:
    return {"counts": counts, "seconds": seconds, "started_at": "2025-01-01T00:00:00Z",
            "finished_at": "2025-01-01T00:01:00Z", **extra}


def prepare_and_teach(run: Path) -> None:
    write(run / "manifests" / "prepare.json",
          manifest({"samples": 48, "skipped": 3, "skipped_by_kind": {"decode": 2, "short": 1}}, 1.5))
    write(run / "manifests" / "teach.json",
          manifest({"samples": 48, "traces": 192, "unanimous": 36, "unanimity_rate": 0.75, "trace_accuracy": 0.6,
                    "label_accuracy": 0.8333, "unusable": 0}, 42.0))


def full_run(run: Path) -> None:
    prepare_and_teach(run)
    write(run / "manifests" / "bootstrap.json", manifest({
        "train_questions": 120, "heldout_questions": 40,
        "training": {role: {"examples": 120, "steps": 50, "first_loss": 3.2, "last_loss": 0.41}
                     for role in ("teacher", "checker", "student")},
        "teacher": {"format": 1.0, "reasoning_exact": 0.9, "accuracy": 0.625, "watcher_agreement": 0.95},
        "checker": {"accuracy": 0.875, "tp": 30, "fp": 4, "fn": 6, "tn": 40, "precision": 0.8824, "recall": 0.8333,
                    "f1": 0.8571},
        "student": {"direct_accuracy": 0.55, "given_reasoning_accuracy": 0.5, "given_reasoning_unparsable": 0.025}}, 300.0))
    write(run / "manifests" / "verify.json", manifest(
        {"samples": 36, "traces": 144, "accepted": 100, "rejected": 44, "acceptance_rate": 0.6944, "unparseable": 0},
        12.0, checker="trained",
        per_category={"Count": {"traces": 60, "accepted": 40, "acceptance_rate": 0.6667},
                      "Which": {"traces": 84, "accepted": 60, "acceptance_rate": 0.7143}},
        quality={"traces": 144, "hallucinated": 9, "tp": 7, "fp": 37, "fn": 2, "tn": 98,
                 "precision": 0.1591, "recall": 0.7778, "f1": 0.2642}))
    write(run / "manifests" / "sft.json", manifest(
        {"examples": 100, "steps": 20, "first_loss": 2.5, "last_loss": 0.75, "best_val_accuracy": 0.6}, 80.0))
    write(run / "manifests" / "grpo.json", manifest(
        {"prompts": 36, "steps": 10, "first_reward": 0.4, "last_reward": 0.9, "best_val_accuracy": 0.7}, 200.0))
    write_lines(run / "sft" / "metrics.jsonl",
                [{"step": s, "loss": 2.5 - 0.09 * s, "lr": 1e-4, **({"val_accuracy": 0.3 + 0.015 * s} if s % 10 == 0 else {})}
                 for s in range(1, 21)])
    (run / "sft" / "metrics.jsonl").write_text((run / "sft" / "metrics.jsonl").read_text() + '{"step": 21, "lo')
    write_lines(run / "grpo" / "metrics.jsonl",
                [{"step": s, "loss": 0.1, "reward": 0.4 + 0.05 * s, "reward_std": 0.2, "reward_accuracy": 0.3 + 0.05 * s,
                  "reward_format": 0.1, "kl": 0.01 * s, "clip_fraction": 0.0, "zero_variance_groups": 1,
                  "completion_length": 40} for s in range(1, 11)])
    result = {"label": "Student", "method": "direct", "dataset": "synth", "accuracy": 0.6123, "count": 80,
              "paper": None, "dataset_files": {"/data/synth/samples.jsonl": "ab" * 32}}
    write(run / "eval" / "synth" / "student-direct" / "result.json", result)
    write(run / "eval" / "synth" / "student-direct" / "manifests" / "eval.json", manifest({}, 7.31))
    write(run / "manifests" / "run.json", {"stages": [{"stage": "teach", "status": "skipped", "seconds": 0.5},
                                                      {"stage": "verify", "status": "ran", "seconds": 12.0}]})


def test_full_run_writes_every_file_with_the_measured_numbers(tmp_path):
    run = tmp_path / "demo"
    full_run(run)
    text = report.write_run_report(run)

    assert (run / "report.md").read_text() == text
    assert text.startswith("# SightSound-R1 run: demo\n")
    for png in ("sft_loss.png", "grpo.png"):
        assert (run / "plots" / png).read_bytes().startswith(b"\x89PNG")
        assert f"({'plots/' + png})" in text
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["## Pipeline", "## Bootstrapped roles", "## Teacher and checker", "## Training curves",
                      "## Evaluation", "## Timings"]

    # pipeline lines: what came in and out of each stage
    assert "48 samples, 3 skipped (decode: 2, short: 1)" in text
    assert "48 samples → 192 traces, 36 unanimous (75.0%), label accuracy 83.3%" in text
    assert "100 of 144 traces accepted (69.4%) by trained" in text
    assert "100 examples, 20 steps, loss 2.5 → 0.75, best val accuracy 60.0%" in text
    assert "36 prompts, 10 steps, reward 0.4 → 0.9" in text
    # the bootstrapped roles' held-out numbers, as percentages
    assert "| teacher | video frames only | 120 examples, 50 steps, loss 3.2 → 0.41 |" in text
    assert "accuracy 62.5%, agrees with a pure watcher 95.0%" in text
    assert "precision 88.2%, recall 83.3%" in text and "direct accuracy 55.0%" in text
    assert "handed another clip's reasoning as its thinking, 50.0% (2.5% unparsable)" in text
    # teacher unanimity and the checker against ground truth
    assert "unanimity rate 75.0%" in text
    assert "hallucinated traces caught 7 of 9" in text and "recall 77.8%" in text and "precision 15.9%" in text
    assert "| Count | 60 | 40 | 66.7% |" in text
    # evaluation table and benchmark files, then timings from run.json and the eval manifest
    assert "| Student | direct | 61.2 |" in text and "`samples.jsonl` sha256 abababababab" in text
    assert "| teach | skipped | 0.5 |" in text and "| total |  | 12.5 |" in text
    assert "| synth/student-direct | 7.3 |" in text

    page = (run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for png in ("sft_loss.png", "grpo.png"):
        assert base64.b64encode((run / "plots" / png).read_bytes()).decode() in page
    assert "<td>61.2</td>" in page and "<td>Student</td>" in page
    assert "hallucinated traces caught 7 of 9" in page and "<code>samples.jsonl</code>" in page
    assert (run / "report.csv").read_text().splitlines() == ["Model,Method,synth", "Student,direct,61.2"]


def test_partial_run_leaves_out_what_is_missing(tmp_path):
    run = tmp_path / "early"
    prepare_and_teach(run)
    text = report.write_run_report(run)

    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["## Pipeline", "## Teacher and checker", "## Timings"]
    assert "unanimity rate 75.0%" in text and "label accuracy of the unanimous samples 83.3%" in text
    assert "Checker" not in text and "caught" not in text
    assert "| prepare | 1.5 |" in text and "| total | 43.5 |" in text  # from the manifests: no run.json
    assert not (run / "plots").exists() and not (run / "report.csv").exists()
    assert "<img" not in (run / "report.html").read_text()


def test_empty_or_broken_run_dir_still_reports(tmp_path):
    run = tmp_path / "broken"
    (run / "manifests").mkdir(parents=True)
    (run / "manifests" / "teach.json").write_text("{not json")
    write(run / "manifests" / "verify.json", manifest({"traces": 4, "accepted": 4, "acceptance_rate": 1.0}, 1.0,
                                                      checker="local", quality=None))
    write_lines(run / "grpo" / "metrics.jsonl", [{"step": 1, "reward": 0.5, "kl": 0.0}])  # reward only, no components
    text = report.write_run_report(run)
    assert "4 of 4 traces accepted (100.0%) by local" in text and "Teacher:" not in text and "caught" not in text
    assert (run / "plots" / "grpo.png").read_bytes().startswith(b"\x89PNG")
    assert not (run / "plots" / "sft_loss.png").exists()


def test_the_html_page_renders_bold_and_lets_wide_tables_scroll(tmp_path):
    from sightsound.report.render import render_html

    page = render_html("t", "intro", [("S", [("text", "**Table 2 analogue.** see `x`"),
                                             ("table", ["a", "b"], [["1", "2"]])])], tmp_path)
    assert "<strong>Table 2 analogue.</strong> see <code>x</code>" in page and "**" not in page
    assert '<div class="wide"><table>' in page and ".wide { overflow-x: auto; }" in page


def test_the_accuracy_plot_shows_only_evaluated_models_each_named_apart(tmp_path, monkeypatch):
    """A model not evaluated on a benchmark has no empty row there; labels that repeat (the
    student by three methods) carry their method."""
    from matplotlib.figure import Figure

    from sightsound.report.plots import plot_accuracy

    cell = {"accuracy": 0.5, "count": 10, "ci95": [0.2, 0.8]}
    results = {("in-domain", "direct"): {**cell, "label": "student", "method": "direct"},
               ("in-domain", "cot"): {**cell, "label": "student", "method": "zero_shot_cot",
                                      "unparsable": {"count": 1, "share": 0.1}},
               ("sound", "direct"): {**cell, "label": "student", "method": "direct", "unparsable": {"share": 0.0}}}
    shown, notes, original = {}, {}, Figure.savefig

    def keep(fig, *args, **kwargs):
        shown.update({ax.get_title(): [t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes})
        notes.update({ax.get_title(): [t.get_text() for t in ax.texts if "unparsable" in t.get_text()]
                      for ax in fig.axes})
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    plot_accuracy(results, tmp_path / "plots" / "accuracy.png")
    assert shown == {"in-domain (10 questions)": ["student (direct)", "student (zero_shot_cot)"],
                     "sound (10 questions)": ["student (direct)"]}
    assert notes == {"in-domain (10 questions)": ["10.0% unparsable"], "sound (10 questions)": []}


def test_table_2_is_a_table_per_unseen_benchmark_with_its_own_columns():
    """Side by side, four benchmarks' categories, unparsable, one answer and one thinking columns run
    past a page's width, so Table 2 gives each benchmark its own table, in the results' order."""
    from sightsound.report.sections import evaluation_blocks
    from sightsound.scoring import tally

    def result(bench, label, method, categories, thinking=None):
        cell = tally([True, False])
        return {"dataset": "synth", "benchmark": bench, "label": label, "method": method, **cell,
                "per_category": dict.fromkeys(categories, cell), "unparsable": {"share": 0.0},
                "one_answer": {"share": 0.5}, "one_thinking": {"share": thinking}}

    results = [result("in-domain", "student", "direct", ["Which", "Count"]),
               result("sound", "student", "direct", ["Hear", "Tally"]),
               result("sound", "grpo", "zero_shot_cot", ["Hear", "Tally"], thinking=0.7),
               result("music-like", "student", "direct", ["Order", "Exist"])]
    tables = [block for block in evaluation_blocks(results, "in-domain") if block[0] == "table"]
    assert [headers[2] for _, headers, _ in tables] == ["in-domain Which", "sound Hear", "music-like Order"]
    _, sound_headers, sound_rows = tables[1]
    assert sound_headers[-1] == "sound one thinking" and [row[0] for row in sound_rows] == ["student", "grpo"]
    assert sound_rows[0][-1] == "—" and sound_rows[1][-1] == "70.0%"
    assert not any(h.startswith("music-like") for h in sound_headers)
    # without an in-domain benchmark: one table of everything, as before
    assert [b[0] for b in evaluation_blocks(results[1:])].count("table") == 1
