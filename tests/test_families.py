"""The model-family table: one entry is what loading, GRPO's suppressed tokens, the student's
shortcuts and the memory estimate know of a model_type."""

import dataclasses

import pytest

from sightsound.models.families import FAMILIES, family, placeholder_ids

# The placeholder tokens GRPO suppressed before the table existed, in that order.
PLACEHOLDERS = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
NEW_TYPE = "test_sound_lm"


def test_the_table_names_each_supported_type_once():
    assert list(FAMILIES) == ["qwen2_audio", "qwen2_5_vl", "qwen2_5_omni_thinker", "qwen2_5_omni", "qwen2"]
    assert all(f.model_type == key for key, f in FAMILIES.items())
    assert family("qwen2_5_omni").thinker and not family("qwen2_5_omni_thinker").thinker
    assert [t for t, f in FAMILIES.items() if f.grouped_attention] == ["qwen2_audio", "qwen2"]
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported .supported: qwen2_audio, qwen2_5_vl"):
        family("gpt2")


def test_placeholder_ids_are_every_familys_placeholders_the_tokenizer_has_in_order(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])  # it has every family's placeholders
    assert placeholder_ids(tokenizer) == tokenizer.convert_tokens_to_ids(PLACEHOLDERS)

    class WithoutAudio:  # a tokenizer lacking one of them
        def get_vocab(self):
            return {k: v for k, v in tokenizer.get_vocab().items() if k != "<|AUDIO|>"}

    assert placeholder_ids(WithoutAudio()) == tokenizer.convert_tokens_to_ids(PLACEHOLDERS[1:])


@pytest.fixture
def new_family(tiny_models, tmp_path, monkeypatch):
    """A checkpoint of a model_type no family has (the tiny student's weights under a config class
    registered as NEW_TYPE, its tokenizer with one more media token), and the ONE table entry that
    makes it supported: Qwen2-Audio's, under the new type, with the new token among its placeholders."""
    from transformers import AutoConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    class SoundConfig(Qwen2AudioConfig):
        model_type = NEW_TYPE

    AutoConfig.register(NEW_TYPE, SoundConfig, exist_ok=True)
    student = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_models["student"])
    settings = {k: v for k, v in student.config.to_dict().items() if k != "model_type"}
    model = Qwen2AudioForConditionalGeneration(SoundConfig.from_dict(settings))
    model.load_state_dict(student.state_dict())
    folder = tmp_path / "sound-lm"
    processor = Qwen2AudioProcessor.from_pretrained(tiny_models["student"])
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|SOUND|>"]})
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    assert NEW_TYPE not in FAMILIES
    entry = dataclasses.replace(FAMILIES["qwen2_audio"], model_type=NEW_TYPE,
                                placeholders=FAMILIES["qwen2_audio"].placeholders + ("<|SOUND|>",))
    monkeypatch.setitem(FAMILIES, NEW_TYPE, entry)
    return folder, student


def test_a_new_family_is_one_entry_loading_grpo_placeholders_and_the_memory_estimate(new_family, monkeypatch):
    import torch

    from sightsound.models.loading import load_model
    from sightsound.stages.grpo import GRPOConfig
    from sightsound.training import memory
    from sightsound.training.student import use_grouped_attention

    folder, student = new_family
    model, processor = load_model(folder)  # loading: the entry's architecture
    assert model.config.model_type == NEW_TYPE and type(model).__name__ == "Qwen2AudioForConditionalGeneration"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, student(input_ids=ids).logits)
    assert use_grouped_attention(model)  # the student's shortcuts: the entry's grouped_attention

    sound = processor.tokenizer.convert_tokens_to_ids("<|SOUND|>")  # GRPO never samples the new token
    assert placeholder_ids(processor.tokenizer) == processor.tokenizer.convert_tokens_to_ids(PLACEHOLDERS) + [sound]

    def grpo_estimate():
        return memory.stage_estimates("grpo", GRPOConfig(model=str(folder)), None, audio_seconds=2, prompt_tokens=20,
                                      response_tokens=8)

    result = grpo_estimate()  # the memory estimate: scoring grouped, as the entry says
    assert result["setup"].grouped and "each prompt once for its group" in memory.describe(result)
    assert result["counts"].total == sum(p.numel() for p in student.parameters())

    monkeypatch.delitem(FAMILIES, NEW_TYPE)  # without the entry: none of it
    with pytest.raises(ValueError, match=f"model_type '{NEW_TYPE}' is not supported"):
        load_model(folder)
    assert sound not in placeholder_ids(processor.tokenizer)
    assert not grpo_estimate()["setup"].grouped
