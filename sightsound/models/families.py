"""What each supported model family needs, in one table keyed by the checkpoint's `model_type`:
the class that loads it, the media placeholder tokens, how its processor is stood in for, how the
student trains it and where its audio encoder sits.

    fam = family("qwen2_audio")     # a Family; ValueError naming the supported types
    fam.architecture, fam.grouped_attention, fam.audio_tower.name
    placeholder_ids(tokenizer)      # every family's placeholders this tokenizer has (GRPO never samples them)

Loading (`models.loading`), training (`training.student`, `training.memory`), GRPO's suppressed
tokens and the trained verifier's audio encoder (`checking.encoders`) all read FAMILIES, so a new
family is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shim:
    """How `loading.ProcessorShim` stands in for a processor transformers cannot build (Qwen2.5-VL's
    and Qwen2.5-Omni's include a video processor, which needs torchvision): the placeholder repeated
    once per merged image patch, the one repeated once per audio frame (None: no audio, and no
    feature extractor is loaded), and whether the model wants `mm_token_type_ids` marking image tokens."""

    image_token: str
    audio_token: str | None
    token_types: bool


@dataclass(frozen=True)
class AudioTower:
    """The audio encoder inside a checkpoint (`module`.`name`), which the trained verifier loads alone.
    `packed`: it takes the valid frames of all clips end to end and its output width is the audio
    config's `output_dim` (Qwen2.5-Omni); otherwise it takes one padded row of mel features per clip
    and its width is `d_model` (Qwen2-Audio), so a group's repeated rows can be encoded once
    (`training.student.audio_encoded_once`)."""

    module: str
    name: str
    packed: bool


@dataclass(frozen=True)
class Family:
    """Everything the package needs to know of one `model_type`; the defaults are "no shortcut"."""

    model_type: str
    architecture: str | None  # the transformers class `load_model` builds; None: not loaded as a checkpoint
    placeholders: tuple[str, ...]  # media placeholder tokens, never sampled (GRPO suppresses them)
    shim: Shim | None = None  # None: no stand-in; the checkpoint's own processor must load
    thinker: bool = False  # a released Omni checkpoint: its `.thinker` is the model used (config: `thinker_config`)
    grouped_attention: bool = False  # scoring and rollouts compute each prompt once for its group (student)
    mask_positions: bool = False  # scoring one row per completion passes positions counted as generate() does
    audio_tower: AudioTower | None = None


_QWEN2_AUDIO_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
_OMNI_TOKENS = _QWEN2_AUDIO_TOKENS + ("<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>")
_OMNI_SHIM = Shim(image_token="<|IMAGE|>", audio_token="<|AUDIO|>", token_types=False)
_OMNI_TOWER = AudioTower("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni", "Qwen2_5OmniAudioEncoder",
                         packed=True)

# Qwen2.5-VL's and Qwen2.5-Omni's decoders compute their own 3-D rotary positions, which grouped
# rows and explicit positions would not give them. The plain Qwen2 decoder is no checkpoint we load:
# it is the text-only model grouped attention is tested and benchmarked on (scored one row per
# completion, under eager or FlashAttention-2, it keeps the positions its forward counts).
FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    Family("qwen2_audio", "Qwen2AudioForConditionalGeneration", _QWEN2_AUDIO_TOKENS,
           grouped_attention=True, mask_positions=True,
           audio_tower=AudioTower("transformers.models.qwen2_audio.modeling_qwen2_audio", "Qwen2AudioEncoder",
                                  packed=False)),
    Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration",
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"),
           shim=Shim(image_token="<|image_pad|>", audio_token=None, token_types=True)),
    Family("qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration", _OMNI_TOKENS, shim=_OMNI_SHIM,
           audio_tower=_OMNI_TOWER),
    Family("qwen2_5_omni", "Qwen2_5OmniForConditionalGeneration", _OMNI_TOKENS, shim=_OMNI_SHIM, thinker=True,
           audio_tower=_OMNI_TOWER),
    Family("qwen2", None, (), grouped_attention=True),
]}


def family(model_type: str) -> Family:
    """The family of a `model_type`; a ValueError naming the supported types when there is none."""
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported (supported: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def family_of(model_type: str) -> Family:
    """The family of a `model_type`, or, for one the table lacks, a family with none of the
    shortcuts (what training and the estimate may assume of any model)."""
    return FAMILIES.get(model_type) or Family(model_type, None, ())


def placeholder_ids(tokenizer) -> list[int]:
    """Ids of the multimodal placeholder tokens this tokenizer has: every family's, in table order,
    each once."""
    vocab = tokenizer.get_vocab()
    tokens = dict.fromkeys(t for f in FAMILIES.values() for t in f.placeholders)
    return [vocab[t] for t in tokens if t in vocab]
