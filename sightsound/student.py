"""The student in training: loading (with LoRA on the language model only), batches whose labels
cover only the response, and per-token log-probs computed *with each sample's own audio*.

    model, processor = load_student("runs/tiny/student", lora=LoraConfig(rank=8, alpha=16))
    batch = build_batch(processor, [(messages, "<think>…</think><answer>B</answer>")])
    loss = model(**batch).loss                               # response tokens only (paper eq. 1)
    logps = completion_logps(model, prompt_inputs, completion_ids, completion_mask)   # [N, T]

A checkpoint folder may be a full model or a LoRA adapter (its `adapter_config.json` names the
base); both load here and in `sightsound.models.hf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# LoRA on the decoder's projections only. Plain names like "q_proj" also match the audio encoder's
# attention (and the vision tower's), which the paper does not train.
LANGUAGE_MODEL_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class LoraConfig:
    enabled: bool = True
    rank: int = 8  # paper: 8
    alpha: int = 16  # paper: 16
    dropout: float = 0.05
    target_regex: str = LANGUAGE_MODEL_TARGETS


def load_model(path: str | Path, dtype: str = "float32", device_map: str | None = None):
    """A full model or a LoRA adapter folder (base + adapter), with its processor, for training."""
    import transformers
    from transformers import AutoConfig

    from sightsound.models.hf import MODEL_CLASSES, _load_processor

    path = Path(path)
    adapter = (path / "adapter_config.json").exists()
    base = _adapter_base(path) if adapter else str(path)
    config = AutoConfig.from_pretrained(base)
    if config.model_type not in MODEL_CLASSES or config.model_type == "qwen2_5_omni":
        raise ValueError(f"{base}: model_type {config.model_type!r} cannot be trained as a student here")
    model_class = getattr(transformers, MODEL_CLASSES[config.model_type])
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = model_class.from_pretrained(base, dtype=torch_dtype, device_map=device_map)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    processor = _load_processor(base, False)  # an adapter folder's processor is its base's
    return model, processor


def _adapter_base(path: Path) -> str:
    import json

    return json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]


def add_lora(model, lora: LoraConfig):
    """Wrap `model` with fresh LoRA adapters on the modules `lora.target_regex` names."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_regex, bias="none")
    return get_peft_model(model, config)


# --- batches -----------------------------------------------------------------------------------


def render(processor, messages: list[dict], response: str | None = None) -> str:
    """The chat-template text of a conversation, ending with the assistant's turn opened (and,
    with `response`, that response and the end-of-turn token)."""
    from sightsound.models.hf import _strip_payloads

    text = processor.tokenizer.apply_chat_template(_strip_payloads(messages), tokenize=False,
                                                   add_generation_prompt=True)
    if response is not None:
        text += response + processor.tokenizer.eos_token
    return text


def encode(processor, texts: list[str], messages_batch: list[list[dict]], padding_side: str):
    """Tokens and features for rendered texts (media taken from the messages, in order)."""
    from sightsound.models.hf import _collect, _Media, _ProcessorShim, _pil

    payload = _Media([], [], [])
    for messages in messages_batch:
        _collect(messages, payload)
    processor.tokenizer.padding_side = padding_side
    if isinstance(processor, _ProcessorShim):
        return processor.build(texts, payload)
    kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
    if payload.audios:
        kwargs.update(audio=payload.audios, sampling_rate=16_000)
    if payload.images:
        kwargs["images"] = [_pil(i) for i in payload.images]
    return processor(**kwargs)


def build_batch(processor, examples: list[tuple[list[dict], str]]):
    """Right-padded inputs with `labels` = the response tokens (prompt and padding are -100)."""
    messages_batch = [m for m, _ in examples]
    full = encode(processor, [render(processor, m, r) for m, r in examples], messages_batch, "right")
    prompts = encode(processor, [render(processor, m) for m, _ in examples], messages_batch, "right")
    labels = full["input_ids"].clone()
    prompt_lengths = prompts["attention_mask"].sum(dim=1)  # [B]; the prompt is a prefix of the full text
    positions = torch.arange(labels.shape[1])[None, :]  # [1, T]
    labels[positions < prompt_lengths[:, None]] = -100
    labels[full["attention_mask"] == 0] = -100
    full["labels"] = labels
    return full


# --- log-probs ---------------------------------------------------------------------------------


def completion_logps(model, prompt_inputs, completion_ids: torch.Tensor, repeats: int = 1) -> torch.Tensor:
    """Per-token log-probs [B*repeats, T_c] of `completion_ids` [B*repeats, T_c] after left-padded
    prompts. Every prompt tensor — tokens AND audio features — is repeated with the same
    `repeat_interleave`, so completion i is scored with its own prompt's audio (R1-AQA tiles the
    audio with `.repeat` while tokens use `repeat_interleave`, pairing audio with the wrong prompt)."""
    inputs = {k: v.repeat_interleave(repeats, dim=0) if _per_sample(k, v, prompt_inputs) else v
              for k, v in prompt_inputs.items()}
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completion_ids)], dim=1)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(completion_ids)], dim=1)
    inner = getattr(model, "module", model)  # DDP and DeepSpeed wrap the model; its config is inside
    if inner.config.model_type == "qwen2_audio":  # positions as generate() counts them: pads take none
        inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
    logits = model(**inputs).logits[:, prompt_len - 1:-1, :].float()  # [N, T_c, V]: position t predicts t+1
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def _per_sample(key: str, value, inputs) -> bool:
    """Tensors with one row per prompt (images are flattened across the batch and are not)."""
    batch = inputs["input_ids"].shape[0]
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and key not in (
        "pixel_values", "image_grid_thw")
