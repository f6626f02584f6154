"""The checkers of the verify stage (AGFV, paper §3.2): each hears a clip and says yes or no to a
teacher trace's reasoning. docs/reference.md ("sightsound/stages/verify.py") describes what each
decides by; to add one, write a class taking the verify config and add it to `CHECKERS`.

    checker = CHECKERS["local"](cfg)              # cfg: the verify stage's config
    results = checker([(sample, trace), ...])     # per pair, in order: a Verdict, or why there is none
"""

from __future__ import annotations

import re

from sightsound import answers, prompts
from sightsound.models import Request, Sampling, load_backend
from sightsound.records import UNPARSEABLE, Sample, Trace, Verdict


def checker_messages(sample: Sample, trace: Trace) -> list[dict]:
    """The clip's audio and the yes/no question about the trace's reasoning, as one user turn."""
    return prompts.checker_turn(sample.audio, answers.think_text(trace.text))


def _requests(items) -> list[Request]:
    return [Request(trace.id, checker_messages(sample, trace)) for sample, trace in items]


class LocalChecker:
    """Accept when P(yes) at the reply's first token reaches the threshold."""

    def __init__(self, cfg):
        self.backend = load_backend(cfg.model)
        self.threshold = cfg.threshold
        self.model = f"{cfg.model.model!r} at {cfg.model.base_url}" if cfg.model.backend == "openai" else cfg.model.model

    def __call__(self, items) -> list:
        scores = self.backend.yes_probability(_requests(items))
        if all(p is None for p in scores) and getattr(self.backend, "replies_without_logprobs", 0):
            # a served model without log-probs would fail the same way on every rerun
            raise ValueError(f"checker local: {self.model} answered without log-probs, which this checker decides "
                             "by; serve the model with log-probs (vLLM gives them) or use checker: api")
        results = []
        for (sample, trace), p_yes in zip(items, scores, strict=True):
            if p_yes is None:  # a served model that gave no log-probs for this request
                results.append("no yes/no probabilities came back")
                continue
            results.append(Verdict(sample.id, trace.index, p_yes >= self.threshold, float(p_yes),
                                   f"p_yes={p_yes:.4f}", "local"))
        return results


_REPLY = re.compile(r"""[\s"'*`(\[]*(yes|no)[\s"'*`)\]]*(?:[.,!;:\n].*)?""", re.IGNORECASE | re.DOTALL)


def parse_reply(text: str) -> str | None:
    """'yes' or 'no' when the reply follows the strict grammar of docs/reference.md ("sightsound/stages/verify.py"), else None."""
    match = _REPLY.fullmatch(text or "")
    return match.group(1).lower() if match else None


class ApiChecker:
    """Greedy reply of an audio LM API, parsed strictly; unparseable replies are rejections."""

    def __init__(self, cfg):
        self.backend = load_backend(cfg.model)
        self.sampling = Sampling(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
        self.logprobs = cfg.api_logprobs

    def __call__(self, items) -> list:
        requests = _requests(items)
        generations = {g.request_id: g for g in self.backend.generate(requests, self.sampling)}
        scores = self.backend.yes_probability(requests) if self.logprobs else [None] * len(items)
        results = []
        for (sample, trace), score in zip(items, scores, strict=True):
            generation = generations[trace.id]
            if generation.error or not generation.texts:
                results.append(generation.error or "no reply came back")
                continue
            reply = generation.texts[0]
            word = parse_reply(reply)
            results.append(Verdict(sample.id, trace.index, word == "yes", score,
                                   reply if word else UNPARSEABLE + reply, "api"))
        return results


class TrainedChecker:
    """The lightweight audio–text verifier: accept when its P(accept) reaches the threshold."""

    def __init__(self, cfg):
        from sightsound.checking.verifier import Verifier

        self.verifier = Verifier.load(cfg.verifier, device=cfg.device)
        self.threshold = cfg.threshold

    def __call__(self, items) -> list:
        scores = self.verifier.predict([s.audio for s, _ in items], [t.text for _, t in items])
        return [Verdict(sample.id, trace.index, bool(p >= self.threshold), float(p), f"p_accept={p:.4f}", "trained")
                for (sample, trace), p in zip(items, scores, strict=True)]


class NoChecker:
    """Accept every trace unheard: the paper's "SFT" ablation row, distilled CoT without AGFV."""

    def __init__(self, cfg):
        pass

    def __call__(self, items) -> list:
        return [Verdict(sample.id, trace.index, True, 1.0, "unchecked", "none") for sample, trace in items]


CHECKERS = {"local": LocalChecker, "api": ApiChecker, "trained": TrainedChecker, "none": NoChecker}
