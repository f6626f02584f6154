"""The verify stage (AGFV): the three checkers on the synthetic world, strict API replies, resume."""

import base64
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sightsound import prompts
from sightsound.checking import verifier
from sightsound.cli import main as cli
from sightsound.config import load_config
from sightsound.datasets.synth import oracle, world
from sightsound.models import ModelConfig, Request
from sightsound.records import CorpusRow, Sample, Trace, Verdict
from sightsound.store import read_jsonl, to_json
from sightsound.manifest import read_manifest
from sightsound.checking import checkers
from sightsound.stages import teach, verify
from tests.http_server import ChatServer, Reply, completion
from tests.conftest import kill_when_written

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def taught(prepared, tmp_path, name="run") -> Path:
    """A copy of the prepared run with two traces per sample, as teach leaves them. Trace 0 is what
    a watcher writes (oracle.visual_reasoning: it hallucinates where a source mimes); trace 1 claims
    the audible sources and, on clips with an even video id, one more that is silent (hallucinated).
    Counting questions get two different answers, so they are not unanimous."""
    run_dir = tmp_path / name
    shutil.copytree(prepared, run_dir)
    traces, votes = [], []
    for s in read_jsonl(run_dir / "samples.jsonl", Sample):
        facts = s.meta["facts"]
        claims = list(facts["audible"])
        if s.meta["video_id"] % 2 == 0:
            claims.append(next(n for n in world.NAMES if n not in facts["audible"]))
        texts = [oracle.visual_reasoning(facts["sources"]), " ".join(f"The {n} is sounding." for n in claims)]
        letters = ["A", "B"] if s.category == "Count" else ["ABCD"[s.answer]] * 2
        pair = [teach.make_trace(s, i, f"<think>{text}</think><answer>{letter}</answer>")
                for i, (text, letter) in enumerate(zip(texts, letters))]
        traces += pair
        votes.append(teach.vote(s, pair))
    for name, rows in (("traces", traces), ("consensus", votes)):
        (run_dir / f"{name}.jsonl").write_text("".join(json.dumps(to_json(r)) + "\n" for r in rows))
    return run_dir


def unanimous_items(run_dir):
    samples = {s.id: s for s in read_jsonl(run_dir / "samples.jsonl", Sample)}
    kept = {r["id"] for r in read_jsonl(run_dir / "consensus.jsonl") if r["unanimous"]}
    return [(samples[t.sample_id], t) for t in read_jsonl(run_dir / "traces.jsonl", Trace) if t.sample_id in kept]


def is_hallucinated(sample, trace):
    return oracle.hallucinated(trace.text, sample.meta["facts"])


def test_fixture_has_what_the_tests_need(prepared, tmp_path):
    run_dir = taught(prepared, tmp_path)
    consensus = list(read_jsonl(run_dir / "consensus.jsonl"))
    assert 0 < sum(r["unanimous"] for r in consensus) < len(consensus)
    flags = [is_hallucinated(s, t) for s, t in unanimous_items(run_dir)]
    assert 0 < sum(flags) < len(flags)


@pytest.mark.parametrize("reply, word", [
    ("yes", "yes"), ("No", "no"), ("YES", "yes"), ("  Yes.  ", "yes"), ("no!", "no"), ("**No**", "no"),
    ('"yes"', "yes"), ("(No)", "no"), ("No, the drum is silent.", "no"), ("Yes. Every claim is heard.", "yes"),
    ("yes\nThe flute is audible.", "yes"), ("No; nothing else.", "no"), ("`yes`", "yes"),
    ("Yes and no", None), ("I think yes", None), ("The answer is yes.", None), ("Yesterday", None),
    ("y", None), ("nope", None), ("", None), ("Maybe.", None), ("yes yes", None), ("Yes - it is", None),
    ("No-one knows", None), ("Sí", None),
])
def test_api_replies_are_parsed_strictly(reply, word):
    assert checkers.parse_reply(reply) == word


def test_the_checker_sees_the_reasoning_and_the_audio_not_the_answer():
    sample = Sample("s", "synth", "train", "Which?", ["flute", "drum"], 0, "flute", "Which", audio="clip.wav")
    trace = Trace("s", 0, "<think>The flute on the left moves, so the flute is sounding.</think><answer>A</answer>", 0)
    [message] = checkers.checker_messages(sample, trace)
    audio, text = message["content"]
    assert audio == {"type": "audio", "path": "clip.wav"}
    assert text["text"] == prompts.CHECKER_PROMPT.format(trace="The flute on the left moves, so the flute is sounding.")
    assert "<answer>" not in text["text"] and "<think>" not in text["text"]


def test_local_checker_decides_from_the_yes_no_probabilities(prepared, tiny_models, tmp_path, capsys):
    from sightsound.models.hf import HFBackend

    run_dir = taught(prepared, tmp_path)
    model = ModelConfig(model=str(tiny_models["student"]), batch_size=8)
    cfg = verify.VerifyConfig(out=str(run_dir), checker="local", model=model, chunk=16, progress=False)
    manifest = verify.main(cfg)
    items = unanimous_items(run_dir)
    verdicts = {v.id: v for v in read_jsonl(run_dir / "verdicts.jsonl", Verdict)}
    assert list(verdicts) == [t.id for _, t in items]  # every trace of every unanimous sample, nothing else

    direct = HFBackend(model).yes_probability([Request(t.id, checkers.checker_messages(s, t)) for s, t in items])
    for (s, t), p_yes in zip(items, direct):
        v = verdicts[t.id]
        assert v.checker == "local" and math.isclose(v.score, p_yes, rel_tol=1e-4, abs_tol=1e-6)
        assert v.accept == (v.score >= 0.5) and v.reply == f"p_yes={v.score:.4f}"

    consensus = {r["id"]: r for r in read_jsonl(run_dir / "consensus.jsonl")}
    corpus = [to_json(row) for row in read_jsonl(run_dir / "corpus.jsonl", CorpusRow)]  # media paths made absolute
    accepted = [(s, t) for s, t in items if verdicts[t.id].accept]
    assert [row["id"] for row in corpus] == [t.id for _, t in accepted]
    for row, (s, t) in zip(corpus, accepted):  # SFT needs nothing else: (audio, question, options) → text
        assert (row["audio"], row["question"], row["options"], row["text"]) == (s.audio, s.question, s.options, t.text)
        assert (row["label"], row["label_text"]) == (consensus[s.id]["label"], consensus[s.id]["label_text"])
        assert Path(row["audio"]).exists()

    counts = manifest["counts"]
    assert (counts["traces"], counts["accepted"], counts["pending"]) == (len(items), len(accepted), 0)
    assert counts["samples"] == sum(r["unanimous"] for r in consensus.values())
    per_category = manifest["per_category"]
    assert sum(c["traces"] for c in per_category.values()) == len(items) and "Count" not in per_category
    assert sum(c["accepted"] for c in per_category.values()) == len(accepted)
    quality = manifest["quality"]
    flags = [(is_hallucinated(s, t), not verdicts[t.id].accept) for s, t in items]
    assert (quality["tp"], quality["fp"], quality["fn"], quality["tn"]) == (
        sum(h and r for h, r in flags), sum(r and not h for h, r in flags),
        sum(h and not r for h, r in flags), sum(not h and not r for h, r in flags))
    assert quality["hallucinated"] == sum(h for h, _ in flags)
    assert "accepted" in capsys.readouterr().out

    assert verify.main(cfg)["finished_at"] == manifest["finished_at"]
    assert "already done" in capsys.readouterr().out

    # Another threshold is another config: the run starts over, and the threshold decides.
    scores = sorted(v.score for v in verdicts.values())
    cfg.threshold = scores[len(scores) // 2]
    verify.main(cfg)
    again = list(read_jsonl(run_dir / "verdicts.jsonl", Verdict))
    assert len(again) == len(items) and all(v.accept == (v.score >= cfg.threshold) for v in again)
    assert 0 < sum(v.accept for v in again) < len(again)


def test_local_checker_takes_the_omni_thinker_too(prepared, tiny_models, tmp_path):
    run_dir = taught(prepared, tmp_path)
    model = ModelConfig(model=str(tiny_models["omni"]))
    manifest = verify.main(verify.VerifyConfig(out=str(run_dir), checker="local", model=model, limit=2, progress=False))
    verdicts = list(read_jsonl(run_dir / "verdicts.jsonl", Verdict))
    assert len(verdicts) == manifest["counts"]["traces"] == 4
    assert all(0 < v.score < 1 and v.accept == (v.score >= 0.5) for v in verdicts)


def _fast_retries(monkeypatch):
    import sightsound.models.openai_http as http

    init = http.OpenAIBackend.__init__

    async def no_sleep(seconds):
        return None

    monkeypatch.setattr(http.OpenAIBackend, "__init__", lambda self, cfg, **kw: init(self, cfg, **{"sleep": no_sleep, **kw}))


def _parts(body):
    parts = body["messages"][0]["content"]
    return next(p for p in parts if p["type"] == "input_audio"), next(p["text"] for p in parts if p["type"] == "text")


SCRIPT = ["Yes.", "no", "**No**, the drum is silent.", "Maybe.", "YES", "Yes and no", "FAIL"]


def test_api_checker_parses_strictly_and_retries_failed_requests(prepared, tmp_path, monkeypatch, capsys):
    _fast_retries(monkeypatch)
    run_dir = taught(prepared, tmp_path)
    items = unanimous_items(run_dir)
    prompts_in_order = sorted({checkers.checker_messages(s, t)[0]["content"][1]["text"] for s, t in items})
    script = {text: SCRIPT[i % len(SCRIPT)] for i, text in enumerate(prompts_in_order)}
    expected = {t.id: script[checkers.checker_messages(s, t)[0]["content"][1]["text"]] for s, t in items}
    assert set(expected.values()) == set(SCRIPT)

    with ChatServer() as server:
        def reply(body, headers):
            said = script[_parts(body)[1]]
            return Reply.error(500) if said == "FAIL" else Reply(body=completion([said]))

        server.rule = reply
        model = ModelConfig(backend="openai", model="checker", base_url=server.url, api_key_env=None, max_retries=1)
        cfg = verify.VerifyConfig(out=str(run_dir), checker="api", model=model, chunk=8, progress=False)
        result = verify.main(cfg)
        first = server.received[0].body
        failed = {i for i, said in expected.items() if said == "FAIL"}
        verdicts = {v.id: v for v in read_jsonl(run_dir / "verdicts.jsonl", Verdict)}
        assert set(verdicts) == set(expected) - failed  # failed requests are not verdicts...
        errors = list(read_jsonl(run_dir / "verify_errors.jsonl"))
        assert {f"{e['sample_id']}#{e['index']}" for e in errors} == failed and all("status=500" in e["error"] for e in errors)
        assert result["counts"]["pending"] == len(failed)  # ...so no corpus and no manifest yet
        assert read_manifest(run_dir, "verify") is None and not (run_dir / "corpus.jsonl").exists()

        for trace_id, v in verdicts.items():
            said = expected[trace_id]
            word = checkers.parse_reply(said)
            assert v.checker == "api" and v.score is None
            assert v.accept == (word == "yes")
            assert v.reply == (said if word else verify.UNPARSEABLE + said)  # raw text kept, marked
        assert not any(v.accept for v in verdicts.values() if v.reply.startswith(verify.UNPARSEABLE))

        assert {f"{e['sample_id']}#{e['index']}" for e in read_jsonl(run_dir / "verify_errors.jsonl")} == set(failed)
        server.rule = lambda body, headers: Reply(body=completion(["Yes"]))  # the server recovers
        before = len(server.received)
        manifest = verify.main(cfg)
        assert len(server.received) - before == len(failed)  # the rerun asks only for what is missing
        assert list(read_jsonl(run_dir / "verify_errors.jsonl")) == []  # resolved errors are not kept

    assert (first["temperature"], first["n"], first["max_tokens"]) == (0.0, 1, cfg.max_new_tokens)
    audio, text = _parts(first)
    assert base64.b64decode(audio["input_audio"]["data"]) in {Path(s.audio).read_bytes() for s, _ in items}
    assert audio["input_audio"]["format"] == "wav" and text.startswith("Here is a description")
    final = {v.id: v for v in read_jsonl(run_dir / "verdicts.jsonl", Verdict)}
    assert set(final) == set(expected) and all(final[i].accept and final[i].reply == "Yes" for i in failed)
    unparseable = sum(checkers.parse_reply(s) is None for i, s in expected.items() if i not in failed)
    assert manifest["counts"]["unparseable"] == unparseable > 0
    assert manifest["counts"]["accepted"] == sum(v.accept for v in final.values())
    assert [r["id"] for r in read_jsonl(run_dir / "corpus.jsonl")] == [t.id for _, t in items if final[t.id].accept]


def test_a_local_checker_served_without_logprobs_stops_with_one_clear_error(prepared, tmp_path, capsys):
    run_dir = taught(prepared, tmp_path)
    with ChatServer() as server:  # answers, but gives no log-probs
        assert cli(["verify", "--out", str(run_dir), "--checker", "local", "model.backend=openai",
                    f"model.base_url={server.url}", "model.model=checker", "chunk=4", "progress=false"]) == 1
        asked = len(server.received)
    err = capsys.readouterr().err
    assert "answered without log-probs" in err and "checker: api" in err and len(err.strip().splitlines()) == 1
    assert asked <= 4 and not list(read_jsonl(run_dir / "verdicts.jsonl"))  # stopped after the first chunk


def test_api_scores_come_from_logprobs_but_the_text_decides(prepared, tmp_path):
    run_dir = taught(prepared, tmp_path)
    with ChatServer() as server:
        server.logprobs = [("Yes", math.log(0.8)), ("No", math.log(0.2))]
        server.rule = lambda body, headers: None if body.get("logprobs") else Reply(body=completion(["No."]))
        model = ModelConfig(backend="openai", model="checker", base_url=server.url, api_key_env=None)
        verify.main(verify.VerifyConfig(out=str(run_dir), checker="api", model=model, api_logprobs=True, limit=2,
                                        progress=False))
        asked = [r.body for r in server.received if r.body.get("logprobs")]
    verdicts = list(read_jsonl(run_dir / "verdicts.jsonl", Verdict))
    assert verdicts and len(asked) == len(verdicts) and all(b["max_tokens"] == 1 for b in asked)
    assert all(math.isclose(v.score, 0.8) and not v.accept and v.reply == "No." for v in verdicts)


def oracle_rule(items):
    """Answers from the facts: yes exactly when the trace claims no sound the clip lacks."""
    facts = {base64.b64encode(Path(s.audio).read_bytes()).decode(): s.meta["facts"] for s, _ in items}

    def rule(body, headers):
        audio, text = _parts(body)
        return Reply(body=completion(["No." if oracle.hallucinated(text, facts[audio["input_audio"]["data"]]) else "Yes."]))

    return rule


def test_calibrate_train_and_verify_with_the_trained_verifier(prepared, tiny_models, tmp_path, capsys):
    expensive = taught(prepared, tmp_path, "expensive")  # the expensive checker labels this run...
    with ChatServer() as server:
        server.rule = oracle_rule(unanimous_items(expensive))
        model = ModelConfig(backend="openai", model="oracle", base_url=server.url, api_key_env=None)
        verify.main(verify.VerifyConfig(out=str(expensive), checker="api", model=model, progress=False))
    labelled = list(read_jsonl(expensive / "verdicts.jsonl", Verdict))

    out = tmp_path / "verifier"  # ...and the lightweight verifier learns from its verdicts
    assert cli(["verifier", "train", "--from-run", str(expensive), "--out", str(out),
                f"audio_encoder={tiny_models['student']}", "holdout=0.5", "steps=200"]) == 0
    calibration = list(read_jsonl(out / "calibration.jsonl"))
    assert [(c["sample_id"], c["index"], c["label"]) for c in calibration] == [
        (v.sample_id, v.index, v.accept) for v in labelled]
    info = json.loads((out / "verifier.json").read_text())
    assert info["calibration"]["traces"] == len(labelled)
    assert set(info["held_out_rejection"]) >= {"precision", "recall", "f1", "tp", "fp", "fn", "tn"}

    run_dir = taught(prepared, tmp_path, "cheap")
    assert cli(["verify", "--out", str(run_dir), "--checker", "trained", f"verifier={out}", "progress=false"]) == 0
    items = unanimous_items(run_dir)
    verdicts = list(read_jsonl(run_dir / "verdicts.jsonl", Verdict))
    expected = verifier.Verifier.load(out).predict([s.audio for s, _ in items], [t.text for _, t in items])
    assert [v.id for v in verdicts] == [t.id for _, t in items]
    for v, p in zip(verdicts, expected):
        assert v.checker == "trained" and math.isclose(v.score, float(p), rel_tol=1e-5)
        assert v.accept == (p >= 0.5) and v.reply == f"p_accept={p:.4f}"
    manifest = read_manifest(run_dir, "verify")
    assert str(out / "classifier.safetensors") in manifest["inputs"] and manifest["quality"]["traces"] == len(items)


class Interrupt(Exception):
    pass


def test_interrupted_run_checks_only_what_is_missing(prepared, tmp_path, monkeypatch):
    """A checker that dies on its third chunk: the rerun asks only for the traces without a verdict,
    and the verdicts end the same as an uninterrupted run's."""
    calls, dying = [], [False]

    class Scripted:
        def __init__(self, cfg):
            pass

        def __call__(self, items):
            calls.append([t.id for _, t in items])
            if dying[0] and len(calls) == 3:
                raise Interrupt
            return [Verdict(s.id, t.index, t.index == 0, None, "scripted", "scripted") for s, t in items]

    monkeypatch.setitem(verify.CHECKERS, "scripted", Scripted)
    clean, broken = taught(prepared, tmp_path, "clean"), taught(prepared, tmp_path, "broken")
    settings = dict(checker="scripted", chunk=4, progress=False)
    verify.main(verify.VerifyConfig(out=str(clean), **settings))
    calls.clear()
    dying[0] = True
    with pytest.raises(Interrupt):
        verify.main(verify.VerifyConfig(out=str(broken), **settings))
    written = [v.id for v in read_jsonl(broken / "verdicts.jsonl", Verdict)]
    assert written == calls[0] + calls[1]
    calls.clear()
    dying[0] = False
    verify.main(verify.VerifyConfig(out=str(broken), **settings))
    asked = [i for call in calls for i in call]
    assert set(asked).isdisjoint(written) and len(asked) + len(written) == len(unanimous_items(clean))
    rows = lambda d: sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(d / "verdicts.jsonl"))
    assert rows(broken) == rows(clean)
    assert read_manifest(broken, "verify")["counts"] == read_manifest(clean, "verify")["counts"]


RUNNER = """
import sys
from sightsound.models import ModelConfig
from sightsound.stages import verify
model = ModelConfig(backend="openai", model="checker", base_url=sys.argv[2], api_key_env=None, max_concurrency=1)
verify.main(verify.VerifyConfig(out=sys.argv[1], checker="api", model=model, chunk=2, progress=False))
"""


def test_killed_verify_loses_nothing(prepared, tmp_path):
    script = tmp_path / "run_verify.py"
    script.write_text(RUNNER)
    run_dir = taught(prepared, tmp_path)
    items = unanimous_items(run_dir)
    with ChatServer(delay=0.05) as server:
        server.rule = oracle_rule(items)
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir), server.url], stderr=subprocess.DEVNULL,
                                cwd=Path(__file__).resolve().parents[1])
        verdicts = run_dir / "verdicts.jsonl"
        kill_when_written(proc, verdicts, 6)
        assert read_manifest(run_dir, "verify") is None, "the run must be killed before it finishes"
        kept = [v.id for v in read_jsonl(verdicts, Verdict)]
        before = len(server.received)
        subprocess.run([sys.executable, str(script), str(run_dir), server.url], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        asked = len(server.received) - before
    final = list(read_jsonl(verdicts, Verdict))
    assert [v.id for v in final] == [t.id for _, t in items]  # each trace once, none lost
    assert asked == len(items) - len(kept)  # nothing checked twice
    for (s, t), v in zip(items, final):
        assert v.accept == (not is_hallucinated(s, t))
    quality = read_manifest(run_dir, "verify")["quality"]
    assert quality["precision"] == quality["recall"] == 1.0  # the oracle is right by construction


def test_configs_name_the_papers_checker():
    paper = load_config(verify.VerifyConfig, CONFIGS / "sightsound-r1.yaml", section="verify")
    assert (paper.checker, paper.model.backend, paper.model.model) == ("api", "openai", "gpt-4o-audio-preview")
    assert paper.model.api_key_env == "OPENAI_API_KEY"
    demo = load_config(verify.VerifyConfig, CONFIGS / "demo.yaml", section="verify")
    assert demo.checker in verify.CHECKERS


def test_missing_inputs_and_unknown_checker_are_errors(prepared, tmp_path, capsys):
    assert cli(["verify", "--out", str(tmp_path / "nowhere")]) == 1
    assert "samples.jsonl: not found" in capsys.readouterr().err
    run_dir = taught(prepared, tmp_path)
    assert cli(["verify", "--out", str(run_dir), "--checker", "psychic"]) == 2
    assert "psychic" in capsys.readouterr().err


class TruthChecker:
    """Accepts a trace exactly when it claims no sound the clip lacks (the world's ground truth)."""

    def __init__(self, cfg):
        pass

    def __call__(self, items):
        return [Verdict(s.id, t.index, not is_hallucinated(s, t), 1.0, "truth", "truth") for s, t in items]


def test_ablation_corpora_take_first_traces_checked_or_not(prepared, tmp_path, monkeypatch):
    """Table 2's rows from one teach: n = 1 corpora hold each sample's first trace (with its own
    answer as the label), checked ones only when the checker accepts them; corpus.jsonl stays the
    unanimous samples' accepted traces, and the manifest's quality counts right labels."""
    monkeypatch.setitem(checkers.CHECKERS, "truth", TruthChecker)
    monkeypatch.setitem(verify.CHECKERS, "truth", TruthChecker)
    run_dir = taught(prepared, tmp_path)
    manifest = verify.main(verify.VerifyConfig(out=str(run_dir), checker="truth", progress=False, corpora={
        "n1": {"tts": False, "agfv": False}, "agfv-n1": {"tts": False, "agfv": True}}))
    samples = {s.id: s for s in read_jsonl(run_dir / "samples.jsonl", Sample)}
    firsts = [t for t in read_jsonl(run_dir / "traces.jsonl", Trace) if t.index == 0]
    n1 = list(read_jsonl(run_dir / "corpus-n1.jsonl"))
    assert [(r["sample_id"], r["index"]) for r in n1] == [(t.sample_id, 0) for t in firsts]
    assert all(r["label"] == t.pred_index for r, t in zip(n1, firsts))
    checked = list(read_jsonl(run_dir / "corpus-agfv-n1.jsonl"))
    assert [r["sample_id"] for r in checked] == [t.sample_id for t in firsts if not is_hallucinated(samples[t.sample_id], t)]
    main = list(read_jsonl(run_dir / "corpus.jsonl"))
    kept = {(s.id, t.index) for s, t in unanimous_items(run_dir) if not is_hallucinated(s, t)}
    assert {(r["sample_id"], r["index"]) for r in main} == kept
    assert manifest["corpora"] == {"corpus": len(main), "n1": len(n1), "agfv-n1": len(checked)}
    quality = manifest["quality"]
    assert quality["f1"] == 1.0 and quality["accepted_traces"] + quality["rejected_traces"] == quality["traces"]
    with pytest.raises(ValueError, match="corpora.bad"):
        verify.main(verify.VerifyConfig(out=str(run_dir), checker="truth", corpora={"bad": {"tts": "no"}}))
