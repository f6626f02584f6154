import json

from sightsound.cli import main as cli


def test_help_lists_the_stages(capsys):
    try:
        cli(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "prepare", "teach", "tiny-models", "score"):
        assert command in out


def test_score_command_writes_the_result(tmp_path, capsys):
    lines = [{"id": "a", "response": "<answer>B</answer>", "options": ["x", "y"], "answer": 1, "category": "sound"},
             {"id": "b", "response": "<answer>(A)</answer>", "options": ["x", "y"], "answer": "y", "category": "music"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert cli(["score", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["accuracy"] == 0.5 and result["per_category"]["sound"]["accuracy"] == 1.0
    assert [r["pred_index"] for r in result["records"]] == [1, 0]
    assert cli(["score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r.json")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
