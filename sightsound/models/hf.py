"""Local Hugging Face backend: Qwen2-Audio, Qwen2.5-VL and Qwen2.5-Omni (thinker) checkpoints.

    backend = HFBackend(ModelConfig(backend="hf", model="Qwen/Qwen2-Audio-7B-Instruct", dtype="bfloat16",
                                    device_map="auto"))
    generations = backend.generate(requests, Sampling(n=8, temperature=1.0))
    p_yes = backend.yes_probability(requests)   # P("yes") vs P("no") at the reply's first token

The class is chosen from the checkpoint's `model_type`. Prompts are rendered with the
checkpoint's own chat template and batched with left padding. Video frames go to the model as a
video where the processor can take one (it needs torchvision), otherwise as a sequence of images
(`frames_as` in the config picks; both paths are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sightsound import media
from sightsound.models import Generation, ModelConfig, Request, Sampling

MODEL_CLASSES = {
    "qwen2_audio": "Qwen2AudioForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration",  # released Omni checkpoints: we use its thinker
}


@dataclass
class _Media:
    """The payloads of one batch, in prompt order."""

    audios: list[np.ndarray]
    images: list[np.ndarray]
    videos: list[np.ndarray]


class HFBackend:
    def __init__(self, cfg: ModelConfig):
        import torch
        import transformers
        from transformers import AutoConfig

        self.cfg = cfg
        if (Path(cfg.model) / "adapter_config.json").exists():  # a LoRA checkpoint: base + adapter
            from sightsound.student import load_model

            model, processor = load_model(cfg.model, cfg.dtype, cfg.device_map)
            self.__dict__.update(HFBackend.from_loaded(model.eval(), processor, cfg).__dict__)
            return
        config = AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.model_type = config.model_type
        if self.model_type not in MODEL_CLASSES:
            raise ValueError(f"{cfg.model}: model_type {self.model_type!r} is not supported "
                             f"(supported: {', '.join(MODEL_CLASSES)})")
        model_class = getattr(transformers, MODEL_CLASSES[self.model_type])
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.model = model_class.from_pretrained(cfg.model, dtype=dtype, device_map=cfg.device_map,
                                                 trust_remote_code=cfg.trust_remote_code)
        if self.model_type == "qwen2_5_omni":  # the thinker writes the text; the talker only speaks it
            self.model = self.model.thinker
        self.model.eval()
        self.processor = _load_processor(cfg.model, cfg.trust_remote_code)
        self.tokenizer = self.processor.tokenizer
        self.video_ok = getattr(self.processor, "video_processor", None) is not None
        self.frames_as = cfg.frames_as if cfg.frames_as != "auto" else ("video" if self.video_ok else "images")
        if self.frames_as == "video" and not self.video_ok:
            raise ValueError(f"{cfg.model}: frames_as=video needs the video processor, which needs "
                             "torchvision; install it or use frames_as=images")

    @classmethod
    def from_loaded(cls, model, processor, cfg: ModelConfig | None = None) -> "HFBackend":
        """A backend over a model already in memory (a student in training, for validation)."""
        backend = cls.__new__(cls)
        backend.cfg = cfg or ModelConfig()
        backend.model, backend.processor, backend.tokenizer = model, processor, processor.tokenizer
        backend.model_type = model.config.model_type
        backend.video_ok = getattr(processor, "video_processor", None) is not None
        backend.frames_as = "video" if backend.video_ok and backend.cfg.frames_as == "video" else "images"
        return backend

    @property
    def device(self):
        return self.model.device

    # --- inputs -----------------------------------------------------------------------------------

    def encode(self, messages_batch: list[list[dict]], add_generation_prompt: bool = True):
        """Render, tokenize and featurize a batch of conversations (left-padded tensors on the model's device)."""
        texts, payload = [], _Media([], [], [])
        for messages in messages_batch:
            messages = self._expand_frames(messages)
            texts.append(self.tokenizer.apply_chat_template(_strip_payloads(messages), tokenize=False,
                                                            add_generation_prompt=add_generation_prompt))
            _collect(messages, payload)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        inputs = self.processor.build(texts, payload) if isinstance(self.processor, _ProcessorShim) \
            else self._call_processor(texts, payload)
        return inputs.to(self.device)

    def _expand_frames(self, messages: list[dict]) -> list[dict]:
        """A video part becomes one image part per frame when frames go in as images."""
        if self.frames_as == "video":
            return messages
        out = []
        for message in messages:
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part["type"] == "video":
                        parts += [{"type": "image", "image": frame} for frame in part["frames"]]
                    else:
                        parts.append(part)
                message = {**message, "content": parts}
            out.append(message)
        return out

    def _call_processor(self, texts: list[str], payload: _Media):
        kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
        if payload.audios:
            kwargs.update(audio=payload.audios, sampling_rate=media.SAMPLE_RATE)
        if payload.images:
            kwargs["images"] = [_pil(image) for image in payload.images]
        if payload.videos:
            kwargs["videos"] = [list(frames) for frames in payload.videos]
        return self.processor(**kwargs)

    # --- generation -------------------------------------------------------------------------------

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = requests[start:start + self.cfg.batch_size]
            try:
                results += self._generate_batch(batch, sampling)
            except Exception as exc:  # find and record the request(s) at fault; keep the others
                if len(batch) == 1:
                    results.append(Generation(batch[0].id, [], f"{type(exc).__name__}: {exc}"))
                else:
                    for request in batch:
                        results += self.generate([request], sampling)
        return results

    def _generate_batch(self, batch: list[Request], sampling: Sampling) -> list[Generation]:
        import torch

        inputs = self.encode([r.messages for r in batch])
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        greedy = sampling.temperature <= 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                do_sample=not greedy, temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # [B*n, T_new]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        n = sampling.n
        return [Generation(r.id, texts[i * n:(i + 1) * n]) for i, r in enumerate(batch)]

    def yes_probability(self, requests: list[Request]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) for the first token of the reply, read from the logits."""
        import torch

        yes = _first_token_ids(self.tokenizer, ["yes", "Yes", " yes", " Yes", "YES"])
        no = _first_token_ids(self.tokenizer, ["no", "No", " no", " No", "NO"])
        scores: list[float | None] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = requests[start:start + self.cfg.batch_size]
            inputs = self.encode([r.messages for r in batch])
            with torch.no_grad():
                logits = self.model(**inputs).logits[:, -1, :].float()  # [B, V]; left padding: last is real
            probs = logits.softmax(-1)
            p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
            scores += (p_yes / (p_yes + p_no)).tolist()
        return scores


def _first_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer.encode(word, add_special_tokens=False)[0] for word in words}
    return sorted(ids)


def _strip_payloads(messages: list[dict]) -> list[dict]:
    """The chat template needs only each part's type and text; arrays stay out of the renderer."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": p["type"], "text": p["text"]} if p["type"] == "text" else {"type": p["type"]}
                       for p in content]
        out.append({"role": message["role"], "content": content})
    return out


def _collect(messages: list[dict], payload: _Media) -> None:
    for message in messages:
        if not isinstance(message["content"], list):
            continue
        for part in message["content"]:
            if part["type"] == "audio":
                payload.audios.append(part["audio"] if "audio" in part else media.read_wav(part["path"]))
            elif part["type"] == "image":
                payload.images.append(np.asarray(part["image"]))
            elif part["type"] == "video":
                payload.videos.append(np.asarray(part["frames"]))


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8))


# --- processors -------------------------------------------------------------------------------------


def _load_processor(path: str, trust_remote_code: bool):
    """The checkpoint's own processor. Where transformers cannot build it — Qwen2.5-VL's and
    Qwen2.5-Omni's processors include a video processor, which needs torchvision — the tokenizer,
    image processor and feature extractor are joined by `_ProcessorShim` instead."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ImportError, AttributeError, ValueError, OSError):
        if config.model_type not in SHIM_TOKENS:
            raise
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    images = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    features = None
    if config.model_type.startswith("qwen2_5_omni"):
        features = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return _ProcessorShim(tokenizer, images, features, **SHIM_TOKENS[config.model_type])


# The placeholder each model's processor expands, and whether the model wants `mm_token_type_ids`.
SHIM_TOKENS = {
    "qwen2_5_vl": dict(image_token="<|image_pad|>", audio_token=None, token_types=True),
    "qwen2_5_omni_thinker": dict(image_token="<|IMAGE|>", audio_token="<|AUDIO|>", token_types=False),
    "qwen2_5_omni": dict(image_token="<|IMAGE|>", audio_token="<|AUDIO|>", token_types=False),
}


class _ProcessorShim:
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
        """The parts a later `_load_processor` reads back (as a real checkpoint stores them)."""
        for part in (self.tokenizer, self.image_processor, self.feature_extractor):
            if part is not None:
                part.save_pretrained(path)

    def build(self, texts: list[str], payload: _Media):
        import torch
        from transformers import BatchFeature

        if payload.videos:
            raise ValueError("video input needs torchvision; use frames_as=images")
        features = {}
        if payload.images:
            features.update(self.image_processor(images=[_pil(i) for i in payload.images], return_tensors="pt"))
            counts = (features["image_grid_thw"].prod(-1) // self.image_processor.merge_size ** 2).tolist()
            texts = _repeat_placeholders(texts, self.image_token, counts)
        if payload.audios:
            if self.feature_extractor is None:
                raise ValueError("this model takes no audio")
            audio = self.feature_extractor(payload.audios, sampling_rate=media.SAMPLE_RATE, padding="max_length",
                                           return_attention_mask=True, return_tensors="pt")
            features.update(input_features=audio["input_features"], feature_attention_mask=audio["attention_mask"])
            lengths = (audio["attention_mask"].sum(-1) - 1) // 2 + 1  # the encoder's conv, then its pooling
            texts = _repeat_placeholders(texts, self.audio_token, ((lengths - 2) // 2 + 1).tolist())
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
        if self.token_types:
            image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
            tokens["mm_token_type_ids"] = (tokens["input_ids"] == image_id).to(torch.long)
        return BatchFeature({**tokens, **features})


def _repeat_placeholders(texts: list[str], token: str, counts: list[int]) -> list[str]:
    """Replace the k-th `token` across the batch by counts[k] copies of it."""
    counts = iter(counts)
    out = []
    for text in texts:
        pieces = text.split(token)
        out.append(pieces[0] + "".join(token * next(counts) + piece for piece in pieces[1:]))
    return out
