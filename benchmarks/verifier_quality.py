"""How well each checker catches hallucinated traces, on the synthetic world where the truth is known.

    python benchmarks/verifier_quality.py [--clips 800] [--seed 0] [--work DIR]

Builds a synthetic world (a quarter of the clips held out as `val`), prepares its audio, builds the
tiny models, and writes one teacher-like trace per clip: `oracle.visual_reasoning` of the clip's
facts wrapped as <think>…</think><answer>…</answer>, answering the clip's "which object is making
a sound" question with an option the reasoning says is sounding. A watcher takes every moving
glyph to sound, so a trace hallucinates exactly where a source mimes (moves without sounding) and
is truthful elsewhere. Then the verify stage runs on the val clips' traces with each checker:

  trained  the lightweight verifier, calibrated on the train clips' traces with ground-truth labels
           (accept = `not oracle.hallucinated`). Its audio encoder is the tiny student's audio tower,
           whose weights are untrained: random features of the Whisper log-mel input.
  local    the UNTRAINED tiny Qwen2-Audio student's P(yes) at threshold 0.5: no knowledge of
           anything, so expect chance — it measures the plumbing, not a checker.
  api      the api checker against a loopback server that answers from the clip's facts: an ORACLE
           stand-in. It measures the request, the strict parsing and the bookkeeping, not a model.

and, for the trained verifier's design, a baseline that is not a checker: logistic regression on
the same two embeddings side by side (standardized audio vector, MiniLM text vector), trained on
all the calibration traces (the verifier trains on the 75% it does not hold out).

Prints, per checker, TP/FP/FN/TN and precision/recall/F1 at rejecting the hallucinated traces, as
the verify stage's manifest records them (a true positive is a rejected hallucinated trace).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.http_server

from sightsound.datasets.synth import oracle, world
from sightsound.models import ModelConfig, tiny  # noqa: E402
from sightsound.records import Sample  # noqa: E402
from sightsound.store import read_jsonl, to_json  # noqa: E402
from sightsound.manifest import read_manifest  # noqa: E402
from sightsound.stages import prepare, teach, verify  # noqa: E402
from sightsound.checking import verifier  # noqa: E402
from sightsound.scoring import rejection_metrics  # noqa: E402
from tests.http_server import ChatServer, Reply, completion  # noqa: E402


def traced_run(prepared: Path, out: Path) -> list[Sample]:
    """A run directory holding one visual-reasoning trace for the first question of each clip."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(prepared / "samples.jsonl", out / "samples.jsonl")
    chosen, seen = [], set()
    for sample in read_jsonl(prepared / "samples.jsonl", Sample):
        if sample.audio not in seen:
            seen.add(sample.audio)
            chosen.append(sample)
    traces, votes = [], []
    for sample in chosen:
        reasoning = oracle.visual_reasoning(sample.meta["facts"]["sources"])
        claimed = oracle.claimed_sounds(reasoning)
        pick = next((i for i, option in enumerate(sample.options) if option in claimed), 0)
        trace = teach.make_trace(sample, 0, f"<think>{reasoning}</think><answer>{'ABCD'[pick]}</answer>")
        traces.append(trace)
        votes.append(teach.vote(sample, [trace]))
    for name, rows in (("traces", traces), ("consensus", votes)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(to_json(r)) + "\n" for r in rows))
    return chosen


def labelled_traces(run_dir: Path) -> list[dict]:
    """Each trace of a run with its clip and its ground-truth label (accept = not hallucinated)."""
    samples = {s.id: s for s in read_jsonl(run_dir / "samples.jsonl", Sample)}
    rows = []
    for trace in read_jsonl(run_dir / "traces.jsonl"):
        sample = samples[trace["sample_id"]]
        rows.append({"audio": sample.audio, "text": trace["text"],
                     "label": not oracle.hallucinated(trace["text"], sample.meta["facts"])})
    return rows


def linear_baseline(calibration: list[dict], test: list[dict], checkpoint: Path) -> dict:
    """Logistic regression on [standardized audio embedding, text embedding]: no interaction term."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    encoder = verifier.AudioEncoder(checkpoint)
    audio = {name: encoder([r["audio"] for r in rows]) for name, rows in (("cal", calibration), ("test", test))}
    scaler = StandardScaler().fit(audio["cal"])
    features = {name: np.concatenate([scaler.transform(audio[name]), verifier.embed_texts([r["text"] for r in rows])], 1)
                for name, rows in (("cal", calibration), ("test", test))}
    model = LogisticRegression(class_weight="balanced", max_iter=5000).fit(features["cal"], [r["label"] for r in calibration])
    accept = model.predict(features["test"])
    metrics = rejection_metrics([not r["label"] for r in test], [not a for a in accept])
    return {**metrics, "seconds": round(time.perf_counter() - start, 1)}


def oracle(samples: list[Sample]):
    """A server rule that says yes exactly when the trace claims no sound the clip lacks."""
    facts = {base64.b64encode(Path(s.audio).read_bytes()).decode(): s.meta["facts"] for s in samples}

    def rule(body, headers):
        parts = body["messages"][0]["content"]
        audio = next(p["input_audio"]["data"] for p in parts if p["type"] == "input_audio")
        text = next(p["text"] for p in parts if p["type"] == "text")
        return Reply(body=completion(["No, a claimed sound is not in the audio." if oracle.hallucinated(text, facts[audio])
                                      else "Yes."]))

    return rule


def run_checker(name: str, val_run: Path, work: Path, **settings) -> dict:
    run_dir = work / f"val-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(val_run, run_dir)
    start = time.perf_counter()
    verify.main(verify.VerifyConfig(out=str(run_dir), checker=name, progress=False, **settings))
    manifest = read_manifest(run_dir, "verify")
    return {**manifest["quality"], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="verifier-quality-"))
    try:
        world.write_world(world.SynthConfig(out=str(work / "world"), clips=args.clips, seed=args.seed, progress=False))
        runs = {}
        for split in ("train", "val"):
            prepare.main(prepare.PrepareConfig(dataset="synth", root=str(work / "world"), split=split,
                                               out=str(work / f"prepared-{split}"), num_frames=0, progress=False))
            runs[split] = work / f"run-{split}"
            traced_run(work / f"prepared-{split}", runs[split])
        models = tiny.build_all(work / "tiny", seed=args.seed)

        # Calibration: the train clips' traces, labelled by the ground truth.
        calibration_rows = labelled_traces(runs["train"])
        (work / "calibration.jsonl").write_text("".join(json.dumps(r) + "\n" for r in calibration_rows))
        info = verifier.train(verifier.TrainConfig(calibration=str(work / "calibration.jsonl"),
                                                   out=str(work / "verifier"), audio_encoder=str(models["student"]),
                                                   seed=args.seed))

        results = {"trained": run_checker("trained", runs["val"], work, verifier=str(work / "verifier")),
                   "local": run_checker("local", runs["val"], work,
                                        model=ModelConfig(model=str(models["student"]), batch_size=16))}
        val_samples = list(read_jsonl(runs["val"] / "samples.jsonl", Sample))
        with ChatServer() as server:
            server.rule = oracle(val_samples)
            results["api (oracle server)"] = run_checker(
                "api", runs["val"], work, model=ModelConfig(backend="openai", model="oracle", base_url=server.url,
                                                            api_key_env=None, max_concurrency=8))
        results["baseline: linear concat"] = linear_baseline(calibration_rows, labelled_traces(runs["val"]),
                                                             models["student"])

        calibration = info["calibration"]
        first = next(iter(results.values()))
        print(f"\n{args.clips} clips (seed {args.seed}); calibration: {calibration['traces']} train-clip traces "
              f"({calibration['traces'] - calibration['accepted']} hallucinated), of which {calibration['held_out']} "
              f"held out; test: {first['traces']} val-clip traces, {first['hallucinated']} hallucinated "
              f"(chance precision {first['hallucinated'] / first['traces']:.3f})")
        held = info["held_out_rejection"]
        print(f"trained verifier on its held-out calibration split: precision {held['precision']} "
              f"recall {held['recall']} F1 {held['f1']}")
        print(f"{'checker':24} {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4}  {'precision':>9} {'recall':>7} {'F1':>6} {'s':>6}")
        for name, q in results.items():
            print(f"{name:24} {q['tp']:4d} {q['fp']:4d} {q['fn']:4d} {q['tn']:4d}  {_fmt(q['precision']):>9} "
                  f"{_fmt(q['recall']):>7} {_fmt(q['f1']):>6} {q['seconds']:6.1f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
