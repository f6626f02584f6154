"""Tiny instances of the real Qwen classes, for tests and the CPU demo.

    sightsound tiny-models --out runs/tiny        # → runs/tiny/{teacher,student,omni}/

Each folder is an ordinary Hugging Face checkpoint (config, safetensors, tokenizer, chat template,
feature extractor / image processor config), loaded back by exactly the code a user's real
checkpoint goes through (`sightsound.models.hf`). The tokenizer is a byte-level BPE trained here
on the synthetic world's vocabulary, carrying Qwen's special tokens; the chat template renders
messages the way Qwen2-Audio's and Qwen2.5-VL's do.

Sizes follow what trains in minutes on 2 CPU cores (text hidden 128, 4 layers). The audio window
is the clip, not Whisper's 30 s (feature extractor `chunk_length=2`, encoder
`max_source_positions=100`): with the default window, training runs several times slower.
"""

from __future__ import annotations

import copy
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",  # Qwen2-Audio; Omni uses the same <|AUDIO|>
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",  # Qwen2.5-Omni
]


def chat_template(audio: str, image: str, video: str) -> str:
    """Qwen's chat format: each audio, image and video part becomes its model's placeholder span."""
    return (
        "{% set audio_count = namespace(value=0) %}"
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'audio' %}{% set audio_count.value = audio_count.value + 1 %}" + audio +
        "{% elif content['type'] == 'image' %}" + image +
        "{% elif content['type'] == 'video' %}" + video +
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


# Qwen2-Audio's "Audio N: ..." line and Qwen2.5-VL's vision spans; Qwen2.5-Omni's own spans.
CHAT_TEMPLATE = chat_template("Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n",
                              "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>")
OMNI_CHAT_TEMPLATE = chat_template("<|audio_bos|><|AUDIO|><|audio_eos|>", "<|vision_bos|><|IMAGE|><|vision_eos|>",
                                   "<|vision_bos|><|VIDEO|><|vision_eos|>")
MROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]}  # sums to head_dim / 2

TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
            initializer_range=0.1)  # wider than the default 0.02, so an untrained model still varies its output
# The teacher's decoder has 2 of those layers: its steps are most of the demo's bootstrap, and on the
# demo's world (600 steps, same seed) 2 layers reached 75% held out with 86% of its reasoning exact
# in 214 s, where 4 layers reached 67% and 73% in about 400 s (the vision tower does the looking).
TEACHER_LAYERS = 2


# The tiny encoders: a Whisper-style audio encoder over a 2 s window, a 2-block vision tower.
AUDIO = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
             max_source_positions=100)
VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=TEXT["hidden_size"],
              patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])


# The words of the synthetic world (its sources, counts and screen positions; tests check that they
# cover sightsound.datasets.synth.world), so that the tokenizer gives each of them few tokens.
WORDS = ["flute", "violin", "drum", "bell", "horn", "bird", "one", "two", "three", "four", "left", "middle", "right",
         "yes", "no", "louder", "first", "high", "low", "note"]


def corpus() -> list[str]:
    """Text the tokenizer learns from: the prompts, tags, options and words of the synthetic world."""
    from sightsound import prompts

    lines = [prompts.TEACHER_PROMPT, prompts.STUDENT_PROMPT, prompts.CHECKER_PROMPT,
             "You are a helpful assistant.", "Which object is making a sound in the video?",
             "How many sound sources can be heard in the video?", "Which sound starts first in the video?",
             "Is the flute playing a high or a low note?", "Is the drum louder than the bell in this video?",
             "<think>I see the flute pulse, so it sounds.</think><answer>B</answer>",
             " ".join(f"{c}. {w}" for c, w in zip("ABCDEFGH", WORDS)), " ".join(WORDS), "0 1 2 3 4 5 6 7 8 9 10"]
    return lines * 20


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus(), trainer)
    tokenizer = Qwen2Tokenizer(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               unk_token=None, bos_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_student(out: Path, tokenizer, seed: int = 0, audio: dict | None = None) -> Path:
    """Qwen2-Audio: Whisper-style encoder (width 64, 2 layers; `audio` overrides `AUDIO`) + Qwen2 decoder."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    model = _init(Qwen2AudioForConditionalGeneration, Qwen2AudioConfig, tokenizer, seed,
                  audio_config={**AUDIO, **(audio or {})},
                  text_config=_text_config(tokenizer, model_type="qwen2"),
                  audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioProcessor(feature_extractor=_feature_extractor(), tokenizer=tokenizer,
                        chat_template=CHAT_TEMPLATE).save_pretrained(out)
    model.save_pretrained(out)
    return out


def build_teacher(out: Path, tokenizer, seed: int = 0) -> Path:
    """Qwen2.5-VL: a 2-block vision tower (width 64) + a 2-layer Qwen2 decoder with 3-D rotary positions."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    model = _init(Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, tokenizer, seed, vision_config=VISION,
                  text_config={**_text_config(tokenizer, rope_parameters=MROPE), "num_hidden_layers": TEACHER_LAYERS},
                  image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                  vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    # The image processor config names the class real checkpoints name; without torchvision,
    # transformers loads its PIL twin, as it does for a real checkpoint.
    _image_processor().save_pretrained(out)
    _edit_json(out / "preprocessor_config.json", image_processor_type="Qwen2VLImageProcessor",
               processor_class="Qwen2_5_VLProcessor")
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def build_omni(out: Path, tokenizer, seed: int = 0) -> Path:
    """Qwen2.5-Omni's thinker: audio encoder + vision tower + Qwen2 decoder (the talker is not needed)."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    model = _init(Qwen2_5OmniThinkerForConditionalGeneration, Qwen2_5OmniThinkerConfig, tokenizer, seed,
                  audio_config={**AUDIO, "n_window": 50, "output_dim": TEXT["hidden_size"]}, vision_config=VISION,
                  text_config=_text_config(tokenizer, rope_parameters=MROPE),
                  audio_token_index=ids("<|AUDIO|>"), image_token_index=ids("<|IMAGE|>"),
                  video_token_index=ids("<|VIDEO|>"), audio_start_token_id=ids("<|audio_bos|>"),
                  audio_end_token_id=ids("<|audio_eos|>"), vision_start_token_id=ids("<|vision_bos|>"),
                  vision_end_token_id=ids("<|vision_eos|>"),
                  initializer_range=TEXT["initializer_range"])  # the thinker initializes by its own, not its decoder's
    # Real Omni checkpoints keep the image processor's and the feature extractor's settings in one file.
    _image_processor().save_pretrained(out)
    features = {k: v for k, v in _feature_extractor().to_dict().items() if k != "mel_filters"}
    _edit_json(out / "preprocessor_config.json", **features, image_processor_type="Qwen2VLImageProcessor",
               processor_class="Qwen2_5OmniProcessor")
    omni_tokenizer = copy.deepcopy(tokenizer)
    omni_tokenizer.chat_template = OMNI_CHAT_TEMPLATE
    omni_tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def _init(model_class, config_class, tokenizer, seed: int, **config):
    """A freshly initialized model of `model_class`, seeded, with the tokenizer's special ids."""
    import torch

    torch.manual_seed(seed)
    model = model_class(config_class(**config))
    _set_special_ids(model, tokenizer)
    return model


def _image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                    temporal_patch_size=2)


def _feature_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, chunk_length=2, sampling_rate=16_000)


def _edit_json(path: Path, **changes) -> None:
    import json

    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def _text_config(tokenizer, **extra) -> dict:
    """The decoder's config, with the special token ids of our tokenizer (not Qwen's 151k vocab)."""
    return dict(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.pad_token_id, **TEXT, **extra)


def _set_special_ids(model, tokenizer) -> None:
    generation = model.generation_config
    generation.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    generation.pad_token_id = tokenizer.pad_token_id
    generation.bos_token_id = None


def build_all(out: str | Path, seed: int = 0, student_audio: dict | None = None) -> dict[str, Path]:
    out = Path(out)
    tokenizer = build_tokenizer()
    return {"teacher": build_teacher(out / "teacher", tokenizer, seed),
            "student": build_student(out / "student", tokenizer, seed, student_audio),
            "omni": build_omni(out / "omni", tokenizer, seed)}
