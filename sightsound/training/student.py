"""The student in training: LoRA on the language model only, batches whose labels cover only the
response, and per-token log-probs computed *with each sample's own audio*.

    model, processor = load_model("runs/tiny/student", training=True)      # sightsound.models.loading
    model = add_lora(model, LoraConfig(rank=8, alpha=16))
    batch = build_batch(processor, [(messages, "<think>…</think><answer>B</answer>")])
    loss = model(**batch).loss                               # response tokens only (paper eq. 1)
    output = sample_groups(model, prompt_inputs, 8, do_sample=True, ...)  # a group's 8 rollouts
    logps = completion_logps(model, prompt_inputs, completion_ids, repeats=8)   # [N, T]

Both run each prompt (its tokens and its audio) once for its group of G completions, not G times.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from sightsound.models.families import family_of
from sightsound.models.loading import encode, frames_as_images, render
from sightsound.training import decoding
from sightsound.training.decoding import positions

DECODERS = ("generate", "static", "compiled")  # how `sample_groups` decodes (see there)
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
    if gradient_checkpointing:  # the name transformers 5.23 gave it; before, gradient_checkpointing_enable
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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


def build_batch(processor, examples: list[tuple]):
    """Right-padded inputs with `labels` = the response tokens (prompt and padding are -100). An
    example is (messages, response) or (messages, response, given): `given` is text the reply
    opens with that the model reads but is not trained to write (a reasoning it is handed, the
    response being what follows it). Video parts go in as images (the student's processor has
    no video support)."""
    examples = [with_given(example) for example in examples]
    messages_batch = [frames_as_images(m) for m, _, _ in examples]
    full = encode(processor, messages_batch, "right", responses=[given + r for _, r, given in examples])
    # The response's token count from the texts alone (media are processed once, above): the
    # rendered prompt is a prefix of the rendered conversation, and media expand inside the prompt.
    reply_lengths = torch.tensor([reply_token_count(processor.tokenizer, render(processor, m, given + r),
                                                    len(render(processor, m) + given))
                                  for m, (_, r, given) in zip(messages_batch, examples)])  # [B]
    labels = full["input_ids"].clone()
    prompt_lengths = full["attention_mask"].sum(dim=1) - reply_lengths  # [B]
    positions = torch.arange(labels.shape[1])[None, :]  # [1, T]
    labels[positions < prompt_lengths[:, None]] = -100
    labels[full["attention_mask"] == 0] = -100
    full["labels"] = labels
    return full


def reply_token_count(tokenizer, text: str, start: int) -> int:
    """How many of `text`'s tokens hold characters from `start` on: the reply's tokens. A token that
    straddles the join counts as the reply's, since the model has to write it: "sounding.</think>"
    is "sounding" + ".</" + "think" + ">" to the demo's tokenizer, so a reply "</think>…" handed the
    opening "…sounding." trains ".</" too, as the model will write it after its own reasoning.
    Tokenizers without character offsets (slow ones) count the reply's tokens as the difference
    of the two tokenizations."""
    try:
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    except NotImplementedError:
        return len(tokenizer(text).input_ids) - len(tokenizer(text[:start]).input_ids)
    return sum(1 for _, end in offsets if end > start)


def with_given(example: tuple) -> tuple:
    """(messages, response, given) for an example with or without its `given` opening ("" when none)."""
    messages, response, *given = example
    return messages, response, given[0] if given else ""


# --- log-probs ---------------------------------------------------------------------------------


def completion_logps(model, prompt_inputs, completion_ids: torch.Tensor, repeats: int = 1,
                     rows: int = LOGP_ROWS) -> torch.Tensor:
    """Per-token log-probs [B*repeats, T_c] of `completion_ids` [B*repeats, T_c] after left-padded
    prompts, completion i answering prompt i // repeats (as `generate(num_return_sequences=G)` and
    `repeat_interleave` lay out a group).

    Each prompt is computed once for its group (`one_prompt_per_group`): the forward's row b holds
    prompt b, its audio and its G completions, each completion attending to the prompt and to itself
    only. Values and gradients equal those of G separate prompt+completion rows (the prompt's
    gradient is the sum of what its G completions send back), for the prompt's tokens and its audio
    encoded once instead of G times. Other models (see `use_grouped_attention`) get G rows, with every prompt tensor — tokens AND audio features — repeated by the same
    `repeat_interleave` (R1-AQA tiles the audio with `.repeat` while tokens use
    `repeat_interleave`, pairing audio with the wrong prompt).

    Only what is needed is computed: the decoder's hidden states at the completion positions go
    through the LM head `rows` tokens at a time, each chunk's float32 log-softmax is reduced to the
    chosen tokens' values at once (and, when gradients are needed, recomputed in the backward pass
    rather than kept), so neither the prompt's logits nor a float32 [N, T, V] block ever exists —
    with Qwen2-Audio's 156k vocabulary that block is gigabytes per scoring pass."""
    inner = getattr(model, "module", model)  # DDP and DeepSpeed wrap the model; its config is inside
    if use_grouped_attention(inner):
        inputs, picks = one_prompt_per_group(prompt_inputs, completion_ids, repeats)
        encoded_once = contextlib.nullcontext()  # the group's audio is in its one row already
    else:
        inputs, picks = one_prompt_per_completion(prompt_inputs, completion_ids, repeats, inner.config.model_type)
        encoded_once = audio_encoded_once(model, repeats)
    with encoded_once:
        hidden, head = hidden_states(model, inputs)  # [rows, L, H]
    n, t = completion_ids.shape
    flat = hidden.reshape(-1, hidden.shape[-1])[picks.reshape(-1)]  # [N*T_c, H]: the state before each token
    return chosen_logps(head, flat, completion_ids.reshape(n * t), rows).reshape(n, t)


def response_loss(model, batch, rows: int = LOGP_ROWS) -> torch.Tensor:
    """`model(**batch).loss` — the mean negative log-likelihood of the tokens `batch["labels"]`
    marks (the response; -100 elsewhere) — without the [B, T, V] logits the model's own loss makes
    (at Qwen2-Audio's 156k vocabulary, 8 sequences of 880 tokens: 2.2 GB in bf16, 4.4 more in
    float32): only the response positions' hidden states go through the LM head, `rows` at a time,
    as `completion_logps` does. Equal to the model's loss and its gradients (tests/test_training.py)."""
    labels = batch["labels"]
    hidden, head = hidden_states(model, {k: v for k, v in batch.items() if k != "labels"})  # [B, T, H]
    targets = labels[:, 1:]  # the state at t predicts token t+1
    keep = targets != -100
    return -chosen_logps(head, hidden[:, :-1][keep], targets[keep], rows).mean()


def hidden_states(model, inputs) -> tuple[torch.Tensor, torch.nn.Module]:
    """The decoder's last hidden states [B, L, H] for `inputs`, and the LM head they would go through
    (the forward runs with the head swapped out, so no logits are made)."""
    inner = getattr(model, "module", model)  # DDP and DeepSpeed wrap the model; its config is inside
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())  # the forward returns hidden states, not logits
    try:
        return model(**inputs, use_cache=False).logits, head  # no key/value cache is of use here
    finally:
        inner.set_output_embeddings(head)


def chosen_logps(head, hidden: torch.Tensor, ids: torch.Tensor, rows: int = LOGP_ROWS) -> torch.Tensor:
    """log p(ids) [K] for hidden states [K, H] through the LM head, `rows` at a time, each chunk's
    float32 log-softmax reduced to the chosen tokens at once and, when gradients are needed,
    recomputed in the backward pass rather than kept."""
    chunks = []
    for start in range(0, ids.shape[0], rows):
        part = (head, hidden[start:start + rows], ids[start:start + rows])
        if torch.is_grad_enabled() and hidden.requires_grad:
            chunks.append(torch.utils.checkpoint.checkpoint(_chosen_logps, *part, use_reentrant=False))
        else:
            chunks.append(_chosen_logps(*part))
    return torch.cat(chunks)


# --- one prompt per group: the decoder's attention --------------------------------------------
#
# One row holds a prompt and its G completions end to end. Under a plain attention mask every
# completion token would still be multiplied against every other completion's keys (and masked
# out): G times the attention work that is needed. So the decoder's attention is registered with
# transformers' `AttentionInterface` under GROUPED: given a `prompt_groups` layout it attends the
# prompt causally and each completion to [prompt keys, its own keys], as two SDPA calls; without
# one it is plain SDPA (generation, SFT, evaluation). The model keeps GROUPED once set, so that
# gradient checkpointing's recomputation in the backward pass runs the same attention.

GROUPED = "sightsound_grouped_sdpa"
@dataclass
class PromptGroups:
    """Where the prompt ends, and the masks of one-prompt-per-group rows (`one_prompt_per_group`)."""
    prompt_len: int  # P, left padding included
    repeats: int  # G
    completion_len: int  # C
    prompt_mask: torch.Tensor  # [B, 1, P, P]: causal over the prompt's real tokens (a pad sees itself)
    completion_mask: torch.Tensor  # [B*G, 1, C, P+C]: the prompt's real tokens, then causal


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      prompt_groups: PromptGroups | None = None, **kwargs):
    """transformers' attention signature: query [B, h, L, d], key and value [B, h_kv, L, d] →
    ([B, L, h, d], None). Plain SDPA unless `prompt_groups` describes the rows."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if prompt_groups is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    P, G, C = prompt_groups.prompt_len, prompt_groups.repeats, prompt_groups.completion_len
    B, gqa = query.shape[0], query.shape[1] != key.shape[1]
    attend = lambda q, k, v, mask: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa)
    prompt = attend(query[:, :, :P], key[:, :, :P], value[:, :, :P], prompt_groups.prompt_mask)  # [B, h, P, d]

    def per_completion(x):  # [B, h, G*C, d] → [B*G, h, C, d]
        return x[:, :, P:].unflatten(2, (G, C)).transpose(1, 2).flatten(0, 1)

    def with_prompt(x):  # each completion's keys (values) after its prompt's
        return torch.cat([x[:, :, :P].repeat_interleave(G, dim=0), per_completion(x)], dim=2)

    completions = attend(per_completion(query), with_prompt(key), with_prompt(value), prompt_groups.completion_mask)
    completions = completions.unflatten(0, (B, G)).transpose(1, 2).flatten(2, 3)  # [B, h, G*C, d]
    return torch.cat([prompt, completions], dim=2).transpose(1, 2).contiguous(), None


def use_grouped_attention(model) -> bool:
    """Switch the decoder of a family with `grouped_attention` (Qwen2, Qwen2-Audio) under SDPA
    attention (the default) to GROUPED, and say whether its attention is GROUPED: whether
    `completion_logps` computes each prompt once for its group. FlashAttention-2 or eager attention,
    and other models, get one row per completion."""
    if not family_of(model.config.model_type).grouped_attention:
        return False
    config = model.get_decoder().config  # the config the decoder's attention layers read
    if config._attn_implementation == "sdpa":
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(GROUPED, grouped_attention)
        AttentionMaskInterface.register(GROUPED, sdpa_mask)  # masks for the plain calls, as SDPA's
        config._attn_implementation = GROUPED
    return config._attn_implementation == GROUPED


def one_prompt_per_group(prompt_inputs, completion_ids: torch.Tensor, repeats: int):
    """Forward inputs with one row per prompt — its P (left-padded) tokens, then its G = `repeats`
    completions of C tokens end to end, with `prompt_groups` for `grouped_attention` — and the flat
    index, into the forward's [B*L] positions, of the hidden state that predicts each completion
    token ([B*G, C]). A prompt token sees the prompt's real tokens up to itself; a completion token
    sees the whole prompt and its own completion up to itself, at positions that continue from the
    prompt's length: exactly what it saw when it was sampled."""
    prompt_ids, keep = prompt_inputs["input_ids"], prompt_inputs["attention_mask"].bool()  # [B, P]
    (B, P), (N, C) = prompt_ids.shape, completion_ids.shape
    if N != B * repeats:
        raise ValueError(f"{N} completions for {B} prompts x {repeats}: expected {B * repeats}")
    device = prompt_ids.device
    inputs = {k: v for k, v in prompt_inputs.items() if k != "attention_mask"}
    inputs["input_ids"] = torch.cat([prompt_ids, completion_ids.reshape(B, repeats * C)], dim=1)  # [B, L]
    offsets = torch.arange(C, device=device).repeat(repeats)  # [G*C]: 0..C-1, G times
    inputs["position_ids"] = torch.cat([positions(keep), keep.sum(dim=1, keepdim=True) + offsets], dim=1)  # [B, L]
    causal = lambda n: torch.ones(n, n, dtype=torch.bool, device=device).tril()  # noqa: E731
    prompt_mask = (causal(P)[None] & keep[:, None, :]) | torch.eye(P, dtype=torch.bool, device=device)  # [B, P, P]
    completion_mask = torch.cat([keep.repeat_interleave(repeats, dim=0)[:, None, :].expand(N, C, P),
                                 causal(C).expand(N, C, C)], dim=2)  # [B*G, C, P+C]
    inputs["prompt_groups"] = PromptGroups(P, repeats, C, prompt_mask[:, None], completion_mask[:, None])

    # Completion g's token t is predicted at its own position t-1, and its first token at the prompt's last.
    before = P + torch.arange(repeats * C, device=device) - 1  # [G*C]
    before[::C] = P - 1
    picks = (torch.arange(B, device=device)[:, None] * (P + repeats * C) + before[None, :]).reshape(N, C)
    return inputs, picks


def one_prompt_per_completion(prompt_inputs, completion_ids: torch.Tensor, repeats: int, model_type: str):
    """Forward inputs with one row per completion (its prompt repeated), and the flat index of the
    hidden state that predicts each completion token ([N, C])."""
    inputs = {k: v.repeat_interleave(repeats, dim=0) if _per_sample(k, v, prompt_inputs) else v
              for k, v in prompt_inputs.items()}
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completion_ids)], dim=1)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(completion_ids)], dim=1)
    if family_of(model_type).mask_positions:  # positions as generate() counts them: pads take none
        inputs["position_ids"] = positions(inputs["attention_mask"])
    (N, C), L = completion_ids.shape, inputs["input_ids"].shape[1]
    picks = torch.arange(N, device=completion_ids.device)[:, None] * L + prompt_len - 1 + torch.arange(C, device=completion_ids.device)
    return inputs, picks


def sample_groups(model, prompt_inputs, repeats: int, decoder: str = "generate", **sampling) -> torch.Tensor:
    """`model.generate(**prompt_inputs, num_return_sequences=repeats, **sampling)` — the prompts
    (left-padded) followed by their completions, [B*repeats, P+T] — with each prompt prefilled once
    for its group on the models `completion_logps` groups: all of a prompt but its last token (and
    its audio) runs on B rows, and decoding goes on from there as `generate` does after its own
    prefill (positions counted from the attention mask, as it counts them). Other models prefill
    every row (with Qwen2-Audio's encoder still run once per clip).

    `decoder`: "generate" decodes with transformers' `generate` (a dynamic cache); "static" with
    `decoding.decode_static`'s static cache, the same tokens; "compiled" also compiles its step
    into CUDA graphs. Settings `decode_static` does not reproduce fall back to "generate"."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    inner = getattr(model, "module", model)
    if repeats == 1 or not family_of(inner.config.model_type).grouped_attention:
        with audio_encoded_once(model, repeats):
            return model.generate(**prompt_inputs, num_return_sequences=repeats, **sampling)
    from transformers import DynamicCache

    ids, mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    filled = DynamicCache()
    prefix = {**prompt_inputs, "input_ids": ids[:, :-1], "attention_mask": mask[:, :-1],
              "position_ids": positions(mask[:, :-1])}
    model(**prefix, **{decoding.cache_argument(): filled}, use_cache=True, logits_to_keep=1)  # fills the cache
    if decoder != "generate" and decoding.supported(model, sampling) is None:
        return decoding.decode_static(model, ids, mask, filled, repeats, compiled=decoder == "compiled", **sampling)
    filled.batch_repeat_interleave(repeats)
    return model.generate(input_ids=ids.repeat_interleave(repeats, dim=0),
                          attention_mask=mask.repeat_interleave(repeats, dim=0),
                          **{decoding.cache_argument(): filled}, **sampling)


@contextlib.contextmanager
def audio_encoded_once(model, repeats: int):
    """Within this block the audio encoder runs once per clip when each clip's rows come `repeats`
    times in a row — as `repeat_interleave` lays out a group's G completions for scoring, and as
    `generate(num_return_sequences=G)` expands its inputs before the prefill: the encoder is given
    rows 0, G, 2G, … and its output is repeated back. Values and gradients are those of encoding
    every row (the repeat's backward sums the G copies' gradients, as G separate passes would add
    theirs), for 1/G of the encoder's compute and activations: Qwen2-Audio-7B's encoder (32 layers,
    width 1280, 1,500 frames for 30 s) ran 8 times on the same clip before.

    Only encoders whose input is one row of mel features per clip are handled (Qwen2-Audio's: an
    `audio_tower` that is not `packed`, `models.families`); for other models, or rows that are not
    `repeats` copies of each other, the encoder runs on every row.
    It serves the paths that repeat each prompt G times: scoring on models `use_grouped_attention` turns
    down (e.g. Qwen2-Audio loaded with FlashAttention-2), and `sample_groups` on models it does not
    prefill once per prompt."""
    inner = getattr(model, "module", model)
    towers = [m for name, m in inner.named_modules() if name.endswith("audio_tower")]
    tower_kind = family_of(inner.config.model_type).audio_tower
    if repeats == 1 or not towers or tower_kind is None or tower_kind.packed:
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
