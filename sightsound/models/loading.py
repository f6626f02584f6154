"""Loading a checkpoint and turning chat messages into model inputs: the one path inference
(`models.hf`) and training (`training.student`) both take.

    model, processor = load_model("runs/demo/sft/final", dtype="float32")   # full model or LoRA adapter
    inputs = encode(processor, batch, padding_side="left")   # chat template rendered, then tokens + audio/image features

The model class is chosen from the checkpoint's `model_type` (`families.FAMILIES`). A folder holding a
LoRA adapter (`adapter_config.json`) loads its base and then the adapter; its processor is the
base's. Where transformers cannot build a checkpoint's processor — Qwen2.5-VL's and Qwen2.5-Omni's
include a video processor, which needs torchvision — `ProcessorShim` does what they do for images
and audio. Video frames go in as one image part per frame wherever the processor has no video
support (`frames_as_images`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sightsound import media
from sightsound.models.families import FAMILIES


def local_path(name: str, folder: Path | None = None) -> str:
    """A model named by a local folder, as an absolute path — so that what is saved from it (a
    LoRA adapter's base, say) does not depend on the working directory; a relative name is looked
    up beside `folder` first (where a moved run keeps it), then in the working directory. A hub
    id stays as it is."""
    if folder is not None and not Path(name).is_absolute() and (folder / name).is_dir():
        return str((folder / name).resolve())
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def load_model(path: str | Path, dtype: str = "float32", device_map: str | None = None,
               trust_remote_code: bool = False, training: bool = False):
    """(model, processor) for a full checkpoint or a LoRA adapter folder (base + adapter, trainable
    when `training`; a base that is itself an adapter — LoRA GRPO's `final/adapter/` on LoRA SFT's
    model — is loaded and merged first). A released Qwen2.5-Omni checkpoint loads as its thinker
    (the part that writes text; audio in, text out), which is what a student trains: what training
    saves is the thinker alone (its talker, which speaks the text, is neither trained nor saved)."""
    import torch
    import transformers
    from transformers import AutoConfig

    path = Path(local_path(str(path)))
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = local_path(json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"], path)
        model, processor = load_model(base, dtype, device_map, trust_remote_code)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return PeftModel.from_pretrained(model, str(path), is_trainable=training), processor
    base = str(path)
    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    family = FAMILIES.get(config.model_type)
    if family is None or family.architecture is None:
        loadable = [f.model_type for f in FAMILIES.values() if f.architecture]
        raise ValueError(f"{base}: model_type {config.model_type!r} is not supported "
                         f"(supported: {', '.join(loadable)})")
    model_class = getattr(transformers, family.architecture)
    _import_sub_models(config)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = model_class.from_pretrained(base, dtype=torch_dtype, device_map=device_map,
                                        trust_remote_code=trust_remote_code)
    if family.thinker:  # the thinker writes the text; the talker only speaks it
        model = model.thinker
    return model, load_processor(base, trust_remote_code)


def _import_sub_models(config) -> None:
    """Import the classes of a model's parts (its text model, its audio encoder) now, before
    `from_pretrained` would import them. Under DeepSpeed ZeRO-3, `from_pretrained` runs inside
    `deepspeed.zero.Init`, which wraps the `__init__` of every module class created while it is
    active and puts the undecorated one back when it ends: a decorator applied after such a class
    was created is lost — transformers' kernel hooks on `Qwen2Attention` — and the next model
    loaded (GRPO's reference) fails ("'Qwen2Attention' object has no attribute '_kernel_funcs'")."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    for name in getattr(config, "sub_configs", {}):
        sub = getattr(config, name, None)
        if sub is not None and type(sub) in MODEL_MAPPING:
            MODEL_MAPPING[type(sub)]  # noqa: B018 (the lookup imports the module)


# --- messages → inputs ------------------------------------------------------------------------------


@dataclass
class Media:
    """The payloads of one batch, in prompt order."""

    audios: list[np.ndarray]
    images: list[np.ndarray]
    videos: list[np.ndarray]


def frames_as_images(messages: list[dict]) -> list[dict]:
    """Each video part becomes one image part per frame (its `frames`, or the `.frames.npy` file
    its `path` names), for processors without video support."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "video":
                    parts += [{"type": "image", "image": frame} for frame in video_frames(part)]
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


def video_frames(part: dict) -> np.ndarray:
    """A video part's frames: given as `frames`, or in the `.frames.npy` file its `path` names."""
    return part["frames"] if "frames" in part else media.load_frames(part["path"])


def render(processor, messages: list[dict], response: str | None = None, add_generation_prompt: bool = True) -> str:
    """The chat-template text of a conversation, ending with the assistant's turn opened (and,
    with `response`, that response and the end-of-turn token)."""
    text = processor.tokenizer.apply_chat_template(strip_payloads(messages), tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
    if response is not None:
        text += response + processor.tokenizer.eos_token
    return text


def encode(processor, messages_batch: list[list[dict]], padding_side: str, responses: list[str] | None = None,
           add_generation_prompt: bool = True):
    """Tokens and features for conversations: each rendered with the chat template (and, with
    `responses`, each reply after it), padded on `padding_side`, with the media the messages hold."""
    replies = responses if responses is not None else [None] * len(messages_batch)
    texts = [render(processor, m, r, add_generation_prompt) for m, r in zip(messages_batch, replies)]
    payload = Media([], [], [])
    for messages in messages_batch:
        collect_media(messages, payload)
    processor.tokenizer.padding_side = padding_side
    if isinstance(processor, ProcessorShim):
        return processor.build(texts, payload)
    kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
    if payload.audios:
        kwargs.update(audio=payload.audios, sampling_rate=media.SAMPLE_RATE)
    if payload.images:
        kwargs["images"] = [to_pil(image) for image in payload.images]
    if payload.videos:
        kwargs["videos"] = [list(frames) for frames in payload.videos]
    return processor(**kwargs)


def strip_payloads(messages: list[dict]) -> list[dict]:
    """The chat template needs only each part's type and text; arrays stay out of the renderer."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": p["type"], "text": p["text"]} if p["type"] == "text" else {"type": p["type"]}
                       for p in content]
        out.append({"role": message["role"], "content": content})
    return out


def collect_media(messages: list[dict], payload: Media) -> None:
    """Add each audio, image and video part's data to `payload`, in order (files are read here)."""
    for message in messages:
        if not isinstance(message["content"], list):
            continue
        for part in message["content"]:
            if part["type"] == "audio":
                payload.audios.append(part["audio"] if "audio" in part else media.read_wav(part["path"]))
            elif part["type"] == "image":
                payload.images.append(np.asarray(part["image"]))
            elif part["type"] == "video":
                payload.videos.append(np.asarray(video_frames(part)))


def to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8))


# --- processors -------------------------------------------------------------------------------------


def load_processor(path: str, trust_remote_code: bool):
    """The checkpoint's own processor. Where transformers cannot build it — Qwen2.5-VL's and
    Qwen2.5-Omni's processors include a video processor, which needs torchvision — the tokenizer,
    image processor and feature extractor are joined by `ProcessorShim` instead."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ImportError, AttributeError, ValueError, OSError):
        family = FAMILIES.get(config.model_type)
        if family is None or family.shim is None:
            raise
    shim = family.shim
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    images = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    features = None
    if shim.audio_token is not None:
        features = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return ProcessorShim(tokenizer, images, features, shim.image_token, shim.audio_token, shim.token_types)


class ProcessorShim:
    """What Qwen's processors do for images and audio: each image placeholder is repeated once per
    merged patch of its image, each audio placeholder once per encoder output frame, and (for
    Qwen2.5-VL) `mm_token_type_ids` marks image tokens for the 3-D rotary positions."""

    video_processor = None

    def __init__(self, tokenizer, image_processor, feature_extractor, image_token, audio_token, token_types):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.feature_extractor = feature_extractor
        self.image_token, self.audio_token, self.token_types = image_token, audio_token, token_types

    def save_pretrained(self, path) -> None:
        """The parts a later `load_processor` reads back (as a real checkpoint stores them)."""
        for part in (self.tokenizer, self.image_processor, self.feature_extractor):
            if part is not None:
                part.save_pretrained(path)

    def build(self, texts: list[str], payload: Media):
        import torch
        from transformers import BatchFeature

        if payload.videos:
            raise ValueError("video input needs torchvision; use frames_as=images")
        features = {}
        if payload.images:
            features.update(self.image_processor(images=[to_pil(i) for i in payload.images], return_tensors="pt"))
            counts = (features["image_grid_thw"].prod(-1) // self.image_processor.merge_size ** 2).tolist()
            texts = repeat_placeholders(texts, self.image_token, counts)
        if payload.audios:
            if self.feature_extractor is None:
                raise ValueError("this model takes no audio")
            audio = self.feature_extractor(payload.audios, sampling_rate=media.SAMPLE_RATE, padding="max_length",
                                           return_attention_mask=True, return_tensors="pt")
            features.update(input_features=audio["input_features"], feature_attention_mask=audio["attention_mask"])
            lengths = (audio["attention_mask"].sum(-1) - 1) // 2 + 1  # the encoder's conv, then its pooling
            texts = repeat_placeholders(texts, self.audio_token, ((lengths - 2) // 2 + 1).tolist())
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
        if self.token_types:
            image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
            tokens["mm_token_type_ids"] = (tokens["input_ids"] == image_id).to(torch.long)
        return BatchFeature({**tokens, **features})


def repeat_placeholders(texts: list[str], token: str, counts: list[int]) -> list[str]:
    """Replace the k-th `token` across the batch by counts[k] copies of it."""
    counts = iter(counts)
    out = []
    for text in texts:
        pieces = text.split(token)
        out.append(pieces[0] + "".join(token * next(counts) + piece for piece in pieces[1:]))
    return out
