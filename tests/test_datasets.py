"""Readers on fixtures that mirror the real schemas and their traps (docs/architecture.md), and on the
real metadata files in ../shared/data when they are present."""

import json
from collections import Counter

import pytest

from sightsound import datasets
from sightsound.config import ConfigError
from sightsound.datasets import avqa, music_avqa
from sightsound.datasets.reading import DatasetError, Entry, Skip
from tests.conftest import SHARED_DATA, write_json

AVQA_RECORD = {"id": 183, "video_name": "-HG3Omg_89c_000030", "video_id": 341,
               "question_text": "What is the man in the video doing?",
               "multi_choice": ["Playing guitar", "Singing", "Cooking", "Driving"], "answer": 1,
               "question_relation": "Both", "question_type": "Happening"}


def split_entries(metadata):
    entries = list(metadata.entries)
    return [e for e in entries if isinstance(e, Entry)], [e for e in entries if isinstance(e, Skip)]


def test_avqa_fields_and_stems(tmp_path):
    records = [AVQA_RECORD,
               {**AVQA_RECORD, "id": 184, "answer": 4},
               {k: v for k, v in AVQA_RECORD.items() if k != "multi_choice"} | {"id": 185},
               {**AVQA_RECORD, "id": 186, "answer": "1"}]
    write_json(tmp_path / "val_qa.json", records)
    ok, skipped = split_entries(datasets.read("avqa", tmp_path, "val"))
    (entry,) = ok
    s = entry.sample
    assert (s.id, s.dataset, s.split, s.answer, s.answer_text, s.category) == \
        ("183", "avqa", "val", 1, "Singing", "Happening")
    assert s.question == "What is the man in the video doing?"  # kept as written
    assert s.meta == {"video_name": "-HG3Omg_89c_000030", "video_id": 341, "question_relation": "Both"}
    assert entry.stems == ["-HG3Omg_89c_000030", "-HG3Omg_89c_30"]
    reasons = {s.id: s.reason for s in skipped}
    assert "val_qa.json record 1 (id 184): field 'answer' = 4 is out of range" in reasons["184"]
    assert "val_qa.json record 2 (id 185): missing field 'multi_choice'" in reasons["185"]
    assert "field 'answer' should be int" in reasons["186"]


def test_avqa_stems_keep_odd_names():
    assert avqa.clip_stems("abc_000000") == ["abc_000000", "abc_0"]
    assert avqa.clip_stems("a_b_12") == ["a_b_12"]
    assert avqa.clip_stems("noseconds") == ["noseconds"]


def test_metadata_file_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="train_qa.json: metadata file not found"):
        datasets.read("avqa", tmp_path, "train")
    (tmp_path / "mmau-test-mini.json").write_text("{not json")
    with pytest.raises(DatasetError, match="mmau-test-mini.json: not valid JSON"):
        datasets.read("mmau", tmp_path)
    write_json(tmp_path / "avqa-test.json", {"records": []})
    with pytest.raises(DatasetError, match="avqa-test.json: expected a JSON list"):
        datasets.read("music-avqa", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'vggsound'"):
        datasets.read("vggsound", tmp_path)


MMAU_RECORD = {"id": "3fe64f3d", "audio_id": "./test-mini-audios/3fe64f3d.wav",
               "question": "Based on the given audio, identify the source of the speaking voice.",
               "choices": ["Man", "Woman", "Child", "Robot"], "answer": "Man", "dataset": "AudioSet",
               "task": "sound", "split": "test-mini", "category": "Reasoning",
               "sub-category": "Acoustic Source Inference", "difficulty": "medium"}


def read_fixture(tmp_path, name: str, dataset: str, records: list) -> tuple[dict, dict]:
    """Write `records` as the dataset's metadata file and read it: (entries by id, skip reasons by id)."""
    write_json(tmp_path / name, records)
    ok, skipped = split_entries(datasets.read(dataset, tmp_path))
    return {e.sample.id: e for e in ok}, {s.id: s.reason for s in skipped}


MMAR_RECORD = {"id": "mmar-0001", "audio_path": "./audio/mmar-0001.wav",
               "question": "What is the most likely reason the crowd cheers?", "choices": ["A goal", "A song ends"],
               "answer": "A goal", "modality": "mix-sound-speech", "category": "Semantic Layer",
               "sub-category": "Event reasoning", "language": "en", "source": "YouTube",
               "url": "https://www.youtube.com/watch?v=x", "timestamp": "00:01:02-00:01:12"}


def test_mmar_traps(tmp_path):
    records = [MMAR_RECORD,
               {**MMAR_RECORD, "id": "spaced", "modality": "music", "choices": ["Piano ", "Violin"], "answer": "piano"},
               {**MMAR_RECORD, "id": "unmatched", "answer": "A goal was scored"},
               {**MMAR_RECORD, "id": "one", "choices": ["Only"], "answer": "Only"},
               {**MMAR_RECORD, "id": "noaudio", "audio_path": None}]
    by_id, reasons = read_fixture(tmp_path, "MMAR-meta.json", "mmar", records)
    first = by_id["mmar-0001"]
    assert (first.sample.answer, first.sample.category, first.stems) == (0, "mix-sound-speech", ["mmar-0001"])
    assert first.sample.meta["category"] == "Semantic Layer" and first.sample.meta["language"] == "en"
    assert by_id["spaced"].sample.answer == 0 and by_id["spaced"].sample.category == "music"
    assert set(reasons) == {"unmatched", "one", "noaudio"}
    assert "MMAR-meta.json record 2 (id unmatched): field 'answer' 'A goal was scored' is not one of the choices" \
        in reasons["unmatched"]
    assert "'choices'" in reasons["one"] and "'audio_path'" in reasons["noaudio"]
    assert list(datasets.BENCHMARKS["mmar"].columns)[:3] == ["sound", "music", "speech"]
    assert "mix-sound-speech" in datasets.BENCHMARKS["mmar"].columns  # the mixes are columns of their own


def test_mmau_test_set_has_no_answers_and_is_read_unlabelled(tmp_path):
    records = [{**MMAU_RECORD, "audio_id": "./test-audios/3fe64f3d.wav", "split": "test", "answer": ""},
               {**MMAU_RECORD, "id": "typo", "answer": "Alien"}]
    write_json(tmp_path / "mmau-test.json", records)
    ok, skipped = split_entries(datasets.read("mmau", tmp_path, "test"))
    by_id, reasons = {e.sample.id: e for e in ok}, {s.id: s.reason for s in skipped}
    sample = by_id["3fe64f3d"].sample
    assert (sample.answer, sample.answer_text, sample.options[0]) == (None, "", "Man")
    assert "duplicate_answer_indices" not in sample.meta
    assert "not one of the choices" in reasons["typo"]  # a wrong answer is still an error, not "unlabelled"


MMAU_PRO_ROW = {"id": "p1", "audio_path": ["data/p1.wav"], "question": "What is being prepared in the audio?",
                "choices": ["Boba tea", "Milk", "Coffee"], "answer": "Boba tea", "category": "sound",
                "perceptual_skills": ["Acoustic Source Characterization"], "reasoning_skills": ["Procedural Reasoning"],
                "length_type": "medium", "transcription": None, "task_identifier": None, "kwargs": None}


def write_parquet(path, rows: list[dict]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_mmau_pro_traps(tmp_path):
    rows = [MMAU_PRO_ROW,
            {**MMAU_PRO_ROW, "id": "open", "category": "open", "choices": None, "answer": "They are cooking pasta."},
            {**MMAU_PRO_ROW, "id": "multi", "category": "multi", "audio_path": ["data/a.wav", "data/b.wav"]},
            {**MMAU_PRO_ROW, "id": "if", "category": "instruction following", "choices": None, "answer": "",
             "task_identifier": "Include Keywords"},
            {**MMAU_PRO_ROW, "id": "one", "choices": ["Milk"], "answer": "Milk"},
            {**MMAU_PRO_ROW, "id": "off", "answer": "Green tea"},
            {**MMAU_PRO_ROW, "id": "music", "category": "music", "choices": ["Jazz", "Rock"], "answer": "rock "}]
    write_parquet(tmp_path / "test.parquet", rows)
    ok, skipped = split_entries(datasets.read("mmau-pro", tmp_path))
    by_id, reasons = {e.sample.id: e for e in ok}, {s.id: s.reason for s in skipped}
    first = by_id["p1"]
    assert (first.sample.answer, first.sample.category, first.stems) == (0, "sound", ["p1"])
    assert first.sample.meta["perceptual_skills"] == ["Acoustic Source Characterization"]
    opened = by_id["open"].sample
    assert (opened.options, opened.answer, opened.answer_text) == ([], None, "They are cooking pasta.")
    assert by_id["music"].sample.answer == 1
    assert set(reasons) == {"multi", "if", "one", "off"}
    assert "test.parquet record 2 (id multi): field 'audio_path' names 2 clips" in reasons["multi"]
    assert "rule checks" in reasons["if"] and "'choices'" in reasons["one"]
    assert "field 'answer' 'Green tea' is not one of the choices" in reasons["off"]
    assert datasets.BENCHMARKS["mmau-pro"].scorer == "mmau-pro"


def test_mmau_pro_unreadable_parquet_names_the_file(tmp_path):
    (tmp_path / "test.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="test.parquet: not a readable Parquet file"):
        datasets.read("mmau-pro", tmp_path)


def wav_bytes(seconds: float = 0.5, freq: float = 440.0) -> bytes:
    import io

    import soundfile as sf

    from tests.conftest import tone

    buffer = io.BytesIO()
    sf.write(buffer, tone(freq, seconds, 16_000, 1).T, 16_000, format="WAV")
    return buffer.getvalue()


def save_hf_dataset(folder, splits: dict[str, list[dict]], audio: str = "audio"):
    """A DatasetDict saved with save_to_disk, its audio column an `Audio` feature holding the clip's
    bytes (built as Arrow structs and cast: `datasets` encodes arrays only through torchcodec)."""
    from datasets import Audio, Dataset, DatasetDict

    parts = {}
    for split, rows in splits.items():
        parts[split] = Dataset.from_list(rows).cast_column(audio, Audio())
    DatasetDict(parts).save_to_disk(str(folder))
    return folder


def hf_rows():
    clip = {"bytes": wav_bytes(), "path": "tone.wav"}
    return [{"id": "h0", "question": "What plays?", "choices": ["piano", "drum"], "answer": "drum", "category": "music",
             "audio": clip, "source": "x"},
            {"id": "h1", "question": "What plays?", "choices": ["piano", "drum"], "answer": "Piano", "category": "music",
             "audio": clip, "source": "y"},
            {"id": None, "question": "Describe it.", "choices": None, "answer": "a low hum", "category": None,
             "audio": {"bytes": wav_bytes(freq=200.0), "path": None}, "source": "z"},
            {"id": "bad", "question": "What plays?", "choices": ["piano", "drum"], "answer": "flute", "category": "music",
             "audio": clip, "source": "w"},
            {"id": "corrupt", "question": "What plays?", "choices": ["piano", "drum"], "answer": "piano", "category": "music",
             "audio": {"bytes": b"not audio at all", "path": "bad.wav"}, "source": "v"}]


def test_hf_reader_reads_a_saved_dataset_dict(tmp_path):
    folder = save_hf_dataset(tmp_path / "ds", {"test": hf_rows(), "train": hf_rows()[:1]})
    metadata = datasets.read("hf", folder, "test")
    ok, skipped = split_entries(metadata)
    by_id = {e.sample.id: e for e in ok}
    assert set(by_id) == {"h0", "h1", "test-2", "corrupt"}  # corrupt bytes are prepare's to find
    assert (by_id["h0"].sample.answer, by_id["h1"].sample.answer) == (1, 0)  # text, then ignoring case
    assert by_id["h0"].sample.meta == {"source": "x"} and by_id["h0"].audio_bytes.startswith(b"RIFF")
    opened = by_id["test-2"].sample
    assert (opened.options, opened.answer_text, opened.category) == ([], "a low hum", "all")
    assert [s.id for s in skipped] == ["bad"] and "ds[test] row 3 (id bad): field 'answer'" in skipped[0].reason
    assert metadata.files and all(f.suffix == ".arrow" for f in metadata.files)
    with pytest.raises(DatasetError, match="no split 'val' \\(has: test, train\\)"):
        datasets.read("hf", folder, "val")


def test_hf_reader_column_names_and_errors(tmp_path):
    rows = [{"qid": 7, "prompt": "What plays?", "options": '["piano", "drum"]', "label": 1,  # choices as JSON text,
             "clip": {"bytes": wav_bytes(), "path": None}}]                                    # the answer an index
    folder = save_hf_dataset(tmp_path / "renamed", {"test": rows}, audio="clip")
    with pytest.raises(DatasetError, match="no column 'question'"):
        datasets.read("hf", folder, "test")
    columns = {"id": "qid", "question": "prompt", "answer": "label"}
    ok, _ = split_entries(datasets.read("hf", folder, "test", columns))
    assert [(e.sample.id, e.sample.question, e.sample.options, e.sample.answer) for e in ok] == \
        [("7", "What plays?", ["piano", "drum"], 1)]
    with pytest.raises(DatasetError, match="unknown field"):
        datasets.read("hf", folder, "test", {"questoin": "prompt"})
    with pytest.raises(ConfigError, match="only the hf reader takes column names"):
        datasets.read("mmau", folder, "test", columns)
    with pytest.raises(DatasetError, match="not a dataset saved with save_to_disk"):
        datasets.read("hf", tmp_path, "test")


def test_mmau_traps(tmp_path):
    records = [
        MMAU_RECORD,
        {**MMAU_RECORD, "id": "dup", "task": "speech", "category": ["Reasoning"],
         "choices": ["four", "nine", "fourteen", "fourteen"], "answer": "fourteen"},
        {**MMAU_RECORD, "id": "space", "task": "music",
         "choices": [" Second speaker's claim.", " First speaker's opinion."], "answer": " First speaker's opinion."},
        {**MMAU_RECORD, "id": "eight", "choices": list("abcdefgh"), "answer": "h"},
        {**MMAU_RECORD, "id": "case", "choices": ["Dog", "Cat"], "answer": "cat "},
        {**MMAU_RECORD, "id": "missing", "answer": "Alien"},
        {**MMAU_RECORD, "id": "nine", "choices": list("abcdefghi"), "answer": "a"},
    ]
    by_id, reasons = read_fixture(tmp_path, "mmau-test-mini.json", "mmau", records)
    first = by_id["3fe64f3d"]
    assert (first.sample.answer, first.sample.category, first.stems) == (0, "sound", ["3fe64f3d"])
    assert first.sample.meta["category"] == "Reasoning" and first.sample.meta["difficulty"] == "medium"
    dup = by_id["dup"].sample
    assert dup.answer == 2 and dup.meta["duplicate_answer_indices"] == [2, 3]
    assert dup.meta["category"] == "Reasoning"  # a list in the source, a string here
    assert by_id["space"].sample.answer == 1 and by_id["space"].sample.options[1].startswith(" ")
    assert by_id["eight"].sample.answer == 7
    assert by_id["case"].sample.answer == 1
    assert "field 'answer' 'Alien' is not one of the choices" in reasons["missing"]
    assert "2 to 8 strings" in reasons["nine"]


MUSIC_RECORDS = [
    {"video_id": "00000093", "question_id": 12, "type": "[\"Audio\", \"Counting\"]",
     "question_content": "How many musical instruments were heard throughout the video?",
     "templ_values": "[]", "question_deleted": 0, "anser": "one"},
    {"video_id": "00005868", "question_id": 40, "type": "[\"Audio-Visual\", \"Temporal\"]",
     "question_content": "Where is the <FL> sounding instrument?", "templ_values": "[\"first\"]",
     "question_deleted": 0, "anser": "left"},
    {"video_id": "00005868", "question_id": 41, "type": "[\"Audio-Visual\", \"Comparative\"]",
     "question_content": "Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?",
     "templ_values": "[\"acoustic_guitar\", \"left\", \"piano\", \"right\"]", "question_deleted": 0,
     "anser": "no"},
    {"video_id": "00000001", "question_id": 42, "type": "[\"Visual\", \"Location\"]",
     "question_content": "Where is the <Object>?", "templ_values": "[]", "question_deleted": 0, "anser": "left"},
    {"video_id": "00000001", "question_id": 43, "type": "Audio, Counting",
     "question_content": "How many?", "templ_values": "[]", "question_deleted": 0, "anser": "two"},
]


def test_music_avqa_json_strings_and_placeholders(tmp_path):
    write_json(tmp_path / "avqa-test.json", MUSIC_RECORDS)
    ok, skipped = split_entries(datasets.read("music-avqa", tmp_path))
    by_id = {e.sample.id: e.sample for e in ok}
    count = by_id["12"]
    assert (count.options, count.answer, count.answer_text, count.category) == ([], None, "one", "Counting")
    assert count.meta["modality"] == "Audio" and count.meta["video_id"] == "00000093"
    assert by_id["40"].question == "Where is the first sounding instrument?"
    assert by_id["41"].question == "Is the acoustic guitar on the left more rhythmic than the piano on the right?"
    assert by_id["41"].meta["question_template"].startswith("Is the <Object>")
    assert by_id["41"].category == "Comparative" and by_id["41"].meta["modality"] == "Audio-Visual"
    assert [e.stems for e in ok if e.sample.id == "40"] == [["00005868"]]
    reasons = {s.id: s.reason for s in skipped}
    assert "1 placeholders" in reasons["42"] and "'templ_values'" in reasons["42"]
    assert "field 'type' is not a JSON string" in reasons["43"]


def test_jsonl_reads_canonical_records(tmp_path):
    lines = [
        {"id": "a", "question": "Which animal?", "options": ["dog", "cat"], "answer": 1, "audio": "clips/a.wav",
         "category": "animals", "meta": {"source": "mine"}},
        {"id": "b", "question": "What plays?", "answer_text": "piano", "video": "b"},
        {"id": "c", "question": "No media?", "answer_text": "x"},
        {"id": "d", "question": "Bad index", "options": ["x", "y"], "answer": 3, "audio": "d"},
    ]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    ok, skipped = split_entries(datasets.read("jsonl", tmp_path))
    a, b = ok
    assert (a.sample.answer_text, a.sample.category, a.sample.meta) == ("cat", "animals", {"source": "mine"})
    assert a.stems == [str(tmp_path / "clips" / "a.wav")]  # an existing relative path resolves
    assert (b.sample.options, b.sample.answer, b.stems) == ([], None, ["b"])
    reasons = [s.reason for s in skipped]
    assert any("line 3 (id c): missing field 'audio' or 'video'" in r for r in reasons)
    assert any("line 4 (id d): field 'answer'" in r for r in reasons)
    assert any("line 5: not valid JSON" in r for r in reasons)


def test_wrong_types_are_skipped_naming_file_record_and_field(tmp_path):
    write_json(tmp_path / "val_qa.json", [{**AVQA_RECORD, "id": 1, "multi_choice": ["only one"], "answer": 0},
                                          {**AVQA_RECORD, "id": 2, "question_text": ["a", "list"]}])
    _, skipped = split_entries(datasets.read("avqa", tmp_path))
    reasons = {s.id: s.reason for s in skipped}
    assert "val_qa.json record 0 (id 1): field 'multi_choice' should be a list of at least 2" in reasons["1"]
    assert "val_qa.json record 1 (id 2): field 'question_text' should be str" in reasons["2"]

    music = [{**MUSIC_RECORDS[0], "question_id": 1, "type": json.dumps(["Audio", 3])},
             {**MUSIC_RECORDS[1], "question_id": 2, "templ_values": json.dumps("first")}]
    write_json(tmp_path / "avqa-test.json", music)
    _, skipped = split_entries(datasets.read("music-avqa", tmp_path))
    reasons = {s.id: s.reason for s in skipped}
    assert "(question_id 1): field 'type' should encode [modality, question type]" in reasons["1"]
    assert "(question_id 2): field 'templ_values' should encode a list of words" in reasons["2"]

    lines = [{"id": "a", "question": "q", "options": ["x"], "answer": 0, "audio": "a"},
             {"id": "b", "question": "q", "options": ["x", "y"], "answer": 0, "audio": "b", "category": ["c"]},
             {"id": "c", "question": "q", "answer_text": ["two"], "audio": "c"},
             {"id": "d", "question": "q", "answer_text": "two", "audio": "d", "meta": "m"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "[" * 100_000 + "\n")
    ok, skipped = split_entries(datasets.read("jsonl", tmp_path))
    reasons = {s.id: s.reason for s in skipped}
    assert not ok and set(reasons) == {"a", "b", "c", "d", "line 5"}
    assert "line 1 (id a): field 'options' should be a list of at least 2" in reasons["a"]
    assert "line 2 (id b): field 'category' should be a string" in reasons["b"]
    assert "line 3 (id c): field 'answer_text' should be a string" in reasons["c"]
    assert "line 4 (id d): field 'meta' should be an object" in reasons["d"]
    assert "line 5: " in reasons["line 5"]


def test_unreadable_metadata_files_are_errors_naming_the_file(tmp_path):
    (tmp_path / "val_qa.json").write_bytes(b'[{"id": 1, "question_text": "caf\xe9"}]')
    with pytest.raises(DatasetError, match="val_qa.json: not UTF-8 text"):
        datasets.read("avqa", tmp_path)
    (tmp_path / "test.jsonl").write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DatasetError, match="test.jsonl: not UTF-8 text"):
        datasets.read("jsonl", tmp_path)
    (tmp_path / "mmau-test-mini.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="mmau-test-mini.json: JSON nested too deeply"):
        datasets.read("mmau", tmp_path)


def test_synth_reader_attaches_facts(world):
    ok, skipped = split_entries(datasets.read("synth", world, "train"))
    assert ok and not skipped
    sample = ok[0].sample
    assert sample.dataset == "synth" and sample.meta["facts"]["video_name"] == sample.meta["video_name"]


# --- the real metadata files (present beside the repository in this project's workspace) -------

needs_real = pytest.mark.skipif(not (SHARED_DATA / "mmau-test-mini.json").exists(),
                                reason="real metadata not present")


@needs_real
def test_real_mmau_test_mini():
    ok, skipped = split_entries(datasets.read("mmau", SHARED_DATA, "test-mini"))
    assert len(ok) == 1000 and not skipped
    assert Counter(e.sample.category for e in ok) == {"sound": 333, "speech": 333, "music": 334}
    assert all(e.sample.options[e.sample.answer] == e.sample.answer_text for e in ok)
    assert sum(len(e.sample.meta["duplicate_answer_indices"]) > 1 for e in ok) >= 1
    assert all(isinstance(e.sample.meta["category"], str) for e in ok)
    assert max(len(e.sample.options) for e in ok) == 8


@needs_real
def test_real_music_avqa_test():
    ok, skipped = split_entries(datasets.read("music-avqa", SHARED_DATA, "test"))
    assert len(ok) == 9129 and not skipped
    assert not any("<" in e.sample.question for e in ok)
    assert set(e.sample.category for e in ok) == {"Counting", "Comparative", "Existential", "Temporal", "Location"}
    assert set(e.sample.meta["modality"] for e in ok) == {"Audio", "Visual", "Audio-Visual"}
    assert len({e.sample.answer_text for e in ok}) <= 42


def test_music_avqa_template_filling_checks_counts():
    assert music_avqa.fill_template("<Object> and <LR>", ["drum", "left"]) == "drum and left"
    with pytest.raises(ValueError, match="2 placeholders"):
        music_avqa.fill_template("<Object> and <LR>", ["drum"])


def test_mmau_answer_index_prefers_exact_first_match():
    from sightsound.answers import option_index

    assert option_index("fourteen", ["four", "fourteen", "fourteen"]) == 1
    assert option_index("Four", ["four", "Four"]) == 1
    with pytest.raises(ValueError):
        option_index("five", ["four"])
