"""The paper's claims, as measured (the run report's section of that name): each claim of
SightSound-R1 a run can test, the paper's figures, ours with intervals and paired tests, and a verdict.

Which model plays which role comes from the report config's `claims`; which benchmark plays which
of the paper's from `in_domain` (AVQA), `sound` (MMAU sound), `acoustic` (MMAU speech and music:
what vision cannot answer) and `music_like` (MUSIC-AVQA). A claim is tested on every benchmark it
names that the run has, and left out when it has none.

Verdicts: **holds** (significant, p < 0.05, the paper's way), **contradicted** (significant, the
other way), **not shown** otherwise; a claim that something is *kept* ("maintains") holds unless it
is significantly lost. **format-limited**: significant, but not the same way on the questions both
models answered parsably — decided by answers that name no option, not by hearing. **not a finding
(one answer by rote)**: a model answers `scoring.ONE_ANSWER` or more of the benchmark's questions
with the one answer it gives each question type (`scoring.one_answer`), so the comparison measures
that answer's base rate, whatever its significance. One claim is tested on the student's
reasoning, not its answers (`GROUNDING`: on the synthetic world, whether every source it says is
sounding can be heard); its rote rule is **not a finding (one reasoning by rote)**, by
`scoring.one_thinking`. In a report pooled over seeds (question ids `seed<k>#...`, from
`sightsound run` with `run.seeds`), a verdict also needs every seed's difference to point the same
way, else it is **not shown (seeds disagree)**; a seed where the two models share no question has
no say. A claim tested on several benchmarks holds when every part holds, is contradicted (or
format-limited) when any part is, and is partly shown otherwise. Paired models are compared by
exact McNemar (`scoring.paired_test`), independent samples by Fisher's exact test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sightsound.formats import p_is, with_interval
from sightsound.scoring import ONE_ANSWER, SIGNIFICANCE, paired_test, wilson_interval

ROLES = {  # role → what the model is (Tables 1 and 2's rows)
    "teacher": "the vision-language teacher on silent video (zero-shot audio-CoT)",
    "direct": "the student, direct inference",
    "zero_shot_cot": "the student, asked to think first (zero-shot CoT)",
    "test_time": "the student given the teacher's reasoning on the same clip (test-time CoT distillation)",
    "gt_sft": "SFT on ground-truth labels (Table 1's upper reference)",
    "sft_label": "SFT on the teacher's labels (label-only distillation)",
    "grpo_label": "GRPO on the teacher's labels, from the student itself",
    "sft_cot": "SFT on distilled CoT, one trace per clip, no checker",
    "agfv_sft": "AGFV + SFT (one trace per clip, checked)",
    "tts_agfv_sft": "TTS + AGFV + SFT",
    "grpo": "TTS + AGFV + SFT + GRPO (SightSound-R1)",
}
BENCHMARK_ROLES = ("in_domain", "sound", "acoustic", "music_like")  # the paper's AVQA, MMAU sound,
# MMAU speech/music and MUSIC-AVQA

FORMAT_LIMITED = "format-limited"
ONE_ANSWER_VERDICT = "not a finding (one answer by rote)"
ONE_THINKING_VERDICT = "not a finding (one reasoning by rote)"
NOT_SHOWN = "not shown (not significant)"
SEEDS_DISAGREE = "not shown (seeds disagree)"
SEED_MARK = "#"  # a pooled report's question ids: "seed0#<id>"


@dataclass
class Claim:
    claim: str
    paper: str
    ours: str
    verdict: str


@dataclass
class Part:
    """One comparison a claim rests on: `second` against `first` on the benchmark playing `bench`,
    the paper's difference having the sign of `expected` (0: the paper says it is kept)."""

    bench: str
    first: str
    second: str
    expected: int
    paper: str


@dataclass
class PairedClaim:
    claim: str
    parts: list[Part] = field(default_factory=list)


def _p(bench, first, second, expected, paper):
    return Part(bench, first, second, expected, paper)


# The claims of the abstract, §4 and the tables' captions that a run can test, in table order.
PAIRED_CLAIMS = [
    PairedClaim("The teacher watching the silent video beats the student listening (the premise, Table 1)",
                [_p("in_domain", "direct", "teacher", 1, "AVQA: student 67.1% → teacher 85.5% (+18.4 pts)")]),
    PairedClaim("Zero-shot CoT lowers the untrained student (Table 1)",
                [_p("in_domain", "direct", "zero_shot_cot", -1, "AVQA 67.1% → 57.7%")]),
    PairedClaim("The teacher's reasoning in the prompt lifts the student (test-time distillation, Table 1)",
                [_p("in_domain", "direct", "test_time", 1, "AVQA 67.1% → 82.7%")]),
    PairedClaim("SFT on ground-truth labels lifts the student (Table 1's upper reference)",
                [_p("in_domain", "direct", "gt_sft", 1, "AVQA 67.1% → 86.5%")]),
    PairedClaim("SightSound-R1 outperforms the pretrained student on unseen sounds and questions (headline)",
                [_p("sound", "direct", "grpo", 1, "MMAU sound 64.3% → 66.1%"),
                 _p("music_like", "direct", "grpo", 1, "MUSIC-AVQA 55.6% → 59.5%")]),
    PairedClaim("SightSound-R1 outperforms label-only distillation on unseen sounds and questions (headline)",
                [_p("sound", "sft_label", "grpo", 1, "MMAU sound 64.3% → 66.1%"),
                 _p("music_like", "sft_label", "grpo", 1, "MUSIC-AVQA 58.8% → 59.5%")]),
    PairedClaim("SightSound-R1 improves the student in-domain (abstract)",
                [_p("in_domain", "direct", "grpo", 1, "AVQA: no figure given")]),
    PairedClaim("Distilled-CoT training loses on what vision cannot answer (§4)",
                [_p("acoustic", "direct", "tts_agfv_sft", -1, "MMAU speech 52.6% → 48.3%, music 61.7% → 50.6%")]),
    PairedClaim("AGFV + SFT beats SFT on unchecked traces",
                [_p("sound", "sft_cot", "agfv_sft", 1, "MMAU sound 61.3% → 63.1%"),
                 _p("acoustic", "sft_cot", "agfv_sft", 1, "MMAU speech 47.1% → 47.7%, music 48.5% → 51.5%"),
                 _p("music_like", "sft_cot", "agfv_sft", 1, "MUSIC-AVQA 55.1% → 56.5%")]),
    PairedClaim("GRPO improves on its SFT start",
                [_p("sound", "tts_agfv_sft", "grpo", 1, "MMAU sound 61.6% → 66.1%"),
                 _p("music_like", "tts_agfv_sft", "grpo", 1, "MUSIC-AVQA 58.2% → 59.5%")]),
    PairedClaim("SFT on distilled labels maintains zero-shot performance on unseen sounds",
                [_p("sound", "direct", "sft_label", 0, "MMAU sound 64.3% → 64.3%")]),
    PairedClaim("SFT on distilled labels improves MUSIC-AVQA",
                [_p("music_like", "direct", "sft_label", 1, "MUSIC-AVQA 55.6% → 58.8%")]),
    PairedClaim("GRPO on distilled labels does worse than SFT on them",
                [_p("sound", "sft_label", "grpo_label", -1, "MMAU sound 64.3% → 62.5%"),
                 _p("music_like", "sft_label", "grpo_label", -1, "MUSIC-AVQA 58.8% → 58.8%")]),
]

# Tested on the student's reasoning, not its answers: on the questions where both models' reasoning
# says some source is sounding, the share where every source it says is sounding can be heard.
GROUNDING = PairedClaim(
    "AGFV keeps the distilled student's reasoning true to the audio (§3: the pipeline transfers vision "
    "reasoning \"while preserving audio grounding\")",
    [_p(bench, "sft_cot", "agfv_sft", 1, "not quantified") for bench in ("in_domain", "sound", "music_like")])


def verdict(difference: float | None, p_value: float | None, expected: int = 1) -> str:
    """holds / contradicted / not shown for a difference the paper says has the sign of `expected`
    (0: the paper says nothing is lost, which holds unless the loss is significant)."""
    significant = difference is not None and p_value is not None and p_value < SIGNIFICANCE and difference != 0
    if expected == 0:
        return "contradicted" if significant and difference < 0 else "holds (no significant loss)"
    if not significant:
        return NOT_SHOWN
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


def _change(test: dict) -> str:
    n = test["count"]
    first, second = round(test["first_accuracy"] * n), round(test["second_accuracy"] * n)
    seeds = test.get("seed_differences")
    spread = (f"; per seed {', '.join('—' if d is None else f'{100 * d:+.1f}' for d in seeds)} pts"
              if seeds and len(seeds) > 1 else "")
    return (f"{share(first, n)} → {share(second, n)}, {100 * test['difference']:+.1f} pts, "
            f"{p_is(test['p_value'])} (n = {n}{spread})")


def build_claims(marks: dict[tuple[str, str], dict], roles: dict[str, str], benchmarks: dict[str, str | None],
                 verify: dict | None = None, parsed: dict | None = None, answers: dict | None = None,
                 grounded: dict | None = None, thinking: dict | None = None) -> list[Claim]:
    """The claims table. `marks[(benchmark, model)]` maps question id → correct; `roles` maps a role
    of ROLES to a model name; `benchmarks` a role of BENCHMARK_ROLES to a benchmark name; `verify`
    is the verify stage's manifest (for the corpus's precision); `parsed[(benchmark, model)]` maps
    question id → whether the answer was parsable (for the format-limited rule); `answers[(benchmark,
    model)]` is its `scoring.one_answer` share (for the rote-answer rule); `grounded[(benchmark,
    model)]` maps question id → whether every source its reasoning says is sounding can be heard
    (questions whose reasoning says none is left out), and `thinking[(benchmark, model)]` is its
    `scoring.one_thinking` share (for the rote-reasoning rule), for the grounding claim."""
    unknown = sorted(set(benchmarks) - set(BENCHMARK_ROLES))
    if unknown:
        raise ValueError(f"unknown benchmark role {unknown[0]!r} (roles: {', '.join(BENCHMARK_ROLES)})")
    run = _Measured(marks, roles, benchmarks, verify, parsed or {}, answers or {})
    found = [c for c in (_paired_claim(run, claim) for claim in PAIRED_CLAIMS) if c]
    # the claim on reasoning: its marks are the grounding ones, its rote shares the reasoning's
    reasoning = _Measured(grounded or {}, roles, benchmarks, None, {}, thinking or {})
    grounding = _paired_claim(reasoning, GROUNDING, rote=ONE_THINKING_VERDICT)
    return (found + ([grounding] if grounding else []) + _corpus_precision(run) + _test_time_scaling(run)
            + _teacher_errors(run))


@dataclass
class _Measured:
    """What the claims are measured on: per-question marks, the roles' models, the benchmarks."""

    marks: dict[tuple[str, str], dict]
    roles: dict[str, str]
    benchmarks: dict[str, str | None]
    verify: dict | None
    parsed: dict[tuple[str, str], dict]
    answers: dict[tuple[str, str], float | None]

    def paired(self, bench_role: str, first: str, second: str) -> dict | None:
        """The paired test of two roles' models on the benchmark playing `bench_role`, with
        `parsable_test` (the same test on the questions both answered parsably, when both have
        parsability marks) and `seed_differences` (one per seed, in a pooled report)."""
        bench = self.benchmarks.get(bench_role)
        a, b = self.marks.get((bench, self.roles.get(first))), self.marks.get((bench, self.roles.get(second)))
        if not (bench and a and b):
            return None
        test = paired_test(a, b)
        test["one_answer"] = any((self.answers.get((bench, self.roles[role])) or 0) >= ONE_ANSWER
                                 for role in (first, second))
        pa, pb = self.parsed.get((bench, self.roles[first])), self.parsed.get((bench, self.roles[second]))
        if pa and pb:
            both = {q for q in pa if pa[q] and pb.get(q)}
            test["parsable_test"] = paired_test({q: v for q, v in a.items() if q in both},
                                                {q: v for q, v in b.items() if q in both})
        seeds = sorted({q.split(SEED_MARK)[0] for q in {**a, **b} if SEED_MARK in q})
        per_seed = [paired_test({q: v for q, v in a.items() if q.startswith(s + SEED_MARK)},
                                {q: v for q, v in b.items() if q.startswith(s + SEED_MARK)}) for s in seeds]
        if seeds:  # None: the two share no question in that seed (reasoning that says nothing sounds)
            test["seed_differences"] = [(t["difference"] or 0.0) if t["count"] else None for t in per_seed]
        return test


def judged(test: dict, expected: int = 1, rote: str = ONE_ANSWER_VERDICT) -> str:
    """The verdict of a paired test, with the rote rule (a model answering by rote makes no finding;
    `rote` names it: answers, or reasoning for the grounding claim), the format-limited rule (a
    significant difference that is not significant the same way on the questions both models
    answered parsably was decided by unparsable answers) and the seeds rule (every seed's difference
    the same way)."""
    if test.get("one_answer"):
        return rote
    found = verdict(test["difference"], test["p_value"], expected)
    inner = test.get("parsable_test")
    if found in ("holds", "contradicted") and inner is not None \
            and verdict(inner["difference"], inner["p_value"], expected) != found:
        return FORMAT_LIMITED
    seeds = [d for d in test.get("seed_differences") or [] if d is not None]
    if found in ("holds", "contradicted") and len(seeds) > 1 \
            and not all(d * test["difference"] > 0 for d in seeds):
        return SEEDS_DISAGREE
    return found


def combined(parts: list[tuple[str, str]]) -> str:
    """One verdict from the verdicts of a claim's parts, (benchmark, verdict) each."""
    verdicts = [v for _, v in parts]
    for strongest in (FORMAT_LIMITED, ONE_ANSWER_VERDICT, ONE_THINKING_VERDICT, "contradicted"):
        if strongest in verdicts:
            return strongest
    if all(v.startswith("holds") for v in verdicts):
        return verdicts[0]
    held = [bench for bench, v in parts if v.startswith("holds")]
    if not held:
        return SEEDS_DISAGREE if SEEDS_DISAGREE in verdicts else NOT_SHOWN
    return "partly shown: holds on " + ", ".join(held)


def _paired_claim(run: _Measured, claim: PairedClaim, rote: str = ONE_ANSWER_VERDICT) -> Claim | None:
    tested = [(part, test) for part in claim.parts
              if (test := run.paired(part.bench, part.first, part.second)) is not None and test["count"]]
    if not tested:
        return None
    parts = [(run.benchmarks[part.bench], judged(test, part.expected, rote)) for part, test in tested]
    ours = "; ".join(f"{run.benchmarks[part.bench]}: {_change(test)}" for part, test in tested)
    return Claim(claim.claim, "; ".join(dict.fromkeys(part.paper for part, _ in tested)), ours, combined(parts))


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


def _test_time_scaling(run: _Measured) -> list[Claim]:
    """Mixed effects: significant on one benchmark at least, and the two differences of opposite sign."""
    benches = ("sound", "music_like")
    tests = [run.paired(b, "agfv_sft", "tts_agfv_sft") for b in benches]
    if None in tests:
        return []
    significant = [t for t in tests if t["p_value"] < SIGNIFICANCE]
    signs = {t["difference"] > 0 for t in tests if t["difference"]}
    mixed = ("holds" if len(signs) == 2 and significant else
             "contradicted" if len(significant) == 2 and len(signs) == 1 else NOT_SHOWN)
    return [Claim("Test-time scaling has mixed effects (helps one benchmark, hurts the other)",
                  "MMAU sound 63.1% → 61.6%; MUSIC-AVQA 56.5% → 58.2%",
                  "; ".join(f"{run.benchmarks[b]}: {_change(t)}" for b, t in zip(benches, tests)), mixed)]


def _teacher_errors(run: _Measured) -> list[Claim]:
    """The teacher in-domain against on the acoustic benchmark (different questions: Fisher's test),
    format-limited when the verdict does not stand on the questions it answered parsably."""
    teacher = run.roles.get("teacher")
    benches = run.benchmarks.get("in_domain"), run.benchmarks.get("acoustic")
    seen, heard = (run.marks.get((bench, teacher)) for bench in benches)
    if not (seen and heard):
        return []
    first, second = (sum(seen.values()), len(seen)), (sum(heard.values()), len(heard))
    difference, p = fisher(first, second)
    found = verdict(difference, p, -1)
    read = [run.parsed.get((bench, teacher)) for bench in benches]
    if found in ("holds", "contradicted") and all(read):
        kept = [[v for q, v in marks.items() if parsed.get(q)] for marks, parsed in zip((seen, heard), read)]
        if verdict(*fisher(*((sum(k), len(k)) for k in kept)), -1) != found:
            found = FORMAT_LIMITED
    return [Claim("The teacher's errors concentrate where vision has no evidence",
                  "§4.2: LVLMs miss tempo, pitch, timbre and speech, which lack visual correlates",
                  f"teacher accuracy {benches[0]} {share(*first)}, {benches[1]} "
                  f"{share(*second)}, {p_is(p)} (Fisher)", found)]
