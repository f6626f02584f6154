"""The run report's sections, each made from what the run directory holds: the pipeline, the
bootstrapped roles and the paper's premise, teacher and checker, training curves, evaluation with
paired tests, the paper's claims (`sightsound.claims`) and timings. A builder returns its blocks
(see `render`), none when the run lacks what it shows.
"""

from __future__ import annotations

from pathlib import Path

from sightsound import claims as paper_claims
from sightsound.formats import count, num, p_is, p_value, seconds, share
from sightsound.manifest import read_manifest
from sightsound.registry import STAGES
from sightsound.report.plots import plot_accuracy, plot_grpo, plot_sft
from sightsound.report.reading import eval_manifests, read_jsonl
from sightsound.report.settings import ReportConfig
from sightsound.report.tables import build_table, result_notes
from sightsound.rundir import RUN_MANIFEST, RunDir
from sightsound.scoring import ONE_ANSWER, paired_test


def pipeline_blocks(manifests: dict[str, dict], run_dir: Path) -> list:
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
    for path in sorted(RunDir(run_dir).manifests.glob("*.json")):
        if path.stem in manifests or path.stem == RUN_MANIFEST or path.stem in STAGES:
            continue
        m = read_manifest(run_dir, path.stem, strict=False)
        if m and ("target" in m if stage == "sft" else "prompts" in (m.get("counts") or {})):
            found.append((path.stem, m))
    return found


def _stage_summary(stage: str, manifest: dict) -> str:
    """One line saying what came into a stage and what came out of it (the stage's own `summary`)."""
    summary = STAGES[stage].summary if stage in STAGES else None
    if summary is not None:
        return summary(manifest)
    return ", ".join(f"{k} {v}" for k, v in (manifest.get("counts") or {}).items())


def bootstrap_blocks(manifest: dict | None) -> list:
    if manifest is None:
        return []
    c = manifest.get("counts") or {}
    training = c.get("training") or {}
    held_out = _held_out(c.get("teacher") or {}, c.get("checker") or {}, c.get("student") or {})
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


def _held_out(teacher: dict, checker: dict, student: dict) -> dict[str, str]:
    """Each bootstrapped role's numbers on the held-out questions, in words."""
    return {
        "teacher": (f"accuracy {share(teacher.get('accuracy'))}, agrees with a pure watcher "
                    f"{share(teacher.get('watcher_agreement'))}, format {share(teacher.get('format'))}, "
                    f"reasoning exact {share(teacher.get('reasoning_exact'))}"),
        "checker": (f"accuracy {share(checker.get('accuracy'))}; rejecting absent sounds: precision "
                    f"{share(checker.get('precision'))}, recall {share(checker.get('recall'))}, "
                    f"F1 {share(checker.get('f1'))} (TP {checker.get('tp')}, FP {checker.get('fp')}, "
                    f"FN {checker.get('fn')}, TN {checker.get('tn')})"),
        "student": (f"direct accuracy {share(student.get('direct_accuracy'))} on the teacher's question types "
                    f"({share(student.get('direct_unparsable'))} unparsable), "
                    f"{share(student.get('perception_accuracy'))} on the others "
                    f"({share(student.get('perception_unparsable'))} unparsable); handed another clip's reasoning "
                    f"as its thinking, {share(student.get('given_reasoning_accuracy'))} "
                    f"({share(student.get('given_reasoning_unparsable'))} unparsable)"),
    }


def teacher_checker_blocks(teach: dict | None, verify: dict | None) -> list:
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
        blocks += _checker_blocks(verify)
    return blocks


def _checker_blocks(verify: dict) -> list:
    """What the checker accepted (per category too) and how it did against ground truth."""
    c = verify.get("counts") or {}
    blocks = [("text", f"Checker ({verify.get('checker') or '?'}): {c.get('accepted')} of {c.get('traces')} "
                       f"traces accepted ({share(c.get('acceptance_rate'))}).")]
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


def curve_blocks(run_dir: Path) -> list:
    """One plot per training folder of the run (sft/, grpo/ and any variants): GRPO's when its
    metrics carry rewards, SFT's otherwise."""
    run = RunDir(run_dir)
    blocks = []
    for folder in run.training_folders():
        rows = [r for r in read_jsonl(folder.metrics) if "step" in r]
        if not rows:
            continue
        if any("reward" in r for r in rows):
            blocks.append(("image", plot_grpo(rows, run.plots / f"{folder.name}.png", folder.name),
                           f"GRPO ({folder.name}): reward and KL"))
        else:
            blocks.append(("image", plot_sft(rows, run.plots / f"{folder.name}_loss.png", folder.name),
                           f"SFT ({folder.name}): loss"))
    return blocks


def evaluation_blocks(results: list[dict], in_domain: str | None = None) -> list:
    """The results as the paper's tables: Table 1 (every model and method on the in-domain
    benchmark) and Table 2 (the models on the other benchmarks, per category, a table per
    benchmark: side by side, with their unparsable, one answer and one thinking columns, they run
    past a page's width); one table when the run names no in-domain benchmark."""
    if not results:
        return []
    table1 = [r for r in results if r.get("benchmark") == in_domain]
    table2 = [r for r in results if r.get("benchmark") != in_domain]
    blocks = [] if table1 else [("table", *build_table(results))]
    for caption, part in (("Table 1 analogue: the in-domain benchmark", table1),
                          ("Table 2 analogue: the unseen benchmarks, per category", table2)):
        if part and table1:  # without an in-domain benchmark, the one table above
            benches = {r.get("benchmark") or r.get("dataset"): None for r in part}
            blocks += [("text", f"**{caption}.**")] + [
                ("table", *build_table([r for r in part if (r.get("benchmark") or r.get("dataset")) == bench]))
                for bench in benches]
    return [("text", "Accuracy (%) per benchmark column, with its 95% Wilson interval, from `sightsound eval` "
                     "predictions; each benchmark's unparsable column is the share of answers naming no option, "
                     "its one answer column the share that are the answer the model gives each question type "
                     "most (100%: one answer to every question of a type, whatever the clip), and its one "
                     "thinking column, for a model that reasons, the share whose reasoning is the one it writes "
                     "most for the question type (100%: one reasoning for every clip, so its answers do not "
                     "come from its reasoning); on the synthetic world, its hallucinated reasoning column is, of "
                     "the reasoning that says what is sounding, the share naming a sound the clip lacks (what "
                     "AGFV checks traces for; — where its reasoning never says what is sounding).")
            ] + blocks + [("text", note) for note in result_notes(results)]


def accuracy_plot_blocks(evaluated: dict, run_dir: Path) -> list:
    if not evaluated:
        return []
    path = plot_accuracy({key: e.result for key, e in evaluated.items()},
                         RunDir(run_dir).plots / "accuracy.png")
    return [("image", path, "Accuracy per benchmark with 95% intervals")]


def paired_blocks(evaluated: dict, settings: ReportConfig) -> list:
    """The paired tests the report config asks for, on every benchmark both models answered."""
    rows = []
    labels = {model: e.result.get("label") or model for (_, model), e in evaluated.items()}
    benches = list(dict.fromkeys(bench for bench, _ in evaluated))
    for first, second in (pair for pair in settings.compare if len(pair) == 2):
        for bench in benches:
            a, b = evaluated.get((bench, first)), evaluated.get((bench, second))
            if a and b:
                test = paired_test(a.correct, b.correct)
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


def premise_blocks(manifests: dict, marks: dict, settings: ReportConfig) -> list:
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


def grounded(told: dict) -> dict:
    """For the claim on reasoning: per (benchmark, model), question id → whether every source its
    reasoning says is sounding can be heard, from its `hallucinated` marks (reasoning that says no
    source is sounding is left out)."""
    return {key: {q: not h for q, h in marks.items() if h is not None} for key, marks in told.items()}


def claims_blocks(marks: dict, settings: ReportConfig, verify: dict | None, parsed: dict | None = None,
                  answers: dict | None = None, grounded: dict | None = None, thinking: dict | None = None) -> list:
    found = paper_claims.build_claims(marks, settings.claims, settings.benchmark_roles(), verify, parsed, answers,
                                      grounded, thinking)
    if not found:
        return []
    roles = "; ".join(f"{role} = `{name}`" for role, name in settings.claims.items())
    note = ("Each claim of the paper this run can test, the paper's figure, ours (accuracy with its 95% interval, "
            "the difference and its p-value) and a verdict: holds (significant, the paper's way), contradicted "
            "(significant, the other way), not shown (not significant), format-limited (significant, but not "
            "on the questions both models answered parsably: decided by unparsable answers, not by hearing), or "
            f"{paper_claims.ONE_ANSWER_VERDICT}: a model answers {100 * ONE_ANSWER:.0f}% or more of that "
            "benchmark's questions with the one answer it gives each question type, whatever the clip (for "
            f"the claim on reasoning, {paper_claims.ONE_THINKING_VERDICT}: the same of its reasoning). "
            "Models: " + roles + ".")
    return [("text", note), ("table", ["Claim", "Paper", "This run", "Verdict"],
                             [[c.claim, c.paper, c.ours, c.verdict] for c in found])]


def timing_blocks(run_dir: Path, manifests: dict[str, dict]) -> list:
    blocks = []
    run = read_manifest(run_dir, RUN_MANIFEST, strict=False)
    stages = [s for s in (run or {}).get("stages") or [] if isinstance(s, dict)]
    if stages:
        rows = [[str(s.get("stage")), str(s.get("status")), seconds(s.get("seconds"))] for s in stages]
        total = sum(s.get("seconds") or 0 for s in stages)
        where = RunDir("").manifest(RUN_MANIFEST)  # relative to the run directory, as the text names it
        blocks.append(("text", f"Wall time of each stage in the latest pipeline invocation (`{where}`)."))
        blocks.append(("table", ["Stage", "Status", "Seconds"], rows + [["total", "", seconds(total)]]))
    elif manifests:
        rows = [[stage, seconds(m.get("seconds"))] for stage, m in manifests.items()]
        total = sum(m.get("seconds") or 0 for m in manifests.values())
        blocks.append(("text", "Seconds each stage took when it last ran (from its manifest)."))
        blocks.append(("table", ["Stage", "Seconds"], rows + [["total", seconds(total)]]))
    evals = [[f"{bench}/{model}", seconds(m.get("seconds"))] for bench, model, m in eval_manifests(run_dir)]
    if evals:
        blocks.append(("table", ["Evaluation", "Seconds"], evals))
    return blocks
