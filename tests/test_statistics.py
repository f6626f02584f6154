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
    rows = [{"id": f"{bench}-{i}", "correct": c, "category": "Which", "options": [], "pred_index": None, "response": "<answer>x</answer>",
             "meta": {}} for i, c in enumerate(correct)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {"label": label or model, "method": "direct", "dataset": "synth", "benchmark": bench,
              **tally(correct)}
    (folder / "result.json").write_text(json.dumps(result))


def _pattern(n, right, shift=0):
    """`right` of `n` questions right, starting at question `shift` (wrapping round)."""
    return [(i - shift) % n < right for i in range(n)]


BENCHES = {"in_domain": "in-domain", "sound": "sound", "acoustic": "acoustic", "music_like": "music-like"}
ROLES = {"teacher": "teacher", "direct": "student-direct", "zero_shot_cot": "student-cot", "test_time": "student-ttd",
         "gt_sft": "sft-gt-label", "sft_label": "sft-label", "grpo_label": "grpo-label", "sft_cot": "sft-cot",
         "agfv_sft": "sft-agfv", "tts_agfv_sft": "sft", "grpo": "grpo"}


@pytest.fixture
def table2_run(tmp_path):
    """Fixed per-question marks for every Table 1 and Table 2 row (questions right out of n)."""
    run = tmp_path / "run"
    right = {  # model: right answers on in-domain (n 400), sound (200), acoustic (200), music-like (200)
        "student-direct": (120, 100, 140, 100), "teacher": (300, None, 100, None), "student-cot": (100, None, None, None),
        "student-ttd": (200, None, None, None), "sft-gt-label": (260, None, None, None),
        "sft-label": (140, 80, 140, 110), "grpo-label": (140, 80, 140, 110), "sft-cot": (200, 100, 100, 100),
        "sft-agfv": (208, 120, 100, 104), "sft": (240, 100, 90, 120), "grpo": (240, 130, 60, 121)}
    for model, counts in right.items():
        for bench, n, got in zip(BENCHES.values(), (400, 200, 200, 200), counts):
            if got is not None:
                _write_eval(run, bench, model, _pattern(n, got, shift=100 if model == "sft-agfv" else 0))
    verify = {"quality": {"accepted_traces": 300, "accepted_correct": 240, "rejected_traces": 100,
                          "rejected_correct": 40, "f1": 0.75, "precision": 0.8, "recall": 0.7, "traces": 400}}
    (run / "manifests").mkdir(parents=True)
    (run / "manifests" / "verify.json").write_text(json.dumps({"stage": "verify", **verify}))
    return run


def test_claims_table_from_fixed_result_files(table2_run):
    evaluated = report.read_results(table2_run, [])
    marks = {key: e.correct for key, e in evaluated.items()}
    verify = json.loads((table2_run / "manifests" / "verify.json").read_text())
    found = {c.claim.split(" (")[0]: c for c in claims.build_claims(marks, ROLES, BENCHES, verify)}
    verdicts = {name: c.verdict for name, c in found.items()}
    assert verdicts["The teacher watching the silent video beats the student listening"] == "holds"
    assert "+45.0 pts" in found["The teacher watching the silent video beats the student listening"].ours
    assert verdicts["Zero-shot CoT lowers the untrained student"] == "holds"  # 30% → 25%, p < 0.05
    assert verdicts["The teacher's reasoning in the prompt lifts the student"] == "holds"
    assert verdicts["SFT on ground-truth labels lifts the student"] == "holds"
    # the headline: sound 50% → 65% holds, music-like 50% → 60.5% holds; against label SFT 40% → 65%, 55% → 60.5%
    assert verdicts["SightSound-R1 outperforms the pretrained student on unseen sounds and questions"] == "holds"
    assert verdicts["SightSound-R1 outperforms label-only distillation on unseen sounds and questions"] == "holds"
    assert verdicts["Distilled-CoT training loses on what vision cannot answer"] == "holds"  # 70% → 45%
    assert verdicts["AGFV + SFT beats SFT on unchecked traces"] == claims.NOT_SHOWN  # +10, 0, +2 pts; none significant
    assert verdicts["GRPO improves on its SFT start"] == "partly shown: holds on sound"  # music-like +0.5 only
    assert verdicts["SFT on distilled labels maintains zero-shot performance on unseen sounds"] == "contradicted"
    assert verdicts["GRPO on distilled labels does worse than SFT on them"].startswith("not shown")  # identical
    assert verdicts["AGFV raises the label precision of the training corpus"] == "holds"  # 80% vs 40%
    assert verdicts["The teacher's errors concentrate where vision has no evidence"] == "holds"  # 75% vs 50%
    assert verdicts["Test-time scaling has mixed effects"] == claims.NOT_SHOWN  # −10 and +8 pts, neither significant


def test_claims_need_their_models(table2_run):
    evaluated = report.read_results(table2_run, [])
    marks = {key: e.correct for key, e in evaluated.items()}
    assert claims.build_claims(marks, {"direct": "student-direct"}, BENCHES) == []
    with pytest.raises(ValueError, match="unknown benchmark role"):
        claims.build_claims(marks, ROLES, {"mmau": "sound"})


def test_a_verdict_needs_every_seed_to_agree():
    """Pooled over two seeds the difference is significant, but one seed goes the other way."""
    first = {f"seed{k}#q{i}": False for k in range(2) for i in range(100)}
    second = {f"seed0#q{i}": i < 40 for i in range(100)} | {f"seed1#q{i}": False for i in range(100)}
    agree = {f"seed0#q{i}": i < 40 for i in range(100)} | {f"seed1#q{i}": i < 10 for i in range(100)}
    first_right = dict(first) | {"seed1#q99": True}  # seed 1: the first model one ahead
    roles = {"direct": "a", "teacher": "b"}
    for marks_b, expected in ((second, "not shown (seeds disagree)"), (agree, "holds")):
        marks = {("in-domain", "a"): first_right, ("in-domain", "b"): marks_b}
        [claim] = claims.build_claims(marks, roles, {"in_domain": "in-domain"})
        assert claim.verdict == expected
        assert "per seed" in claim.ours


def test_run_report_shows_intervals_paired_tests_and_claims(table2_run):
    settings = report.ReportConfig(rows=["student-direct", "teacher", "sft"],
                                   compare=[["student-direct", "sft"], ["student-direct", "missing"]],
                                   claims={"teacher": "teacher", "direct": "student-direct", "tts_agfv_sft": "sft"},
                                   in_domain="in-domain", acoustic="acoustic", sound="sound")
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


def test_pooled_report_sums_the_seeds_and_shows_their_spread(table2_run, tmp_path):
    import shutil

    from sightsound.report.pooled import write_pooled_report

    seeds = {0: table2_run, 1: tmp_path / "seed-1"}
    shutil.copytree(table2_run, seeds[1])
    shutil.rmtree(seeds[1] / "eval" / "in-domain" / "student-direct")
    _write_eval(seeds[1], "in-domain", "student-direct", _pattern(400, 160))  # seed 1: direct 40%, not 30%
    settings = report.ReportConfig(rows=["student-direct", "teacher"], claims=ROLES, **BENCHES)
    text = write_pooled_report(tmp_path / "pooled", seeds, settings)
    assert "35.0 (31.8–38.4)" in text  # direct in-domain over both seeds: 280 of 800
    assert "| in-domain | student-direct / direct | 30.0 | 40.0 | 35.0 | 7.1 |" in text
    premise = next(line for line in text.splitlines() if line.startswith("| The teacher watching"))
    assert "n = 800; per seed +45.0, +35.0 pts" in premise and premise.endswith("| holds |")
    assert "traces with the right label: rejected 40.0%" in text  # the verify counts summed: same shares
    assert (tmp_path / "pooled" / "report.html").exists() and (tmp_path / "pooled" / "report.csv").exists()


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
    grpo_claim = "GRPO improves on its SFT start"  # tested here on the sound role only
    plain = {c.claim: c.verdict for c in claims.build_claims(marks, roles, {"sound": "acoustic"})}
    assert plain[grpo_claim] == "contradicted"  # 50% → 20%, p < 0.0001 ...
    limited = {c.claim: c.verdict for c in claims.build_claims(marks, roles, {"sound": "acoustic"}, parsed=parsed)}
    assert limited[grpo_claim] == "format-limited"  # ... but on the 40 both read: 20 vs 20 right
    # when the models differ on what both answered too, the verdict stands
    marks, parsed = _broken_after_grpo(broken_wrong=30, parsable_first=38, parsable_second=10)
    assert {c.claim: c.verdict for c in claims.build_claims(marks, roles, {"sound": "acoustic"}, parsed=parsed)}[
        grpo_claim] == "contradicted"


def test_one_answer_is_the_share_of_answers_each_question_type_gets_most():
    from sightsound.scoring import one_answer

    rote = [("Pitch", "high")] * 20 + [("Louder", "no")] * 19 + [("Louder", "yes"), ("Louder", None)]
    found = one_answer(rote)
    assert found["categories"] == {"Louder": 0.95, "Pitch": 1.0} and found["share"] == round(39 / 40, 4)
    hearing = [("Pitch", "high")] * 11 + [("Pitch", "low")] * 9
    assert one_answer(hearing)["share"] == 0.55 and one_answer([])["share"] is None


def test_one_thinking_is_the_share_of_reasoning_each_question_type_gets_most():
    """A policy whose reasoning collapsed to a template (as the demo's GRPO row did: "The violin on
    the audio." for most clips) is told from one that reasons about each clip; direct answers,
    which do not think, are left out."""
    from sightsound.scoring import one_thinking

    collapsed = ([("Which", "<think>The violin on the audio.</think><answer>drum</answer>")] * 9
                 + [("Which", "<think>The drum on the left is sounding.</think><answer>drum</answer>")]
                 + [("Count", "<think> The bird  on the audio.</think><answer>two</answer>")] * 3
                 + [("Count", "<think>The bird on the audio.</think><answer>one</answer>"), ("Count", "two")])
    found = one_thinking(collapsed)
    assert found["categories"] == {"Count": 1.0, "Which": 0.9} and found["share"] == round(13 / 14, 4)
    varied = [("Which", f"<think>The {name} on the left is sounding.</think><answer>{name}</answer>")
              for name in ("drum", "bell", "horn", "flute")]
    assert one_thinking(varied)["share"] == 0.25
    assert one_thinking([("Which", "drum"), ("Count", "<answer>two</answer>")])["share"] is None


def test_a_comparison_with_a_model_answering_by_rote_is_not_a_finding():
    """GRPO improves on SFT by 20 points, significantly — but the SFT model said "high" to every
    question, so its 40% is that answer's base rate and the comparison is no finding."""
    ids = [f"q{i}" for i in range(100)]
    marks = {("acoustic", "sft"): {q: i < 40 for i, q in enumerate(ids)},
             ("acoustic", "grpo"): {q: i < 60 for i, q in enumerate(ids)}}
    roles, benches = {"tts_agfv_sft": "sft", "grpo": "grpo"}, {"sound": "acoustic"}
    claim = "GRPO improves on its SFT start"
    assert {c.claim: c.verdict for c in claims.build_claims(marks, roles, benches)}[claim] == "holds"
    answers = {("acoustic", "sft"): 1.0, ("acoustic", "grpo"): 0.55}
    found = {c.claim: c.verdict for c in claims.build_claims(marks, roles, benches, answers=answers)}
    assert found[claim] == claims.ONE_ANSWER_VERDICT
    answers[("acoustic", "sft")] = 0.94  # under the threshold: the verdict stands
    assert {c.claim: c.verdict for c in claims.build_claims(marks, roles, benches, answers=answers)}[claim] == "holds"


def test_a_synthetic_benchmark_is_reported_per_category_and_their_average():
    cell = lambda right, n: tally([True] * right + [False] * (n - right))  # noqa: E731
    result = {"dataset": "synth", "benchmark": "music-like", "label": "m", "method": "direct", **cell(30, 60),
              "per_category": {"Order": cell(20, 30), "Exist": cell(10, 30)}, "unparsable": {"share": 0.05},
              "one_answer": {"share": 0.6}, "one_thinking": {"share": 0.875},
              "hallucinated_reasoning": {"count": 15, "share": 0.25, "of": 60}}
    headers, [row] = report.build_table([result])
    assert headers[2:] == ["music-like Order", "music-like Exist", "music-like Avg", "music-like unparsable",
                           "music-like one answer", "music-like one thinking", "music-like hallucinated reasoning"]
    assert row[2].startswith("66.7") and row[3].startswith("33.3") and row[4].startswith("50.0") and row[5] == "5.0%"
    assert row[6] == "60.0%" and row[7] == "87.5%" and row[8] == "25.0% of 60"  # of the reasoning saying what sounds
    del result["one_answer"], result["one_thinking"], result["hallucinated_reasoning"]
    result["per_category"] = {"Order": cell(20, 30)}  # one category: the benchmark's accuracy alone
    assert report.build_table([result])[0][2:] == ["music-like", "music-like unparsable"]


def test_the_teachers_errors_claim_is_format_limited_when_it_never_answers_the_acoustic_questions():
    ids = [f"q{i}" for i in range(100)]
    marks = {("in-domain", "t"): {q: i < 75 for i, q in enumerate(ids)}, ("acoustic", "t"): dict.fromkeys(ids, False)}
    benches = {"in_domain": "in-domain", "acoustic": "acoustic"}
    [plain] = claims.build_claims(marks, {"teacher": "t"}, benches)
    assert plain.verdict == "holds"  # 75% vs 0%
    parsed = {("in-domain", "t"): dict.fromkeys(ids, True), ("acoustic", "t"): dict.fromkeys(ids, False)}
    [limited] = claims.build_claims(marks, {"teacher": "t"}, benches, parsed=parsed)
    assert limited.verdict == "format-limited"  # not one acoustic answer names an option


def test_hallucinated_reasoning_asks_of_the_students_thinking_what_agfv_asks_of_the_teachers():
    from sightsound.datasets.synth.oracle import hallucinated_reasoning

    facts = {q: {"audible": ["drum"]} for q in ("unheard", "heard", "silent", "direct", "vague")}
    responses = {"unheard": "<think>The bell on the left is sounding.</think><answer>bell</answer>",
                 "heard": "<think>The drum on the middle is sounding. The bell is silent.</think><answer>drum</answer>",
                 "vague": "<think>The violin on the audio.</think><answer>drum</answer>",
                 "direct": "drum", "unknown": "<think>The bell is sounding.</think>"}
    told = hallucinated_reasoning(responses, facts)
    assert told == {"unheard": True, "heard": False, "vague": None}
    from sightsound.report.reading import hallucination_share

    assert hallucination_share(told.values()) == {"count": 1, "share": 0.5, "of": 2}  # of the reasoning that says
    assert hallucination_share([None, None]) == {"count": 0, "share": None, "of": 0}  # "—", not a grounded 0%


def test_the_grounding_claim_compares_reasoning_that_says_what_sounds_and_not_rote_reasoning():
    """AGFV's student says only heard sounds on 80 of 100 questions, the unchecked one on 50: holds.
    A seed where the two share no question has no say (shown "—"); rote reasoning makes no finding."""
    ids = [f"q{i}" for i in range(100)]
    roles, benches = {"sft_cot": "cot", "agfv_sft": "agfv"}, {"in_domain": "in-domain"}
    grounded = {("in-domain", "cot"): {q: i < 50 for i, q in enumerate(ids)},
                ("in-domain", "agfv"): {q: i < 80 for i, q in enumerate(ids)}}
    claim = claims.GROUNDING.claim
    found = {c.claim: c for c in claims.build_claims({}, roles, benches, grounded=grounded)}
    assert found[claim].verdict == "holds" and "50.0%" in found[claim].ours and "80.0%" in found[claim].ours
    rote = {("in-domain", "cot"): 0.3, ("in-domain", "agfv"): 0.97}
    assert {c.claim: c.verdict for c in claims.build_claims({}, roles, benches, grounded=grounded, thinking=rote)}[
        claim] == claims.ONE_THINKING_VERDICT
    pooled = {key: {f"seed0#{q}": v for q, v in marks.items()} for key, marks in grounded.items()}
    pooled[("in-domain", "cot")]["seed1#x"] = True  # seed 1: the checked student's reasoning never says what sounds
    [tested] = [c for c in claims.build_claims({}, roles, benches, grounded=pooled) if c.claim == claim]
    assert tested.verdict == "holds" and "per seed +30.0, — pts" in tested.ours
    assert not [c for c in claims.build_claims({}, roles, benches) if c.claim == claim]  # no reasoning marks
