"""Intervals and paired tests against statsmodels, and the claims table from fixed result files."""

from __future__ import annotations

import json
import random

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from sightsound import claims, report, scoring
from sightsound.scoring import paired_test, tally, wilson_interval


@pytest.mark.parametrize("correct,count", [(0, 10), (10, 10), (7, 40), (229, 400), (1, 3), (150, 200)])
def test_wilson_interval_agrees_with_statsmodels(correct, count):
    low, high = proportion_confint(correct, count, alpha=0.05, method="wilson")
    assert wilson_interval(correct, count) == pytest.approx([low, high], abs=1e-4)


def test_tally_carries_the_interval_and_none_for_nothing():
    assert tally([True, False, True, True])["ci95"] == wilson_interval(3, 4)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("seed", range(6))
def test_paired_test_is_exact_mcnemar(seed):
    rng = random.Random(seed)
    n = rng.choice([12, 40, 400])
    skill_a, skill_b = rng.random(), rng.random()
    a = {f"q{i}": rng.random() < skill_a for i in range(n)}
    b = {f"q{i}": rng.random() < skill_b for i in range(n)}
    test = paired_test(a, b)
    table = [[sum(a[q] and b[q] for q in a), sum(a[q] and not b[q] for q in a)],
             [sum(b[q] and not a[q] for q in a), sum(not a[q] and not b[q] for q in a)]]
    expected = mcnemar(table, exact=True).pvalue
    assert test["p_value"] == pytest.approx(expected, abs=1e-6)
    assert test["first_only"] == table[0][1] and test["second_only"] == table[1][0]
    assert test["difference"] == pytest.approx((sum(b.values()) - sum(a.values())) / n)
    assert test["significant"] == (expected < 0.05)


def test_paired_test_uses_only_shared_questions_and_handles_ties():
    test = paired_test({"a": True, "b": False, "c": True}, {"b": False, "c": True, "d": True})
    assert test["count"] == 2 and test["p_value"] == 1.0 and test["significant"] is False


def test_a_known_mcnemar_case():
    # 25 questions only the second model got right, 5 only the first: p = 2 * P(X <= 5), X ~ Bin(30, 1/2)
    a = {i: i < 5 for i in range(100)}
    b = {i: 5 <= i < 30 for i in range(100)}
    assert paired_test(a, b)["p_value"] == pytest.approx(0.000324, abs=2e-6)


# --- the claims table from fixed result files ------------------------------------------------------

def _write_eval(run, bench, model, correct: list[bool], label=None):
    folder = run / "eval" / bench / model
    folder.mkdir(parents=True)
    rows = [{"id": f"{bench}-{i}", "correct": c, "category": "Which", "options": [], "pred_index": None,
             "meta": {}} for i, c in enumerate(correct)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {"label": label or model, "method": "direct", "dataset": "synth", "benchmark": bench,
              **tally(correct)}
    (folder / "result.json").write_text(json.dumps(result))


def _pattern(n, right, shift=0):
    """`right` of `n` questions right, starting at question `shift` (wrapping round)."""
    return [(i - shift) % n < right for i in range(n)]


@pytest.fixture
def table2_run(tmp_path):
    run = tmp_path / "run"
    n, m = 400, 200
    # in-domain: direct 30%, teacher 75%, sft-cot 50%, agfv 52% (not significant), tts 60%, grpo 60% (same)
    for model, right in {"student-direct": 120, "teacher": 300, "sft-cot": 200, "sft-agfv": 208, "sft": 240,
                         "grpo": 240}.items():
        _write_eval(run, "in-domain", model, _pattern(n, right, shift=100 if model == "sft-agfv" else 0))
    # acoustic: direct 70%, teacher 50%, tts 45% (a significant loss), agfv 50%, sft-cot 50%, grpo 30% (worse)
    for model, right in {"student-direct": 140, "teacher": 100, "sft-cot": 100, "sft-agfv": 100, "sft": 90,
                         "grpo": 60}.items():
        _write_eval(run, "acoustic", model, _pattern(m, right))
    verify = {"quality": {"accepted_traces": 300, "accepted_correct": 240, "rejected_traces": 100,
                          "rejected_correct": 40, "f1": 0.75, "precision": 0.8, "recall": 0.7, "traces": 400}}
    (run / "manifests").mkdir(parents=True)
    (run / "manifests" / "verify.json").write_text(json.dumps({"stage": "verify", **verify}))
    return run


def test_claims_table_from_fixed_result_files(table2_run):
    settings = report.ReportConfig(
        claims={"teacher": "teacher", "direct": "student-direct", "sft_cot": "sft-cot", "agfv_sft": "sft-agfv",
                "tts_agfv_sft": "sft", "grpo": "grpo"}, in_domain="in-domain", acoustic="acoustic")
    evaluated = report.read_results(table2_run, [])
    marks = {key: e.correct for key, e in evaluated.items()}
    verify = json.loads((table2_run / "manifests" / "verify.json").read_text())
    found = {c.claim: c for c in claims.build_claims(marks, settings.claims, "in-domain", "acoustic", verify)}
    verdicts = {name.split(" (")[0]: c.verdict for name, c in found.items()}
    premise = next(c for name, c in found.items() if name.startswith("The teacher watching"))
    assert premise.verdict == "holds" and "+45.0 pts" in premise.ours
    assert verdicts["AGFV raises the label precision of the training corpus"] == "holds"  # 80% vs 40%
    assert found["AGFV + SFT beats SFT on unchecked traces (in-domain)"].verdict.startswith("not shown")
    assert found["GRPO improves on its SFT start (in-domain)"].verdict.startswith("not shown")  # identical
    assert found["GRPO improves on its SFT start (acoustic)"].verdict == "contradicted"  # 45% → 30%
    assert verdicts["Distilled-CoT training gains in-domain and loses on what vision cannot answer"] == "holds"
    assert verdicts["Test-time scaling has mixed effects"] == "holds"  # +8 in-domain, −2.5 acoustic
    assert verdicts["The teacher's errors concentrate where vision has no evidence"] == "holds"  # 75% vs 50%


def test_claims_need_their_models(table2_run):
    evaluated = report.read_results(table2_run, [])
    marks = {key: e.correct for key, e in evaluated.items()}
    assert claims.build_claims(marks, {"direct": "student-direct"}, "in-domain", "acoustic") == []


def test_run_report_shows_intervals_paired_tests_and_claims(table2_run):
    settings = report.ReportConfig(rows=["student-direct", "teacher", "sft"],
                                   compare=[["student-direct", "sft"], ["student-direct", "missing"]],
                                   claims={"teacher": "teacher", "direct": "student-direct", "tts_agfv_sft": "sft"},
                                   in_domain="in-domain", acoustic="acoustic")
    for name, target in (("sft", "cot"), ("sft-cot", "cot")):  # the stage's own SFT and one Table 2 variant
        (table2_run / "manifests" / f"{name}.json").write_text(json.dumps(
            {"stage": name, "target": target, "seconds": 3.0, "counts": {"examples": 7, "steps": 2}}))
    text = report.write_run_report(table2_run, settings)
    assert "| sft (sft-cot) | 7 examples, 2 steps" in text
    assert "30.0 (25.7–34.7)" in text  # student-direct in-domain, with its Wilson interval
    assert "| in-domain | sft vs student-direct | 400 | +30.0 pts | 0 / 120 |" in text
    assert "The paper's claims, as measured" in text and "AVQA: student 67.1%" in text
    assert (table2_run / "plots" / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    body = text.split("## Evaluation")[1]
    assert body.index("student-direct") < body.index("teacher") < body.index("| sft")  # rows in the asked order


def test_report_claims_name_known_roles():
    with pytest.raises(ValueError, match="unknown role 'tts'"):
        report.ReportConfig(claims={"tts": "sft"})


def test_unparsable_share_on_fixed_predictions():
    options = ["louder", "quieter"]
    rows = [{"response": "<think>I hear it.</think><answer>louder</answer>", "options": options},
            {"response": "B", "options": options},  # a bare letter names its option
            {"response": "horn the flute on the flute is still is stwo.</think><answer>horn", "options": options},
            {"response": "horn", "options": ["one", "two", "three"]},  # a name, to "how many?"
            {"response": "<answer>three</answer>", "options": []},  # open-ended: any answer reads
            {"response": "<answer> </answer>", "options": []}]
    assert [scoring.parsable(r["response"], r["options"]) for r in rows] == [True, True, False, False, True, False]
    assert scoring.unparsable(rows) == {"count": 3, "share": 0.5}
    assert scoring.unparsable([]) == {"count": 0, "share": None}


def _broken_after_grpo(broken_wrong: int, parsable_first: int, parsable_second: int):
    """100 acoustic questions: the SFT model answers all parsably and gets 50 right; GRPO writes
    broken text on the first 60 (`broken_wrong` of which SFT got right) and, on the 40 both read,
    is right on `parsable_second` where SFT is right on `parsable_first` (GRPO's right ones last)."""
    ids = [f"q{i}" for i in range(100)]
    sft = {q: (i < broken_wrong) or (60 <= i < 60 + parsable_first) for i, q in enumerate(ids)}
    grpo = {q: i >= 100 - parsable_second for i, q in enumerate(ids)}
    marks = {("acoustic", "sft"): sft, ("acoustic", "grpo"): grpo}
    parsed = {("acoustic", "sft"): dict.fromkeys(ids, True), ("acoustic", "grpo"): {q: i >= 60 for i, q in enumerate(ids)}}
    return marks, parsed


def test_a_difference_decided_by_unparsable_answers_is_format_limited():
    roles = {"tts_agfv_sft": "sft", "grpo": "grpo"}
    marks, parsed = _broken_after_grpo(broken_wrong=30, parsable_first=20, parsable_second=20)
    grpo_claim = "GRPO improves on its SFT start (acoustic)"
    plain = {c.claim: c.verdict for c in claims.build_claims(marks, roles, None, "acoustic")}
    assert plain[grpo_claim] == "contradicted"  # 50% → 20%, p < 0.0001 ...
    limited = {c.claim: c.verdict for c in claims.build_claims(marks, roles, None, "acoustic", parsed=parsed)}
    assert limited[grpo_claim] == "format-limited"  # ... but on the 40 both read: 20 vs 20 right
    # when the models differ on what both answered too, the verdict stands
    marks, parsed = _broken_after_grpo(broken_wrong=30, parsable_first=38, parsable_second=10)
    assert {c.claim: c.verdict for c in claims.build_claims(marks, roles, None, "acoustic", parsed=parsed)}[
        grpo_claim] == "contradicted"
