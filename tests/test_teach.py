"""The teach stage on prepared synthetic clips with the tiny teacher."""

import json
import shutil
import subprocess
import sys

import pytest

from sightsound import prompts
from sightsound.models import ModelConfig
from sightsound.records import Sample, Trace
from sightsound.store import read_jsonl
from sightsound.manifest import read_manifest
from sightsound.stages import teach
from tests.conftest import kill_when_written


def config(run_dir, tiny_models, **kw) -> teach.TeachConfig:
    kw = {"n": 3, "max_new_tokens": 12, "num_frames": 4, "frame_size": 56, "chunk": 4, "progress": False, **kw}
    return teach.TeachConfig(out=str(run_dir), model=ModelConfig(model=str(tiny_models["teacher"]), batch_size=4), **kw)


def copy_prepared(prepared, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)
    return run_dir


def sample(options=("flute", "drum", "bell"), answer=1):
    return Sample(id="s", dataset="synth", split="train", question="Which?", options=list(options),
                  answer=answer, answer_text=options[answer] if options else "two", category="Which")


@pytest.mark.parametrize("preds, unanimous, label", [
    ([1, 1, 1], True, 1),
    ([1, 1, 0], False, None),
    ([1, None, 1], False, None),
    ([None, None, None], False, None),  # agreement on "no answer" is not a label
    ([2], True, 2),
])
def test_unanimity_is_the_papers_rule(preds, unanimous, label):
    traces = [Trace("s", i, "", p) for i, p in enumerate(preds)]
    row = teach.vote(sample(), traces)
    assert (row.unanimous, row.label) == (unanimous, label)
    assert row.votes == preds
    assert row.label_correct == (None if label is None else label == 1)


def test_open_ended_votes_compare_normalized_answers():
    s = sample(options=(), answer=None)
    s.options, s.answer, s.answer_text = [], None, "two"
    traces = [teach.make_trace(s, i, text) for i, text in
              enumerate(["<think>x</think><answer>2</answer>", "<answer>Two</answer>", "<answer>two.</answer>"])]
    row = teach.vote(s, traces)
    assert row.unanimous and row.label_correct is True


def test_make_trace_extracts_from_answer_tag():
    trace = teach.make_trace(sample(), 0, "<think>I see the bell pulse, not the drum</think><answer>B</answer>")
    assert (trace.pred_index, trace.answer) == (1, "B")


def test_teach_writes_traces_and_consensus(prepared, tiny_models, tmp_path, capsys):
    run_dir = copy_prepared(prepared, tmp_path)
    manifest = teach.main(config(run_dir, tiny_models))
    samples = list(read_jsonl(run_dir / "samples.jsonl", Sample))
    traces = list(read_jsonl(run_dir / "traces.jsonl", Trace))
    consensus = list(read_jsonl(run_dir / "consensus.jsonl"))
    assert len(traces) == 3 * len(samples) and len(consensus) == len(samples)
    assert {(t.sample_id, t.index) for t in traces} == {(s.id, i) for s in samples for i in range(3)}
    by_sample = {}
    for t in traces:
        by_sample.setdefault(t.sample_id, []).append(t.pred_index)
    for row in consensus:
        assert row["votes"] == by_sample[row["id"]]
        assert row["unanimous"] == (len(set(row["votes"])) == 1 and row["votes"][0] is not None)
    counts = manifest["counts"]
    assert counts["samples"] == len(samples) and counts["traces"] == len(traces)
    assert counts["unanimous"] == sum(r["unanimous"] for r in consensus)
    assert (run_dir / "config" / "teach.yaml").exists()
    assert teach.main(config(run_dir, tiny_models))["finished_at"] == manifest["finished_at"]
    assert "already done" in capsys.readouterr().out


def test_cached_frames_are_used_and_other_specs_decoded(prepared, tiny_models):
    s = next(read_jsonl(prepared / "samples.jsonl", Sample))
    cfg = config(prepared, tiny_models)
    assert teach.load_frames(s, cfg).shape == (4, 56, 56, 3)
    cfg.num_frames, cfg.frame_size = 2, 32
    assert teach.load_frames(s, cfg).shape == (2, 32, 32, 3)


RUNNER = """
import sys
from sightsound import prompts
from sightsound.models import ModelConfig
from sightsound.stages import teach
cfg = teach.TeachConfig(out=sys.argv[1], model=ModelConfig(model=sys.argv[2], batch_size=2), n=3,
                        max_new_tokens=24, num_frames=4, frame_size=56, chunk=2, progress=False)
teach.main(cfg)
"""


def test_killed_teach_resumes_to_the_same_records(prepared, tiny_models, tmp_path):
    script = tmp_path / "run_teach.py"
    script.write_text(RUNNER)
    clean, killed = copy_prepared(prepared, tmp_path / "clean"), copy_prepared(prepared, tmp_path / "killed")
    args = [str(tiny_models["teacher"])]
    subprocess.run([sys.executable, str(script), str(clean), *args], check=True, capture_output=True)

    proc = subprocess.Popen([sys.executable, str(script), str(killed), *args], stderr=subprocess.DEVNULL)
    kill_when_written(proc, killed / "consensus.jsonl", 3)
    assert read_manifest(killed, "teach") is None, "the run must be killed before it finishes"

    subprocess.run([sys.executable, str(script), str(killed), *args], check=True, capture_output=True)
    for name in ("traces.jsonl", "consensus.jsonl"):
        rows = lambda d: sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(d / name))
        assert rows(killed) == rows(clean), name
    assert read_manifest(killed, "teach")["counts"] == read_manifest(clean, "teach")["counts"]


def test_teach_through_the_http_backend_never_writes_the_key(prepared, tmp_path, monkeypatch):
    from tests.http_server import ChatServer, Reply, completion

    key = "sk-test-7f3a9c1e5b2d-never-on-disk"
    monkeypatch.setenv("SIGHTSOUND_TEST_KEY", key)
    run_dir = copy_prepared(prepared, tmp_path)
    samples = {s.id: s for s in read_jsonl(run_dir / "samples.jsonl", Sample)}
    by_prompt = {}  # the server knows a sample by its prompt; a few prompts repeat across clips
    for s in samples.values():
        by_prompt.setdefault(prompts.fill(prompts.TEACHER_PROMPT, s.question, s.options), []).append(s)
    with ChatServer() as server:
        def reply(body, headers):
            sample = by_prompt[body["messages"][0]["content"][-1]["text"]][0]
            letter = "ABCDEFGH"[sample.answer]
            if sample.category == "Count":  # disagree on counting questions: not unanimous
                return Reply(body=completion([f"<think>{i}</think><answer>{'ABCD'[i % 4]}</answer>"
                                              for i in range(body["n"])]))
            if sample.category == "Louder":  # always refused, with the key echoed back in the error
                return Reply.error(500, message=f"bad auth {headers.get('Authorization')}")
            if sample.category == "Order":  # an answer the server refuses once, then gives
                if not any(r.body and r.body["messages"] == body["messages"] for r in server.received[:-1]):
                    return Reply.error(500, message=f"echo {headers.get('Authorization')}")
            return Reply(body=completion([f"<think>heard it</think><answer>{letter}</answer>"] * body["n"]))

        server.rule = reply
        model = ModelConfig(backend="openai", model="teacher", base_url=server.url,
                            api_key_env="SIGHTSOUND_TEST_KEY", max_retries=2)
        cfg = teach.TeachConfig(out=str(run_dir), model=model, n=3, num_frames=4, frame_size=56, progress=False)
        import sightsound.models.openai_http as http

        monkeypatch.setattr(http.OpenAIBackend, "__init__", _fast_retries(http.OpenAIBackend.__init__))
        result = teach.main(cfg)
        first = server.received[0]
    assert first.headers.get("Authorization") == f"Bearer {key}"
    parts = first.body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
    assert "silent video" in parts[-1]["text"]
    rows = {r["id"]: r for r in read_jsonl(run_dir / "consensus.jsonl")}
    louder = {sid for sid, s in samples.items() if s.category == "Louder"}
    assert louder and set(rows) == set(samples) - louder  # failed requests are retried next run
    errors = list(read_jsonl(run_dir / "teach_errors.jsonl"))
    assert {e["sample_id"] for e in errors} == louder and all("status=500" in e["error"] for e in errors)
    assert result["counts"]["pending"] == len(louder) and read_manifest(run_dir, "teach") is None
    for sid, row in rows.items():
        assert row["unanimous"] == (samples[sid].category != "Count")
        same_prompt = by_prompt[prompts.fill(prompts.TEACHER_PROMPT, samples[sid].question, samples[sid].options)]
        if row["unanimous"] and len({s.answer for s in same_prompt}) == 1:
            assert row["label"] == samples[sid].answer and row["label_correct"] is True
    assert result["counts"]["unanimous"] == sum(s.category not in ("Count", "Louder") for s in samples.values())
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_teach_subcommand_exits_non_zero_when_it_did_not_finish(prepared, tmp_path, capsys):
    from sightsound.cli import main as cli
    from tests.http_server import ChatServer, Reply

    run_dir = copy_prepared(prepared, tmp_path)
    with ChatServer() as server:
        args = ["teach", "--out", str(run_dir), "model.backend=openai", f"model.base_url={server.url}",
                "model.model=teacher", "model.max_retries=0", "n=2", "num_frames=4", "frame_size=56", "progress=false"]
        server.rule = lambda body, headers: Reply.error(500)
        assert cli(args) != 0
        assert "teach did not finish" in capsys.readouterr().err and read_manifest(run_dir, "teach") is None
        assert len(list(read_jsonl(run_dir / "teach_errors.jsonl"))) == len(list(read_jsonl(run_dir / "samples.jsonl")))
        server.rule = None  # the server recovers: the rerun finishes what failed
        assert cli(args) == 0 and read_manifest(run_dir, "teach") is not None
        assert list(read_jsonl(run_dir / "teach_errors.jsonl")) == []  # resolved errors are not kept


def test_a_rerun_asks_a_server_only_for_the_samples_that_failed(prepared, tmp_path):
    from tests.http_server import ChatServer

    run_dir = copy_prepared(prepared, tmp_path)
    total = len(list(read_jsonl(run_dir / "samples.jsonl")))
    with ChatServer() as server:
        model = ModelConfig(backend="openai", model="teacher", base_url=server.url, max_retries=0)
        cfg = teach.TeachConfig(out=str(run_dir), model=model, n=2, num_frames=4, frame_size=56, chunk=total,
                                progress=False)
        server.fail(1)  # one sample of the one chunk fails
        teach.main(cfg)
        assert len(server.received) == total and read_manifest(run_dir, "teach") is None
        first = {json.dumps(r, sort_keys=True) for r in read_jsonl(run_dir / "consensus.jsonl")}
        teach.main(cfg)
        assert len(server.received) == total + 1  # only the failed sample is asked again
    rows = {json.dumps(r, sort_keys=True) for r in read_jsonl(run_dir / "consensus.jsonl")}
    assert first < rows and len(rows) == total and read_manifest(run_dir, "teach") is not None


def test_identical_traces_are_measured_and_warned_about(prepared, tmp_path, capsys):
    from sightsound import report
    from tests.http_server import ChatServer, Reply, completion

    run_dir = copy_prepared(prepared, tmp_path)
    with ChatServer() as server:  # a server that samples greedily whatever it is asked
        server.rule = lambda body, headers: Reply(body=completion(["<think>same</think><answer>A</answer>"] * body["n"]))
        model = ModelConfig(backend="openai", model="teacher", base_url=server.url, extra_body={"top_k": -1,
                                                                                               "min_p": 0.0})
        manifest = teach.main(teach.TeachConfig(out=str(run_dir), model=model, n=3, top_k=50, num_frames=4,
                                                frame_size=56, progress=False))
        body = server.received[0].body
    assert (body["top_k"], body["min_p"]) == (-1, 0.0)  # extra_body is sent, and has the last word
    assert manifest["counts"]["identical_traces"] == 1.0 and "all 3 traces are the same text" in manifest["warnings"][0]
    assert "teach: WARNING" in capsys.readouterr().out
    text = report.write_run_report(run_dir)
    assert "all traces identical for 100.0% of samples" in text and "Warning: for 100% of samples" in text
    assert teach.identical_share([Trace("a", 0, "x", None), Trace("a", 1, "y", None), Trace("b", 0, "z", None),
                                  Trace("b", 1, "z", None)]) == 0.5


def _fast_retries(init):
    def wrapped(self, cfg, **kw):
        async def no_sleep(seconds):
            return None

        init(self, cfg, **{"sleep": no_sleep, **kw})

    return wrapped
