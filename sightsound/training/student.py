"""The student in training: LoRA on the language model only, batches whose labels cover only the
response, and per-token log-probs computed *with each sample's own audio*.

    model, processor = load_model("runs/tiny/student", training=True)      # sightsound.models.loading
    model = add_lora(model, LoraConfig(rank=8, alpha=16))
    batch = build_batch(processor, [(messages, "<think>…</think><answer>B</answer>")])
    loss = model(**batch).loss                               # response tokens only (paper eq. 1)
    logps = completion_logps(model, prompt_inputs, completion_ids, repeats=8)   # [N, T]
    with audio_encoded_once(model, 8):                     # a group's 8 rollouts: each clip encoded once
        model.generate(**prompt_inputs, num_return_sequences=8, ...)
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from sightsound.models.loading import encode, frames_as_images, render

LOGP_ROWS = 1024  # completion tokens whose logits exist at once when scoring (1024 x 156k vocab x 4 B = 640 MB)

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


def prepare_for_training(model, gradient_checkpointing: bool = False, freeze: list[str] = ()):
    """Freeze every parameter whose name matches one of the `freeze` regexes (e.g. "audio_tower")
    and, with `gradient_checkpointing`, keep only each decoder layer's input for the backward pass
    (recomputing the rest): a model the size of Qwen2-Audio-7B trades about a third more compute
    for activations that no longer grow with the layer count."""
    patterns = [re.compile(p) for p in freeze]
    for name, parameter in model.named_parameters():
        if any(p.search(name) for p in patterns):
            parameter.requires_grad_(False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is of no use while training, and clashes with recomputation
    return model


def add_lora(model, lora: LoraConfig):
    """Wrap `model` with fresh LoRA adapters on the modules `lora.target_regex` names."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_regex, bias="none")
    return get_peft_model(model, config)


# --- batches -----------------------------------------------------------------------------------


def build_batch(processor, examples: list[tuple[list[dict], str]]):
    """Right-padded inputs with `labels` = the response tokens (prompt and padding are -100). Video
    parts go in as images (the student's processor has no video support)."""
    messages_batch = [frames_as_images(m) for m, _ in examples]
    full = encode(processor, messages_batch, "right", responses=[r for _, r in examples])
    # The response's token count from the texts alone (media are processed once, above): the
    # rendered prompt is a prefix of the rendered conversation, and media expand inside the prompt.
    tokenizer = processor.tokenizer
    reply_lengths = torch.tensor([
        len(tokenizer(render(processor, m, r)).input_ids) - len(tokenizer(render(processor, m)).input_ids)
        for m, (_, r) in zip(messages_batch, examples)])  # [B]
    labels = full["input_ids"].clone()
    prompt_lengths = full["attention_mask"].sum(dim=1) - reply_lengths  # [B]
    positions = torch.arange(labels.shape[1])[None, :]  # [1, T]
    labels[positions < prompt_lengths[:, None]] = -100
    labels[full["attention_mask"] == 0] = -100
    full["labels"] = labels
    return full


# --- log-probs ---------------------------------------------------------------------------------


def completion_logps(model, prompt_inputs, completion_ids: torch.Tensor, repeats: int = 1,
                     rows: int = LOGP_ROWS) -> torch.Tensor:
    """Per-token log-probs [B*repeats, T_c] of `completion_ids` [B*repeats, T_c] after left-padded
    prompts. Every prompt tensor — tokens AND audio features — is repeated with the same
    `repeat_interleave`, so completion i is scored with its own prompt's audio (R1-AQA tiles the
    audio with `.repeat` while tokens use `repeat_interleave`, pairing audio with the wrong prompt).

    Only what is needed is computed: the decoder's hidden states at the completion positions go
    through the LM head `rows` tokens at a time, each chunk's float32 log-softmax is reduced to the
    chosen tokens' values at once (and, when gradients are needed, recomputed in the backward pass
    rather than kept), so neither the prompt's logits nor a float32 [N, T, V] block ever exists —
    with Qwen2-Audio's 156k vocabulary that block is gigabytes per scoring pass."""
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
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())  # the forward returns hidden states, not logits
    try:
        with audio_encoded_once(model, repeats):
            hidden = model(**inputs).logits[:, prompt_len - 1:-1, :]  # [N, T_c, H]: position t predicts t+1
    finally:
        inner.set_output_embeddings(head)
    n, t = completion_ids.shape
    flat, ids = hidden.reshape(n * t, -1), completion_ids.reshape(n * t)  # [N*T_c, H], [N*T_c]
    chunks = []
    for start in range(0, n * t, rows):
        part = (head, flat[start:start + rows], ids[start:start + rows])
        if torch.is_grad_enabled() and flat.requires_grad:
            chunks.append(torch.utils.checkpoint.checkpoint(_chosen_logps, *part, use_reentrant=False))
        else:
            chunks.append(_chosen_logps(*part))
    return torch.cat(chunks).reshape(n, t)


@contextlib.contextmanager
def audio_encoded_once(model, repeats: int):
    """Within this block the audio encoder runs once per clip when each clip's rows come `repeats`
    times in a row — as `repeat_interleave` lays out a group's G completions for scoring, and as
    `generate(num_return_sequences=G)` expands its inputs before the prefill: the encoder is given
    rows 0, G, 2G, … and its output is repeated back. Values and gradients are those of encoding
    every row (the repeat's backward sums the G copies' gradients, as G separate passes would add
    theirs), for 1/G of the encoder's compute and activations: Qwen2-Audio-7B's encoder (32 layers,
    width 1280, 1,500 frames for 30 s) ran 8 times on the same clip before.

    Only Qwen2-Audio's encoder is handled (its input is one row of mel features per clip); for other
    models, or rows that are not `repeats` copies of each other, the encoder runs on every row.
    The decoder still prefills each of the G rows: sharing one prompt cache across samples is not
    something `generate` offers."""
    inner = getattr(model, "module", model)
    towers = [m for name, m in inner.named_modules() if name.endswith("audio_tower")]
    if repeats == 1 or not towers or inner.config.model_type != "qwen2_audio":
        yield
        return
    tower, deduplicated = towers[0], []

    def before(module, args, kwargs):
        features = args[0] if args else kwargs["input_features"]
        rows = features.shape[0]
        if rows % repeats or not torch.equal(features, features[::repeats].repeat_interleave(repeats, dim=0)):
            deduplicated.append(False)
            return None
        deduplicated.append(True)
        pick = lambda v: v[::repeats] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows else v  # noqa: E731
        return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}

    def after(module, args, kwargs, output):
        if deduplicated.pop():
            output.last_hidden_state = output.last_hidden_state.repeat_interleave(repeats, dim=0)
        return output

    handles = [tower.register_forward_pre_hook(before, with_kwargs=True),
               tower.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _chosen_logps(head, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids) for a chunk of hidden states [R, H] → [R], through the LM head in float32."""
    logits = head(hidden).float()  # [R, V]
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, None]).squeeze(-1)


def _per_sample(key: str, value, inputs) -> bool:
    """Tensors with one row per prompt (images are flattened across the batch and are not)."""
    batch = inputs["input_ids"].shape[0]
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and key not in (
        "pixel_values", "image_grid_thw")
