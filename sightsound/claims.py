"""The paper's claims, as measured (the run report's section of that name): each claim of
SightSound-R1 a run can test, the paper's figure, ours with its interval and test, and a verdict.

Which model plays which role comes from the report config's `claims`, which benchmark is in-domain
(AVQA's analogue) and which acoustic (MMAU speech/music's) from `in_domain` and `acoustic`; a claim
whose models or benchmarks the run lacks is left out. Verdicts: **holds** (significant, p < 0.05, the
paper's way), **contradicted** (significant, the other way), **not shown** otherwise. Paired models
are compared by exact McNemar (`scoring.paired_test`), independent samples by Fisher's exact test.
"""

from __future__ import annotations

from dataclasses import dataclass

from sightsound.formats import p_is, with_interval
from sightsound.scoring import SIGNIFICANCE, paired_test, wilson_interval

ROLES = {  # role → what the model is (Table 2's rows)
    "teacher": "the vision-language teacher on silent video (zero-shot audio-CoT)",
    "direct": "the student, direct inference",
    "sft_cot": "SFT on distilled CoT, one trace per clip, no checker",
    "agfv_sft": "AGFV + SFT (one trace per clip, checked)",
    "tts_agfv_sft": "TTS + AGFV + SFT",
    "grpo": "TTS + AGFV + SFT + GRPO (SightSound-R1)",
}


FORMAT_LIMITED = "format-limited"


@dataclass
class Claim:
    claim: str
    paper: str
    ours: str
    verdict: str


def verdict(difference: float | None, p_value: float | None, expected: int = 1) -> str:
    """holds / contradicted / not shown for a difference the paper says has the sign of `expected`."""
    if difference is None or p_value is None or p_value >= SIGNIFICANCE or difference == 0:
        return "not shown (not significant)"
    return "holds" if (difference > 0) == (expected > 0) else "contradicted"


def fisher(first: tuple[int, int], second: tuple[int, int]) -> tuple[float | None, float]:
    """(second rate − first rate, two-sided p) for (correct, count) pairs of independent samples."""
    from scipy.stats import fisher_exact

    (a, n), (b, m) = first, second
    if not n or not m:
        return None, 1.0
    return b / m - a / n, float(fisher_exact([[a, n - a], [b, m - b]]).pvalue)


def share(correct: int, count: int) -> str:
    """"62.5% (57.6–67.2)": a share with its 95% Wilson interval."""
    if not count:
        return "—"
    return with_interval(correct / count, wilson_interval(correct, count), percent=True)


def _paired(marks: dict, roles: dict, bench: str, first: str, second: str):
    """The paired test of two roles' models on one benchmark, or None when either is missing."""
    a, b = marks.get((bench, roles.get(first))), marks.get((bench, roles.get(second)))
    return paired_test(a, b) if a and b else None


def _change(test: dict) -> str:
    n = test["count"]
    first, second = round(test["first_accuracy"] * n), round(test["second_accuracy"] * n)
    return (f"{share(first, n)} → {share(second, n)}, {100 * test['difference']:+.1f} pts, "
            f"{p_is(test['p_value'])} (n = {n})")


def build_claims(marks: dict[tuple[str, str], dict], roles: dict[str, str], in_domain: str | None,
                 acoustic: str | None, verify: dict | None = None, parsed: dict | None = None) -> list[Claim]:
    """The claims table. `marks[(benchmark, model)]` maps question id → correct; `roles` maps a role
    of ROLES to a model name; `verify` is the verify stage's manifest (for the corpus's precision);
    `parsed[(benchmark, model)]` maps question id → whether the answer was parsable (for the
    format-limited rule; without it no verdict is format-limited)."""
    run = _Measured(marks, roles, in_domain, acoustic, verify, parsed or {})
    return [claim for claims_of in _CLAIMS for claim in claims_of(run)]


@dataclass
class _Measured:
    """What the claims are measured on: per-question marks, the roles' models, the two benchmarks."""

    marks: dict[tuple[str, str], dict]
    roles: dict[str, str]
    in_domain: str | None
    acoustic: str | None
    verify: dict | None
    parsed: dict[tuple[str, str], dict]

    def paired(self, bench: str | None, first: str, second: str):
        """The paired test of two roles' models on `bench`, with `parsable_test`: the same test on
        the questions both answered parsably (None when either lacks parsability marks)."""
        test = _paired(self.marks, self.roles, bench, first, second)
        a, b = self.parsed.get((bench, self.roles.get(first))), self.parsed.get((bench, self.roles.get(second)))
        if test and a and b:
            both = {q for q in a if a[q] and b.get(q)}
            first_marks, second_marks = self.marks[(bench, self.roles[first])], self.marks[(bench, self.roles[second])]
            test["parsable_test"] = paired_test({q: v for q, v in first_marks.items() if q in both},
                                                {q: v for q, v in second_marks.items() if q in both})
        return test


def judged(test: dict, expected: int = 1) -> str:
    """The verdict of a paired test, with the format-limited rule: a significant difference that is
    not significant the same way on the questions both models answered parsably was decided by
    unparsable answers (a model that writes broken text loses those questions whatever it hears)."""
    found = verdict(test["difference"], test["p_value"], expected)
    inner = test.get("parsable_test")
    if found in ("holds", "contradicted") and inner is not None \
            and verdict(inner["difference"], inner["p_value"], expected) != found:
        return FORMAT_LIMITED
    return found


def _premise(run: _Measured) -> list[Claim]:
    test = run.paired(run.in_domain, "direct", "teacher")
    if not test:
        return []
    return [Claim("The teacher watching the silent video beats the student listening (the premise, Table 1)",
                  "AVQA: student 67.1% → teacher 85.5% (+18.4 pts)", _change(test), judged(test))]


def _corpus_precision(run: _Measured) -> list[Claim]:
    quality = (run.verify or {}).get("quality") or {}
    if not (quality.get("accepted_traces") and quality.get("rejected_traces")):
        return []
    accepted = (quality["accepted_correct"], quality["accepted_traces"])
    rejected = (quality["rejected_correct"], quality["rejected_traces"])
    difference, p = fisher(rejected, accepted)
    return [Claim("AGFV raises the label precision of the training corpus",
                  "not quantified (§3.2: the checker filters hallucinated traces)",
                  f"traces with the right label: rejected {share(*rejected)}, accepted {share(*accepted)}, "
                  f"{p_is(p)} (Fisher)", verdict(difference, p))]


def _agfv(run: _Measured) -> list[Claim]:
    return _each_benchmark(run, "sft_cot", "agfv_sft", "AGFV + SFT beats SFT on unchecked traces",
                           ("MUSIC-AVQA 55.1% → 56.5%", "MMAU 52.3% → 54.1%"))


def _grpo(run: _Measured) -> list[Claim]:
    return _each_benchmark(run, "tts_agfv_sft", "grpo", "GRPO improves on its SFT start",
                           ("MUSIC-AVQA 58.2% → 59.5%", "MMAU 53.5% → 56.2%"))


def _each_benchmark(run: _Measured, first: str, second: str, claim: str, papers: tuple[str, str]) -> list[Claim]:
    """The claim that `second` beats `first`, tested on the in-domain and the acoustic benchmark."""
    claims = []
    for bench, paper in zip((run.in_domain, run.acoustic), papers):
        test = run.paired(bench, first, second)
        if test:
            claims.append(Claim(f"{claim} ({bench})", paper, _change(test), judged(test)))
    return claims


def _distillation(run: _Measured) -> list[Claim]:
    gain = run.paired(run.in_domain, "direct", "tts_agfv_sft")
    loss = run.paired(run.acoustic, "direct", "tts_agfv_sft")
    if not (gain and loss):
        return []
    parts = [judged(gain), judged(loss, -1)]
    overall = (FORMAT_LIMITED if FORMAT_LIMITED in parts else "contradicted" if "contradicted" in parts
               else "holds" if parts == ["holds", "holds"]
               else "not shown (not significant)" if parts[0] == parts[1] else "partly shown: " +
               ("the in-domain gain" if parts[0] == "holds" else "the acoustic loss"))
    return [Claim("Distilled-CoT training gains in-domain and loses on what vision cannot answer",
                  "MUSIC-AVQA 55.6% → 58.2%; MMAU speech 52.6% → 48.3%, music 61.7% → 50.6%",
                  f"{run.in_domain}: {_change(gain)}; {run.acoustic}: {_change(loss)}", overall)]


def _test_time_scaling(run: _Measured) -> list[Claim]:
    tts = [t for t in (run.paired(b, "agfv_sft", "tts_agfv_sft") for b in (run.in_domain, run.acoustic)) if t]
    if len(tts) != 2:
        return []
    significant = [t for t in tts if t["p_value"] < SIGNIFICANCE]
    signs = {t["difference"] > 0 for t in tts if t["difference"]}
    mixed = ("holds" if len(signs) == 2 and significant else
             "contradicted" if len(significant) == 2 and len(signs) == 1 else "not shown (not significant)")
    return [Claim("Test-time scaling has mixed effects (helps one benchmark, hurts the other)",
                  "MMAU 54.1% → 53.5%; MUSIC-AVQA 56.5% → 58.2%",
                  f"{run.in_domain}: {_change(tts[0])}; {run.acoustic}: {_change(tts[1])}", mixed)]


def _teacher_errors(run: _Measured) -> list[Claim]:
    teacher = run.roles.get("teacher")
    seen, heard = run.marks.get((run.in_domain, teacher)), run.marks.get((run.acoustic, teacher))
    if not (seen and heard):
        return []
    first, second = (sum(seen.values()), len(seen)), (sum(heard.values()), len(heard))
    difference, p = fisher(first, second)
    return [Claim("The teacher's errors concentrate where vision has no evidence",
                  "§4.2: LVLMs miss tempo, pitch, timbre and speech, which lack visual correlates",
                  f"teacher accuracy {run.in_domain} {share(*first)}, {run.acoustic} {share(*second)}, "
                  f"{p_is(p)} (Fisher)", verdict(difference, p, -1))]


_CLAIMS = [_premise, _corpus_precision, _agfv, _grpo, _distillation, _test_time_scaling, _teacher_errors]  # table order
