"""Fault injection: kill -9 during every stage, and a server that fails 30% of requests.

    python benchmarks/faults.py                 # about 5 minutes on 2 cores
    python benchmarks/faults.py --trials 10 --fault-rate 0.3

Builds a small synthetic world and the tiny models in a temporary folder, then:

1. Runs teach, verify, sft, grpo and eval once each, uninterrupted (each stage as its own
   `python -m sightsound STAGE` process), as the reference.
2. Runs `--trials` trials spread over those stages: the stage is started afresh, SIGKILLed once its
   output holds k records (or, for training, once checkpoint k is written), then run again to the
   end. A trial passes when the rerun's records equal the reference's — none lost, none
   duplicated, none different — and, for training, the final weights are bit-identical.
3. Two runs at once: each stage started twice on one fresh run directory at the same moment.
   Passes when one of them is refused ("already running") and the other's records equal the
   reference's, none duplicated.
4. Damaged outputs: a finished copy of each stage's reference with its output truncated to half
   or emptied, then the stage run again. Passes when the rerun repairs it to the reference.
5. Runs teach against a loopback server that fails `--fault-rate` of requests (429 with
   Retry-After, 500, 503, malformed and truncated bodies), rerunning until the stage finishes, and
   compares its records with a fault-free run against the same server.

Prints, per stage and in total: trials passed, records lost, records duplicated; and for the HTTP
run: faults injected, requests sent beyond the fault-free run, and so requests re-sent per failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sightsound.datasets.synth import oracle  # noqa: E402
from sightsound.datasets.synth.world import SynthConfig  # noqa: E402
from sightsound.manifest import read_manifest  # noqa: E402
from sightsound.models import ModelConfig, tiny  # noqa: E402
from sightsound.records import Sample  # noqa: E402
from sightsound.stages import prepare, synth, teach  # noqa: E402
from sightsound.store import read_jsonl, record_id, to_json  # noqa: E402
from tests.http_server import ChatServer, Reply  # noqa: E402

# stage → (its output whose records are compared, how a trial knows when to kill: a file's lines or a checkpoint)
OUTPUTS = {"teach": "consensus.jsonl", "verify": "verdicts.jsonl", "eval": "eval/predictions.jsonl",
           "sft": "sft/final/model.safetensors", "grpo": "grpo/final/model.safetensors"}


def settings(models: dict, run: Path) -> dict:
    """Each stage's config: tiny, quick, and saving a checkpoint at every step."""
    return {
        "teach": {"out": str(run), "model": {"model": str(models["teacher"])}, "n": 2, "temperature": 1.0,
                  "max_new_tokens": 16, "num_frames": 4, "frame_size": 56, "chunk": 2, "progress": False},
        "verify": {"out": str(run), "checker": "local", "model": {"model": str(models["student"])}, "chunk": 2,
                   "threshold": 0.0, "progress": False},  # every trace accepted: SFT needs a corpus
        "sft": {"out": str(run), "model": str(models["student"]), "target": "cot", "lora": {"enabled": False},
                "lr": 1e-4, "steps": 5, "batch_size": 2, "save_every": 1, "log_every": 1, "progress": False},
        "grpo": {"out": str(run), "model": str(run / "sft" / "final"), "steps": 4, "group_size": 2,
                 "prompts_per_step": 2, "max_completion_tokens": 8, "lr": 1e-4, "save_every": 1,
                 "progress": False},
        "eval": {"samples": str(run / "samples.jsonl"), "out": str(run / "eval"), "model": {"model": str(models["student"])},
                 "method": "zero_shot_cot", "max_new_tokens": 16, "chunk": 2, "progress": False},
    }


def run_stage(stage: str, cfg: dict, folder: Path) -> subprocess.Popen:
    path = folder / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sightsound", stage, "--config", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed: {err[-2000:]}")


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> bool:
    """SIGKILL `proc` once `ready()`; whether it was still running then."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def lines_at_least(path: Path, k: int):
    return lambda: path.exists() and path.read_text().count("\n") >= k


def checkpoint_written(folder: Path, k: int):
    return lambda: (folder / f"checkpoint-{k}" / "trainer_state.json").exists()


def records(path: Path) -> list[str]:
    """Each record as sorted JSON, less `server` (which of the servers answered: the fault-free and the
    faulty run each have their own loopback server, on its own port)."""
    return [json.dumps({k: v for k, v in r.items() if k != "server"}, sort_keys=True)
            for r in read_jsonl(path)] if path.exists() else []


def ids(path: Path) -> list[str]:
    return [record_id(r) for r in read_jsonl(path)] if path.exists() else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def compare(stage: str, clean: Path, killed: Path) -> dict:
    """Records lost, duplicated or different in `killed` against `clean`; for training, the weights."""
    if stage in ("sft", "grpo"):
        same = sha256(clean / OUTPUTS[stage]) == sha256(killed / OUTPUTS[stage])
        steps = [r["step"] for r in read_jsonl(killed / stage / "metrics.jsonl")]
        return {"lost": 0 if same else 1, "duplicated": len(steps) - len(set(steps)), "different": 0 if same else 1}
    a, b = set(records(clean / OUTPUTS[stage])), records(killed / OUTPUTS[stage])
    found = ids(killed / OUTPUTS[stage])
    return {"lost": len(a - set(b)), "duplicated": len(found) - len(set(found)), "different": len(set(b) - a)}


def build(work: Path, clips: int) -> tuple[dict, Path]:
    world = work / "world"
    synth.main(SynthConfig(out=str(world), clips=clips, seed=5, val_fraction=0.0, question_types=["Which", "Count"],
                           progress=False))
    base = work / "base"
    prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), out=str(base), num_frames=4, frame_size=56,
                                       progress=False))
    models = tiny.build_all(work / "tiny", seed=0)
    # verify's and SFT's inputs: two traces per sample as a watcher writes them (unanimous unless counting)
    samples = list(read_jsonl(base / "samples.jsonl", Sample))
    traces, votes = [], []
    for s in samples:
        text = oracle.visual_reasoning(s.meta["facts"]["sources"])
        letters = ["A", "B"] if s.category == "Count" else ["ABCD"[s.answer]] * 2
        pair = [teach.make_trace(s, i, f"<think>{text}</think><answer>{letter}</answer>") for i, letter in enumerate(letters)]
        traces += pair
        votes.append(teach.vote(s, pair))
    for name, rows in (("traces", traces), ("consensus", votes)):
        (base / f"{name}.jsonl").write_text("".join(json.dumps(to_json(r)) + "\n" for r in rows))
    return models, base


def stage_inputs(stage: str, base: Path, refs: dict, target: Path) -> None:
    """A fresh run directory holding what `stage` reads: the prepared samples and watcher traces, and
    for SFT and GRPO the reference run's verified corpus (and for GRPO its SFT model)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target)
    if stage in ("sft", "grpo"):
        for name in ("corpus.jsonl", "verdicts.jsonl"):
            shutil.copy(refs["verify"] / name, target / name)
    if stage == "grpo":
        shutil.copytree(refs["sft"] / "sft" / "final", target / "sft" / "final")


PLAN = ["teach", "verify", "sft", "grpo", "eval"]


def reference_runs(work: Path, models: dict, base: Path) -> dict:
    refs = {}
    print("reference runs:", end=" ", flush=True)
    for stage in PLAN:
        refs[stage] = work / f"reference-{stage}"
        stage_inputs(stage, base, refs, refs[stage])
        finish(run_stage(stage, settings(models, refs[stage])[stage], work))
        print(stage, end=" ", flush=True)
    print()
    return refs


def passed(outcome: dict) -> bool:
    return not any(outcome[key] for key in ("lost", "duplicated", "different"))


def concurrent_trials(work: Path, models: dict, base: Path, refs: dict) -> list[dict]:
    """Each stage started twice at once on one run directory."""
    results = []
    for stage in PLAN:
        run = work / f"twice-{stage}"
        stage_inputs(stage, base, refs, run)
        cfg = settings(models, run)[stage]
        procs = [run_stage(stage, cfg, work) for _ in range(2)]
        errors = [proc.communicate()[1] for proc in procs]
        refused = sum(proc.returncode == 1 and "already running" in err for proc, err in zip(procs, errors))
        finished = sum(proc.returncode == 0 for proc in procs)
        if not finished:  # the refused one's partner failed for another reason
            raise RuntimeError(f"{stage}: neither run finished: {errors}")
        outcome = {**compare(stage, refs[stage], run), "stage": stage, "refused": refused}
        outcome["passed"] = passed(outcome) and refused + finished == 2
        results.append(outcome)
        print(f"  {stage} twice at once: {refused} refused, {finished} finished; lost {outcome['lost']}, duplicated "
              f"{outcome['duplicated']}, different {outcome['different']}")
        shutil.rmtree(run)
    return results


def damaged_trials(work: Path, models: dict, refs: dict) -> list[dict]:
    """Each stage's finished output truncated to half, or emptied, then the stage run again."""
    results = []
    for stage in PLAN:
        for damage in ("truncated", "emptied"):
            run = work / f"damaged-{stage}"
            shutil.copytree(refs[stage], run)
            cfg = settings(models, run)[stage]
            output = run / OUTPUTS[stage]
            output.write_bytes(output.read_bytes()[: output.stat().st_size // 2] if damage == "truncated" else b"")
            finish(run_stage(stage, cfg, work))
            outcome = {**compare(stage, refs[stage], run), "stage": stage, "damage": damage}
            outcome["passed"] = passed(outcome)
            results.append(outcome)
            print(f"  {stage} output {damage}: lost {outcome['lost']}, duplicated {outcome['duplicated']}, "
                  f"different {outcome['different']}")
            shutil.rmtree(run)
    return results


def kill_trials(work: Path, models: dict, base: Path, refs: dict, trials: int) -> list[dict]:
    plan = PLAN
    per_stage = {stage: trials // len(plan) + (i < trials % len(plan)) for i, stage in enumerate(plan)}
    results = []
    for stage, count in per_stage.items():
        for k in range(1, count + 1):
            run = work / f"trial-{stage}-{k}"
            stage_inputs(stage, base, refs, run)
            cfg = settings(models, run)[stage]
            output = run / OUTPUTS[stage]
            ready = checkpoint_written(run / stage, k) if stage in ("sft", "grpo") else lines_at_least(output, k)
            killed = kill_when(run_stage(stage, cfg, work), ready)
            finish(run_stage(stage, cfg, work))
            outcome = compare(stage, refs[stage], run)
            outcome.update(stage=stage, k=k, killed=killed, passed=killed and passed(outcome))
            results.append(outcome)
            print(f"  {stage} kill at {k}: {'killed' if killed else 'finished before the kill'}, lost "
                  f"{outcome['lost']}, duplicated {outcome['duplicated']}, different {outcome['different']}")
            shutil.rmtree(run)
    return results


def faulty_server_run(work: Path, base: Path, rate: float, copies: int) -> dict:
    """teach over HTTP: against a server failing `rate` of requests, rerun until finished; and fault-free.
    The samples are repeated `copies` times (under new ids), for enough requests to fail."""
    many = work / "http-base"
    shutil.copytree(base, many)
    rows = list(read_jsonl(base / "samples.jsonl"))
    (many / "samples.jsonl").write_text("".join(json.dumps({**r, "id": f"{r['id']}-{j}"}) + "\n"
                                                for j in range(copies) for r in rows))
    base = many
    rng = random.Random(0)
    faults = {"count": 0}

    def faulty(body, headers):
        if rng.random() >= rate:
            return None
        faults["count"] += 1
        return rng.choice([Reply.error(429, retry_after="0"), Reply.error(500), Reply.error(503),
                           Reply.malformed(), Reply.truncated()])

    outcome = {}
    for name, rule in (("clean", None), ("faulty", faulty)):
        run = work / f"http-{name}"
        shutil.copytree(base, run)
        with ChatServer() as server:
            server.rule = rule
            cfg = teach.TeachConfig(out=str(run), model=ModelConfig(backend="openai", model="teacher",
                                                                    base_url=server.url, max_retries=2, timeout=5.0),
                                    n=3, num_frames=4, frame_size=56, chunk=4, progress=False)
            import sightsound.models.openai_http as http

            original = http.OpenAIBackend.__init__

            async def no_sleep(seconds):
                return None

            http.OpenAIBackend.__init__ = lambda self, c, **kw: original(self, c, **{"sleep": no_sleep, **kw})
            try:
                rounds = 0
                while read_manifest(run, "teach") is None and rounds < 20:
                    teach.main(cfg)
                    rounds += 1
            finally:
                http.OpenAIBackend.__init__ = original
            outcome[name] = {"requests": len(server.received), "rounds": rounds, "run": run}
    clean, faulty_run = outcome["clean"]["run"], outcome["faulty"]["run"]
    lost = duplicated = different = 0
    for name in ("traces.jsonl", "consensus.jsonl"):
        a, b = set(records(clean / name)), records(faulty_run / name)
        found = ids(faulty_run / name)
        lost += len(a - set(b))
        different += len(set(b) - a)
        duplicated += len(found) - len(set(found))
    extra = outcome["faulty"]["requests"] - outcome["clean"]["requests"]
    return {"samples": len(rows) * copies, "faults": faults["count"], "extra_requests": extra, "rounds": outcome["faulty"]["rounds"],
            "finished": read_manifest(faulty_run, "teach") is not None, "lost": lost, "duplicated": duplicated,
            "different": different, "resent_per_failure": round(extra / faults["count"], 3) if faults["count"] else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--copies", type=int, default=10, help="the HTTP run asks this many copies of each sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models, base = build(work, args.clips)
        refs = reference_runs(work, models, base)
        results = kill_trials(work, models, base, refs, args.trials)
        twice = concurrent_trials(work, models, base, refs)
        damaged = damaged_trials(work, models, refs)
        http = faulty_server_run(work, base, args.fault_rate, args.copies)
    print("\nkill -9 trials")
    for stage in dict.fromkeys(r["stage"] for r in results):
        rows = [r for r in results if r["stage"] == stage]
        print(f"  {stage:6s} {sum(r['passed'] for r in rows)}/{len(rows)} passed; lost {sum(r['lost'] for r in rows)}, "
              f"duplicated {sum(r['duplicated'] for r in rows)}, different {sum(r['different'] for r in rows)}")
    print(f"  total  {sum(r['passed'] for r in results)}/{len(results)} passed "
          f"({sum(not r['killed'] for r in results)} finished before their kill)")
    for name, rows in (("two runs at once", twice), ("damaged outputs", damaged)):
        print(f"{name}: {sum(r['passed'] for r in rows)}/{len(rows)} passed; lost {sum(r['lost'] for r in rows)}, "
              f"duplicated {sum(r['duplicated'] for r in rows)}, different {sum(r['different'] for r in rows)}")
    print(f"\nteach over HTTP, {http['samples']} samples, {args.fault_rate:.0%} of requests failing: "
          f"{http['faults']} faults injected, "
          f"finished {http['finished']} after {http['rounds']} runs; records lost {http['lost']}, duplicated "
          f"{http['duplicated']}, different {http['different']}; {http['extra_requests']} requests beyond the "
          f"fault-free run: {http['resent_per_failure']} re-sent per failure")


if __name__ == "__main__":
    main()
