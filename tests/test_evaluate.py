"""eval → score → report on the tiny student and synthetic clips, and the paper's columns."""

import json

import pytest

from sightsound import inference, report
from sightsound.answers import extract_answer
from sightsound.cli import main as cli
from sightsound.models import ModelConfig
from sightsound.records import Prediction, Sample
from sightsound.store import read_jsonl
from sightsound.datasets.synth.world import QUESTION_TYPES
from sightsound.stages import evaluate


def config(prepared, tiny_models, tmp_path, **kw):
    kw = {"max_new_tokens": 8, "progress": False, "chunk": 8, "limit": 12, **kw}
    model = ModelConfig(model=str(tiny_models[kw.pop("role", "student")]), batch_size=4)
    return evaluate.EvalConfig(samples=str(prepared / "samples.jsonl"), out=str(tmp_path / kw.pop("name", "direct")),
                               model=model, **kw)


def test_direct_eval_writes_predictions_result_and_is_resumable(prepared, tiny_models, tmp_path, capsys):
    cfg = config(prepared, tiny_models, tmp_path)
    result = evaluate.main(cfg)
    rows = list(read_jsonl(tmp_path / "direct" / "predictions.jsonl"))
    assert len(rows) == result["count"] == 12
    samples = {s.id: s for s in read_jsonl(prepared / "samples.jsonl", Sample)}
    for row in rows:
        s = samples[row["id"]]
        assert "Answer with only the option letter only." not in row["prompt"]
        assert row["prompt"].startswith(s.question.replace("video", "audio"))  # the audio variant
        assert row["correct"] == (row["pred_index"] is not None and s.options[row["pred_index"]] == s.options[s.answer])
    assert result["accuracy"] == sum(r["correct"] for r in rows) / 12
    assert set(result["per_category"]) <= set(QUESTION_TYPES)
    assert result["dataset_files"] and result["label"] == cfg.model.model

    # an interrupted run: the manifest and a few predictions are gone; the rerun fills them in
    lines = (tmp_path / "direct" / "predictions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "direct" / "predictions.jsonl").write_text("".join(lines[:5]))
    (tmp_path / "direct" / "manifests" / "eval.json").unlink()
    again = evaluate.main(cfg)
    assert again["count"] == 12 and again["accuracy"] == result["accuracy"]
    assert evaluate.main(cfg)["counts"]["questions"] == 12 and "already done" in capsys.readouterr().out


def test_methods_build_their_prompts(prepared, tiny_models, tmp_path):
    sample = next(read_jsonl(prepared / "samples.jsonl", Sample))
    traces = {sample.id: "The flute on the left moves, so the flute is sounding."}
    cfg = config(prepared, tiny_models, tmp_path, method="test_time_cot_distill", teacher_traces="x")
    [turn] = inference.turn(sample, cfg, traces)
    kinds = [p["type"] for p in turn["content"]]
    assert kinds == ["audio", "text"] and traces[sample.id] in turn["content"][-1]["text"]
    cfg = config(prepared, tiny_models, tmp_path, method="zero_shot_audio_cot", num_frames=4, frame_size=56)
    [turn] = inference.turn(sample, cfg, {})
    assert [p["type"] for p in turn["content"]] == ["video", "text"]
    assert "silent video" in turn["content"][-1]["text"] and sample.question in turn["content"][-1]["text"]
    cfg = config(prepared, tiny_models, tmp_path, method="zero_shot_cot", inputs="both", num_frames=2)
    [turn] = inference.turn(sample, cfg, {})
    assert [p["type"] for p in turn["content"]] == ["video", "audio", "text"]
    with pytest.raises(ValueError, match="unknown method"):
        evaluate.main(config(prepared, tiny_models, tmp_path, method="guess"))


def test_teacher_on_silent_video_and_distill_from_teacher_traces(prepared, tiny_models, tmp_path):
    result = evaluate.main(config(prepared, tiny_models, tmp_path, role="teacher", method="zero_shot_audio_cot",
                                  name="teacher", num_frames=4, frame_size=56, limit=4))
    assert result["inputs"] == "video" and result["count"] == 4
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"sample_id": s.id, "index": 0, "text": "<think>flute</think><answer>A</answer>",
                                          "pred_index": 0}) + "\n" for s in read_jsonl(prepared / "samples.jsonl", Sample)))
    result = evaluate.main(config(prepared, tiny_models, tmp_path, method="test_time_cot_distill", name="distill",
                                  teacher_traces=str(traces), limit=4))
    rows = list(read_jsonl(tmp_path / "distill" / "predictions.jsonl"))
    assert result["count"] == 4 and all("flute" in r["prompt"] and "<answer>A" not in r["prompt"] for r in rows)


def test_eval_score_report_round_trip(prepared, tiny_models, tmp_path):
    for method in ("direct", "zero_shot_cot"):
        assert cli(["eval", "--samples", str(prepared / "samples.jsonl"), "--out", str(tmp_path / method),
                    "--method", method, f"model.model={tiny_models['student']}", "max_new_tokens=6", "limit=6",
                    "progress=false", "label=tiny"]) == 0
    scored = tmp_path / "scored.json"
    assert cli(["score", str(tmp_path / "direct" / "predictions.jsonl"), "--out", str(scored)]) == 0
    direct = json.loads((tmp_path / "direct" / "result.json").read_text())
    assert json.loads(scored.read_text())["accuracy"] == direct["accuracy"]  # one extractor, one number
    assert cli(["report", str(tmp_path / "direct" / "result.json"), str(tmp_path / "zero_shot_cot" / "result.json"),
                "--out", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| tiny | direct | " in text and "| tiny | zero_shot_cot | " in text
    assert f"{100 * direct['accuracy']:.1f}" in text
    assert (tmp_path / "report.csv").read_text().startswith("Model,Method,synthetic")


def fake_rows(tmp_path, samples, correct):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(Prediction(s.id, "", "", s.options, s.answer, None, c, s.category,
                                                  meta={k: s.meta[k] for k in ("difficulty", "modality") if k in s.meta}).__dict__) + "\n"
                            for s, c in zip(samples, correct)))
    return path


def test_paper_columns_for_mmau_and_music_avqa(tmp_path):
    mmau = [Sample(f"m{i}", "mmau", "test-mini", "q", ["a", "b"], 0, "a", task, meta={"difficulty": d})
            for i, (task, d) in enumerate([("sound", "easy"), ("sound", "hard"), ("speech", "easy"), ("music", "hard")])]
    cfg = evaluate.EvalConfig(samples=str(tmp_path / "none.jsonl"), label="M", method="direct")
    result = evaluate.summarize(fake_rows(tmp_path, mmau, [True, False, True, False]), mmau, cfg, {})
    assert result["paper"]["columns"]["sound"]["accuracy"] == 0.5 and result["per_difficulty"]["easy"]["accuracy"] == 1.0
    assert result["scorer"] == "mmau"  # the benchmark's own scorer, unless one is named
    assert report.build_table([result])[0][2:] == ["MMAU test-mini Sound", "MMAU test-mini Speech",
                                                   "MMAU test-mini Music", "MMAU test-mini Avg",
                                                   "MMAU test-mini unparsable"]  # every response here is empty
    assert result["unparsable"] == {"count": 4, "share": 1.0}
    music = [Sample(f"v{i}", "music-avqa", "test", "q", [], None, "two", cat, meta={"modality": mod})
             for i, (cat, mod) in enumerate([("Counting", "Audio"), ("Counting", "Visual"), ("Temporal", "Audio-Visual"),
                                             ("Location", "Audio-Visual"), ("Existential", "Audio")])]
    result = evaluate.summarize(fake_rows(tmp_path, music, [True, False, False, True, True]), music, cfg, {})
    columns = result["paper"]["columns"]
    assert columns["Counting"] == {"accuracy": 1.0, "count": 1, "correct": 1,  # the visual question is left out
                                   "ci95": [0.2065, 1.0]}
    assert columns["Comparative"] is None and result["paper"]["avg"]["count"] == 3  # Location left out
    assert result["accuracy"] == 0.6  # every question, for the record
    headers, body = report.build_table([result])
    assert headers[2:] == ["MUSIC-AVQA test Temp", "MUSIC-AVQA test Comp", "MUSIC-AVQA test Cnt",
                           "MUSIC-AVQA test Exist", "MUSIC-AVQA test Avg", "MUSIC-AVQA test unparsable"]
    assert body == [["M", "direct", "0.0 (0.0–79.3)", "—", "100.0 (20.6–100.0)", "100.0 (20.6–100.0)", "66.7 (20.8–93.8)",
                     "100.0%"]]


def prepare_eval_score_report(tmp_path, tiny_models, dataset: str, root, *prepare_args: str, scorer: str = "default"):
    """prepare → eval (direct, the tiny student) → score → report through the CLI; (eval result,
    score result, report text)."""
    run, out = tmp_path / "run", tmp_path / "e"
    assert cli(["prepare", "--dataset", dataset, "--root", str(root), "--out", str(run), *prepare_args,
                "progress=false"]) == 0
    assert cli(["eval", "--samples", str(run / "samples.jsonl"), "--out", str(out), "--method", "direct",
                f"model.model={tiny_models['student']}", "max_new_tokens=4", "progress=false", "label=tiny"]) == 0
    assert cli(["score", str(out / "predictions.jsonl"), "--out", str(tmp_path / "s.json"), "--scorer", scorer]) == 0
    assert cli(["report", str(out / "result.json"), "--out", str(tmp_path / "report.md")]) == 0
    return (json.loads((out / "result.json").read_text()), json.loads((tmp_path / "s.json").read_text()),
            (tmp_path / "report.md").read_text())


def test_mmar_prepare_eval_score_report(tiny_models, tmp_path):
    """A benchmark in MMAR's layout (MMAR-meta.json, audio/) goes through prepare → eval → score → report."""
    from tests.conftest import make_wav

    root = tmp_path / "mmar"
    records = []
    for i, modality in enumerate(["sound", "music", "speech", "mix-sound-music"]):
        make_wav(root / "audio" / f"m{i}.wav", seconds=1.0, freq=300.0 + 200 * i)
        records.append({"id": f"m{i}", "audio_path": f"./audio/m{i}.wav", "question": "What is heard?",
                        "choices": ["a tone", "a voice", "silence"], "answer": "a tone", "modality": modality,
                        "category": "Signal Layer", "sub-category": "Pitch", "language": "en"})
    (root / "MMAR-meta.json").write_text(json.dumps(records))
    result, _, text = prepare_eval_score_report(tmp_path, tiny_models, "mmar", root)
    assert result["count"] == 4 and set(result["per_category"]) == {"sound", "music", "speech", "mix-sound-music"}
    assert "MMAR" in text and "Sound-Music" in text


def test_mmau_pro_prepare_eval_score_report(tiny_models, tmp_path):
    """MMAU-Pro's layout (test.parquet, data/): closed and open questions are evaluated, the others skipped."""
    from tests.conftest import make_wav
    from tests.test_datasets import MMAU_PRO_ROW, write_parquet

    root = tmp_path / "mmau-pro"
    rows = []
    for i, category in enumerate(["sound", "music", "open", "multi"]):
        make_wav(root / "data" / f"p{i}.wav", seconds=1.0, freq=300.0 + 200 * i)
        rows.append({**MMAU_PRO_ROW, "id": f"p{i}", "category": category, "audio_path": [f"data/p{i}.wav"]})
    rows[2].update(choices=None, answer="a tone")
    rows[3]["audio_path"] = ["data/p3.wav", "data/p0.wav"]
    write_parquet(root / "test.parquet", rows)
    result, scored, text = prepare_eval_score_report(tmp_path, tiny_models, "mmau-pro", root, scorer="mmau-pro")
    assert result["count"] == 3 and result["scorer"] == "mmau-pro" and set(result["per_category"]) == {"sound", "music", "open"}
    assert scored["count"] == 3 and all(r["pred_index"] is not None for r in scored["records"][:2])  # always a choice
    assert "MMAU-Pro Sound" in text


def test_hf_dataset_prepare_eval_score_report(tiny_models, tmp_path):
    """A Hugging Face dataset saved with save_to_disk: clips stored as bytes are decoded by prepare; a
    corrupt one is skipped with its reason, and the run goes on."""
    from tests.test_datasets import hf_rows, save_hf_dataset

    folder = save_hf_dataset(tmp_path / "ds", {"test": hf_rows()})
    result, scored, text = prepare_eval_score_report(tmp_path, tiny_models, "hf", folder)
    skipped = {row["id"]: row for row in read_jsonl(tmp_path / "run" / "skipped.jsonl")}
    assert skipped["corrupt"]["kind"] == "media-corrupt" and "ds[test] (id corrupt): stored clip 'bad.wav'" \
        in skipped["corrupt"]["reason"]
    assert skipped["bad"]["kind"] == "metadata"
    samples = list(read_jsonl(tmp_path / "run" / "samples.jsonl", Sample))
    assert [s.id for s in samples] == ["h0", "h1", "test-2"]
    assert samples[0].audio == samples[1].audio  # the same stored clip is decoded and cached once
    assert result["count"] == scored["count"] == 3 and "Hugging Face dataset" in text


def test_mmau_test_set_is_answered_unscored_and_exported_for_the_leaderboard(tiny_models, tmp_path):
    from tests.conftest import make_wav
    from tests.test_datasets import MMAU_RECORD

    root = tmp_path / "mmau"
    records = [{**MMAU_RECORD, "id": f"t{i}", "audio_id": f"./test-audios/t{i}.wav", "split": "test", "answer": ""}
               for i in range(4)]
    for i in range(3):  # t3's clip is missing: skipped by prepare, yet still in the submission
        make_wav(root / "test-audios" / f"t{i}.wav", seconds=1.0, freq=300.0 + 100 * i)
    (root / "mmau-test.json").write_text(json.dumps(records))
    result, scored, text = prepare_eval_score_report(tmp_path, tiny_models, "mmau", root, "--split", "test",
                                                     scorer="mmau")
    assert (result["count"], result["unlabelled"], result["accuracy"]) == (0, 3, None)
    assert (scored["count"], scored["unlabelled"], scored["accuracy"]) == (0, 3, None)
    assert all(r["correct"] is None for r in scored["records"]) and "without a public answer" in text
    assert "MMAU test Sound" in text and "test-mini" not in text
    assert cli(["export", str(tmp_path / "e"), "--format", "mmau-submission"]) == 0
    submission = json.loads((tmp_path / "e" / "mmau-submission.json").read_text())
    assert [r["id"] for r in submission] == ["t0", "t1", "t2", "t3"]  # the benchmark file's order, every record
    # The official scorer (Sakshi113/MMAU evaluation.py) reads `output_key = 'model_output'` and
    # skips records without it; its README names the field `model_prediction`: both are written.
    assert all(set(r) == set(MMAU_RECORD) | {"model_prediction", "model_output"} for r in submission)
    assert all(r["model_output"] == r["model_prediction"] for r in submission)
    predictions = {r["id"]: r for r in read_jsonl(tmp_path / "e" / "predictions.jsonl")}
    for record in submission[:3]:  # the chosen option's text, else the model's own answer
        row = predictions[record["id"]]
        said = row["options"][row["pred_index"]] if row["pred_index"] is not None else extract_answer(row["response"])
        assert record["model_prediction"] == said.strip()
    assert submission[3]["model_prediction"] == ""
