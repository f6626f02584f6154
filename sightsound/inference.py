"""Ask a model each question once, greedily, with one of the paper's inference methods, and judge
the answers: what evaluation, validation during training and the demo's bootstrap all do.

    predictions, unusable, failures = answer_all(backend, samples, Asking(method="zero_shot_cot"))

Each answer is judged by the benchmark's scorer (`Asking.scorer`, or the one its `Benchmark`
names) with the shared answer extractor; an answer that names no option then gets the closest
option by content similarity (the paper's fallback), in one embedding call for the whole chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from sightsound import answers, media, prompts, scoring
from sightsound.datasets import BENCHMARKS
from sightsound.models import Request, Sampling
from sightsound.records import Prediction, Sample


@dataclass
class Asking:
    """How each question is asked and judged."""

    method: str = "direct"  # direct | zero_shot_cot | zero_shot_audio_cot | test_time_cot_distill
    answer: str = "letter"  # letter | text: how the prompt asks for a multiple-choice answer
    inputs: str = "audio"  # audio | video | both (zero_shot_audio_cot always uses video)
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy
    num_frames: int = 8  # frames shown per clip (video inputs)
    frame_size: int | None = 448  # longest side in pixels
    scorer: str | None = None  # default | mmau | mmau-pro (the benchmarks' official rules); null: the benchmark's own
    similarity_threshold: float | None = answers.SIMILARITY_THRESHOLD  # the extractor's fallback; null: off


def scorer_for(ask: Asking, dataset: str | None) -> str:
    """The scorer a sample of `dataset` is judged by: the one asked for, else its benchmark's."""
    if ask.scorer is not None:
        return ask.scorer
    return BENCHMARKS[dataset].scorer if dataset in BENCHMARKS else "default"


def answer_all(backend, samples: list[Sample], ask: Asking, traces: dict[str, str] | None = None
               ) -> tuple[list[Prediction], dict[str, str], int]:
    """Ask each sample once: (predictions, unusable sample → why, backend failures). `traces` maps
    a sample to the teacher's reasoning, for test_time_cot_distill."""
    requests, unusable = {}, {}
    for sample in samples:
        try:
            requests[sample.id] = Request(sample.id, turn(sample, ask, traces or {}))
        except (media.MediaError, ValueError) as exc:  # cannot be asked: reported, not scored
            unusable[sample.id] = str(exc)
    by_id = {s.id: s for s in samples}
    sampling = Sampling(n=1, temperature=ask.temperature, max_new_tokens=ask.max_new_tokens, seed=0)
    predictions, failures = [], 0
    for generation in backend.generate(list(requests.values()), sampling):
        if generation.error:  # left for the next run
            failures += 1
            continue
        prompt = requests[generation.request_id].messages[0]["content"][-1]["text"]
        predictions.append(predict(by_id[generation.request_id], prompt, generation.texts[0], ask))
    if ask.similarity_threshold is not None:
        _closest_for_unmatched(predictions, ask)
    return predictions, unusable, failures


def inputs_of(ask: Asking) -> str:
    """What the model is given: zero_shot_audio_cot is the teacher's method, on the silent video."""
    return "video" if ask.method == "zero_shot_audio_cot" else ask.inputs


def turn(sample: Sample, ask: Asking, traces: dict[str, str]) -> list[dict]:
    """The one user turn a method asks: media parts, then the prompt text."""
    inputs = inputs_of(ask)
    frames = trace = None
    if inputs in ("video", "both"):
        if not sample.video:
            raise media.MediaError(f"sample {sample.id}: no video", "media-missing")
        frames = media.decode(sample.video, num_frames=ask.num_frames, frame_size=ask.frame_size, audio=False).frames
    if ask.method == "test_time_cot_distill":
        trace = traces.get(sample.id)
        if trace is None:
            raise ValueError(f"sample {sample.id}: no teacher trace")
    return prompts.student_turn(sample, ask.method, ask.answer, hears=inputs in ("audio", "both"), frames=frames,
                                trace=trace)


def predict(sample: Sample, prompt: str, response: str, ask: Asking) -> Prediction:
    row = {"response": response, "options": sample.options,
           "answer": sample.answer if sample.options else sample.answer_text}
    # The similarity fallback runs afterwards, batched over all unmatched answers (_closest_for_unmatched).
    pred, correct = scoring.judge(row, scorer_for(ask, sample.dataset), similarity_threshold=None)
    groups = {k: sample.meta[k] for k in ("difficulty", "modality") if k in sample.meta}
    return Prediction(id=sample.id, prompt=prompt, response=response, options=sample.options,
                      answer=row["answer"], pred_index=pred, correct=correct, category=sample.category,
                      meta={"dataset": sample.dataset, **groups})


def _closest_for_unmatched(predictions: list[Prediction], ask: Asking) -> None:
    """The paper's fallback (closest option by content similarity) for every answer that named no
    option, in one embedding call rather than one per answer."""
    unmatched = [p for p in predictions if p.options and p.pred_index is None]
    if not unmatched:
        return
    closest = answers.closest_options([p.response for p in unmatched], [p.options for p in unmatched],
                                      ask.similarity_threshold)
    for prediction, pred in zip(unmatched, closest):
        prediction.pred_index = pred
        if pred is not None and prediction.correct is not None and scorer_for(ask, prediction.meta["dataset"]) == "default":
            # the mmau rule judges the text, not the index
            expected = prediction.options[answers.option_index(prediction.answer, prediction.options)]
            prediction.correct = answers.same_option(prediction.options[pred], expected)
