"""Scoring a predictions file: the RESULT.json contract, per-category accuracy, unmatched
records, errors that name file, line and field, and the MMAU scorer."""

import json

import pytest

from sightsound.scoring import score_file, score_predictions

VOICES = ["Man", "Woman", "Child", "Robot"]

PREDICTIONS = [
    {"id": "s1", "response": "<think>high pitch</think><answer>B</answer>", "options": VOICES,
     "answer": 1, "category": "sound"},
    {"id": "s2", "response": "<answer>Man</answer>", "options": VOICES, "answer": "Woman",
     "category": "sound"},
    {"id": "s3", "response": "<answer>I cannot tell.</answer>", "options": VOICES, "answer": 2,
     "category": "speech"},
    {"id": "s4", "response": "<answer>(D) fourteen</answer>", "options": ["four", "nine", "fourteen", "fourteen"],
     "answer": "fourteen", "category": "speech"},
    {"id": "m1", "response": "<answer>No</answer>", "options": [], "answer": "no", "category": "Existential"},
    {"id": "m2", "response": "<answer>a piano</answer>", "options": [], "answer": "no", "category": "Existential"},
    {"response": "<answer>Acoustic guitar</answer>", "options": [], "answer": "acoustic_guitar"},
]


def write_jsonl(path, rows, blank_line=True):
    lines = [json.dumps(r) for r in rows]
    if blank_line:
        lines.insert(2, "")  # blank lines are skipped but still counted for line numbers
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_file_round_trip(tmp_path):
    predictions = write_jsonl(tmp_path / "predictions.jsonl", PREDICTIONS)
    out = tmp_path / "eval" / "RESULT.json"
    result = score_file(predictions, out, scorer="default", similarity_threshold=None)
    assert json.loads(out.read_text()) == result
    assert not list(out.parent.glob("*.tmp"))
    assert (result["count"], result["correct"], result["unmatched"]) == (7, 4, 1)
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["scorer"] == "default" and result["predictions"] == str(predictions)
    assert result["per_category"] == {
        "Existential": {"accuracy": 0.5, "count": 2, "correct": 1, "ci95": [0.0945, 0.9055]},
        "sound": {"accuracy": 0.5, "count": 2, "correct": 1, "ci95": [0.0945, 0.9055]},
        "speech": {"accuracy": 0.5, "count": 2, "correct": 1, "ci95": [0.0945, 0.9055]},
    }
    assert result["records"] == [
        {"id": "s1", "pred_index": 1, "correct": True},
        {"id": "s2", "pred_index": 0, "correct": False},
        {"id": "s3", "pred_index": None, "correct": False},  # nothing matched
        {"id": "s4", "pred_index": 3, "correct": True},  # the second copy of the answer is right too
        {"id": "m1", "pred_index": None, "correct": True},  # open-ended: no index
        {"id": "m2", "pred_index": None, "correct": False},  # "no" is not in "piano"
        {"id": 8, "pred_index": None, "correct": True},  # no id: the line number
    ]


def test_score_file_replaces_an_old_result(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", PREDICTIONS[:2], blank_line=False)
    out = tmp_path / "RESULT.json"
    out.write_text("old")
    score_file(predictions, out, similarity_threshold=None)
    assert json.loads(out.read_text())["count"] == 2


def test_unmatched_text_goes_to_the_real_similarity_fallback(tmp_path):
    rows = [{"id": "x", "response": "<answer>a canine barking loudly</answer>",
             "options": ["Dog", "Car engine", "Rain"], "answer": 0}]
    result = score_predictions(write_jsonl(tmp_path / "p.jsonl", rows, blank_line=False))
    assert result["records"] == [{"id": "x", "pred_index": 0, "correct": True}]
    assert result["per_category"] == {}


def test_mmau_scorer(tmp_path):
    rows = [
        {"id": "a", "response": "<answer>The speaker is a woman.</answer>", "options": VOICES, "answer": "Woman",
         "category": "speech"},
        {"id": "b", "response": "<answer>a man or a woman</answer>", "options": VOICES, "answer": 1,
         "category": "speech"},  # names a wrong choice too
        {"id": "c", "response": "<answer>B</answer>", "options": VOICES, "answer": 1,
         "category": "sound"},  # a bare letter is read as its option's text: the rule never reads letters
        {"id": "d", "response": "<think>nine? four?</think><answer>fourteen</answer>",
         "options": ["four", "nine", "fourteen", "fourteen"], "answer": "fourteen", "category": "sound"},
        {"id": "e", "response": "<answer>(A)</answer>", "options": VOICES, "answer": 1, "category": "sound"},
        {"id": "f", "response": "<answer>Answer: b.</answer>", "options": VOICES, "answer": 1, "category": "sound"},
        {"id": "g", "response": "<answer>B or the man</answer>", "options": VOICES, "answer": 1,
         "category": "sound"},  # not a bare letter: the rule as it is (a wrong choice is named)
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows, blank_line=False)
    result = score_predictions(path, scorer="mmau", similarity_threshold=None)
    assert [(r["pred_index"], r["correct"]) for r in result["records"]] == \
        [(1, True), (None, False), (1, True), (2, True), (0, False), (1, True), (0, False)]
    assert result["per_category"]["speech"]["accuracy"] == 0.5
    default = score_predictions(path, similarity_threshold=None)
    assert [r["correct"] for r in default["records"]] == [True, False, True, True, False, True, False]


def test_mmau_pro_scorer_takes_the_nearest_choice_by_embedding_and_compares_exactly(tmp_path):
    """MMAU-Pro's closed-form rule with the real all-MiniLM-L6-v2: every answer in words lands on
    its most similar choice, however far; a bare letter is its option; an empty answer is wrong."""
    drinks = ["Boba tea", "Milk", "Coffee"]
    rows = [
        {"id": "a", "response": "<answer>someone is making bubble tea with tapioca pearls</answer>",
         "options": drinks, "answer": "Boba tea", "category": "sound"},
        {"id": "b", "response": "<answer>an espresso machine brewing</answer>", "options": drinks,
         "answer": "Boba tea", "category": "sound"},
        {"id": "c", "response": "<answer>B</answer>", "options": drinks, "answer": "Milk", "category": "sound"},
        {"id": "d", "response": "<answer></answer>", "options": drinks, "answer": "Milk", "category": "sound"},
        {"id": "e", "response": "<answer>a low hum</answer>", "options": [], "answer": "a low hum", "category": "open"},
    ]
    result = score_predictions(write_jsonl(tmp_path / "p.jsonl", rows, blank_line=False), scorer="mmau-pro")
    assert [(r["pred_index"], r["correct"]) for r in result["records"]] == \
        [(0, True), (2, False), (1, True), (None, False), (None, True)]


def test_unlabelled_lines_are_read_but_not_judged(tmp_path):
    rows = [{"id": "t1", "response": "<answer>B</answer>", "options": VOICES, "answer": None},
            {"id": "t2", "response": "<answer>Man</answer>", "options": VOICES, "answer": ""},
            {"id": "s1", "response": "<answer>Man</answer>", "options": VOICES, "answer": 0, "category": "sound"}]
    result = score_predictions(write_jsonl(tmp_path / "p.jsonl", rows, blank_line=False), scorer="mmau")
    assert [(r["pred_index"], r["correct"]) for r in result["records"]] == [(1, None), (0, None), (0, True)]
    assert (result["count"], result["correct"], result["unlabelled"]) == (1, 1, 2)
    only_unlabelled = score_predictions(write_jsonl(tmp_path / "q.jsonl", rows[:2], blank_line=False))
    assert (only_unlabelled["accuracy"], only_unlabelled["ci95"], only_unlabelled["unlabelled"]) == (None, None, 2)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"options": [], "answer": "yes"}', "field 'response' is missing"),
    ('{"response": 3, "options": [], "answer": "yes"}', "field 'response' should be text"),
    ('{"response": "B", "answer": 1}', "field 'options' is missing"),
    ('{"response": "B", "options": "Man, Woman", "answer": 1}', "field 'options' should be a list of strings"),
    ('{"response": "B", "options": ["Man", "Woman"], "answer": 2}', "field 'answer' is unusable"),
    ('{"response": "B", "options": ["Man", "Woman"], "answer": "Dog"}', "field 'answer' is unusable"),
    ('{"response": "B", "options": ["Man", "Woman"]}', "field 'answer' is missing"),
    ('{"response": "yes", "options": [], "answer": 1}', "field 'answer' should be the answer text"),
    ('{"response": "B", "options": ["Man", "Woman"], "answer": 1, "category": ["sound"]}',
     "field 'category' should be text"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(PREDICTIONS[0]) + "\n\n" + line + "\n")
    with pytest.raises(ValueError) as err:
        score_predictions(path, similarity_threshold=None)
    assert f"{path}, line 3: {message}" in str(err.value)


def test_scorer_and_file_errors(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PREDICTIONS, blank_line=False)
    with pytest.raises(ValueError, match="unknown scorer 'exact'"):
        score_predictions(path, scorer="exact")
    with pytest.raises(ValueError, match=r"p.jsonl, line 5: field 'options' is empty, and the mmau scorer"):
        score_predictions(path, scorer="mmau", similarity_threshold=None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no predictions to score"):
        score_predictions(empty)
    out = tmp_path / "RESULT.json"
    with pytest.raises(ValueError):
        score_file(empty, out)
    assert not out.exists()
