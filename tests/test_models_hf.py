"""The local backend on tiny instances of the real Qwen classes, loaded from saved HF folders."""

import json

import numpy as np
import pytest

from sightsound.models import ModelConfig, Request, Sampling, load_backend
from sightsound.models.hf import HFBackend
from tests.conftest import make_wav


def audio_request(i, path, text="What makes the sound?"):
    return Request(str(i), [{"role": "user", "content": [{"type": "audio", "path": str(path)},
                                                         {"type": "text", "text": text}]}])


def video_request(i, frames, text="Which object is sounding?"):
    return Request(str(i), [{"role": "user", "content": [{"type": "video", "frames": frames},
                                                         {"type": "text", "text": text}]}])


@pytest.fixture(scope="module")
def student(tiny_models):
    return load_backend(ModelConfig(model=str(tiny_models["student"]), batch_size=4))


@pytest.fixture(scope="module")
def teacher(tiny_models):
    return load_backend(ModelConfig(model=str(tiny_models["teacher"]), batch_size=4))


def test_saved_folders_are_ordinary_checkpoints(tiny_models):
    for role, model_type in (("student", "qwen2_audio"), ("teacher", "qwen2_5_vl"),
                             ("omni", "qwen2_5_omni_thinker")):
        folder = tiny_models[role]
        assert json.loads((folder / "config.json").read_text())["model_type"] == model_type
        assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def test_student_hears_audio_and_samples_n(student, tmp_path):
    assert type(student.model).__name__ == "Qwen2AudioForConditionalGeneration"
    wav = make_wav(tmp_path / "a.wav", seconds=1.0, rate=16_000)
    [gen] = student.generate([audio_request(0, wav)], Sampling(n=3, temperature=1.0, max_new_tokens=6))
    assert gen.error is None and len(gen.texts) == 3
    inputs = student.encode([audio_request(0, wav).messages])
    audio_id = student.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert int((inputs["input_ids"] == audio_id).sum()) == 25  # 1 s of audio → 25 audio tokens
    assert inputs["input_features"].shape[0] == 1


def test_a_narrower_audio_tower_is_a_student_of_its_own_that_still_hears(tmp_path):
    from sightsound.models import tiny

    folder = tiny.build_student(tmp_path / "narrow", tiny.build_tokenizer(), seed=0,
                                audio={"d_model": 8, "encoder_ffn_dim": 16})
    audio = json.loads((folder / "config.json").read_text())["audio_config"]
    assert (audio["d_model"], audio["encoder_ffn_dim"]) == (8, 16)
    assert audio["encoder_layers"] == tiny.AUDIO["encoder_layers"]  # the rest as tiny.AUDIO
    narrow = load_backend(ModelConfig(model=str(folder), batch_size=2))
    assert narrow.model.config.audio_config.d_model == 8  # loaded back at its own width
    wav = make_wav(tmp_path / "a.wav", seconds=1.0, rate=16_000)
    [gen] = narrow.generate([audio_request(0, wav)], Sampling(n=1, temperature=0.0, max_new_tokens=4))
    assert gen.error is None and len(gen.texts) == 1


def test_teacher_takes_frames_as_images_without_torchvision(teacher):
    assert type(teacher.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    frames = np.random.default_rng(0).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    inputs = teacher.encode([video_request(0, frames).messages])
    image_id = teacher.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert teacher.frames_as == "images"
    assert int((inputs["input_ids"] == image_id).sum()) == 4 * 4  # 56 px → 4x4 patches → 2x2 merged, 4 frames
    assert inputs["mm_token_type_ids"].sum() == 16 and inputs["image_grid_thw"].tolist() == [[1, 4, 4]] * 4
    [gen] = teacher.generate([video_request(0, frames)], Sampling(n=2, temperature=1.0, max_new_tokens=6))
    assert gen.error is None and len(gen.texts) == 2


@pytest.fixture(scope="module")
def omni(tiny_models):
    return load_backend(ModelConfig(model=str(tiny_models["omni"]), batch_size=4))


def test_omni_thinker_takes_audio_video_or_both_and_batches_like_singles(omni, tmp_path):
    assert type(omni.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    rng = np.random.default_rng(2)
    wav = make_wav(tmp_path / "a.wav", seconds=1.0, rate=16_000)
    frames = rng.integers(0, 255, (2, 56, 56, 3), dtype=np.uint8)
    audio_part, video_part = {"type": "audio", "path": str(wav)}, {"type": "video", "frames": frames}
    requests = [Request(name, [{"role": "user", "content": parts + [{"type": "text", "text": name}]}])
                for name, parts in (("audio", [audio_part]), ("video", [video_part]),
                                    ("both", [video_part, audio_part]))]
    inputs = omni.encode([requests[2].messages])
    ids = omni.tokenizer.convert_tokens_to_ids
    assert int((inputs["input_ids"] == ids("<|AUDIO|>")).sum()) == 25
    assert int((inputs["input_ids"] == ids("<|IMAGE|>")).sum()) == 2 * 4
    greedy = Sampling(n=1, temperature=0, max_new_tokens=8)
    batched = omni.generate(requests, greedy)
    assert all(g.error is None and g.texts for g in batched)
    assert [g.texts for g in batched] == [omni.generate([r], greedy)[0].texts for r in requests]


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_batch_of_four_equals_four_singles_greedy(role, student, teacher, tmp_path):
    rng = np.random.default_rng(1)
    if role == "student":
        backend = student
        requests = [audio_request(i, make_wav(tmp_path / f"{i}.wav", seconds=0.5 + 0.4 * i, freq=200 + 300 * i,
                                              rate=16_000), "What sounds? " * (i + 1)) for i in range(4)]
    else:
        backend = teacher
        requests = [video_request(i, rng.integers(0, 255, (2 + 2 * (i % 2), 56, 56, 3), dtype=np.uint8),
                                  "Which? " * (i + 1)) for i in range(4)]
    greedy = Sampling(n=1, temperature=0, max_new_tokens=10)
    batched = [g.texts for g in backend.generate(requests, greedy)]
    singles = [backend.generate([r], greedy)[0].texts for r in requests]
    assert batched == singles
    assert len({t[0] for t in batched}) > 1, "inputs differ, so should (untrained) outputs"


def test_same_seed_same_samples(student, tmp_path):
    wav = make_wav(tmp_path / "a.wav", rate=16_000)
    sampling = Sampling(n=2, temperature=1.0, max_new_tokens=8, seed=5)
    first = student.generate([audio_request(0, wav)], sampling)[0].texts
    assert student.generate([audio_request(0, wav)], sampling)[0].texts == first


def test_a_bad_request_is_recorded_and_the_rest_of_the_batch_answers(student, tmp_path):
    wav = make_wav(tmp_path / "a.wav", rate=16_000)
    requests = [audio_request(0, wav), audio_request(1, tmp_path / "missing.wav"), audio_request(2, wav)]
    gens = student.generate(requests, Sampling(n=1, temperature=0, max_new_tokens=4))
    assert [g.request_id for g in gens] == ["0", "1", "2"]
    assert gens[0].texts and gens[2].texts and not gens[1].texts
    assert "missing.wav" in gens[1].error


def test_yes_probability_is_a_probability(student, tmp_path):
    wav = make_wav(tmp_path / "a.wav", rate=16_000)
    scores = student.yes_probability([audio_request(0, wav, "Is it a flute? Answer yes or no.")])
    assert 0.0 < scores[0] < 1.0


def test_unsupported_checkpoint_is_a_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        HFBackend(ModelConfig(model=str(tmp_path)))


def test_a_local_model_is_named_by_its_absolute_path_and_found_beside_a_moved_folder(tmp_path, monkeypatch):
    from sightsound.models.loading import local_path

    (tmp_path / "models" / "student").mkdir(parents=True)
    (tmp_path / "run" / "sft").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert local_path("models/student") == str(tmp_path / "models" / "student")  # what an adapter saves as its base
    assert local_path("../../models/student", tmp_path / "run" / "sft") == str(tmp_path / "models" / "student")
    assert local_path("Qwen/Qwen2-Audio-7B-Instruct") == "Qwen/Qwen2-Audio-7B-Instruct"  # a hub id
