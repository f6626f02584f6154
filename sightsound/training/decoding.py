"""GRPO's rollouts decoded with a static key/value cache: the same tokens `generate` samples, from a
loop whose every step has the same shapes, so that on a GPU the decoder's step is compiled once into
CUDA graphs (`torch.compile(mode="reduce-overhead")`) and the host never waits on the device.

    filled = DynamicCache()                                  # each prompt but its last token, prefilled once
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask[:, :-1]), cache=filled)
    tokens = decode_static(model, ids, mask, filled, repeats=8, compiled=True, max_new_tokens=256,
                           do_sample=True, temperature=1.0, pad_token_id=pad)    # [B*G, P+T], as generate returns

(`training.student.sample_groups` does this, and falls back to `generate` when `supported` says so.)

Why a loop of our own rather than `generate(cache_implementation="static")`, which also compiles
the forward on a GPU: measured on an H200 with Qwen2-Audio-7B's decoder and 32 rows, transformers'
static path decoded at 11.4 ms a token against a memory-bound floor of 3.8 ms. Its loop reads
"has every row ended?" back to the host after every token (it defers that check only on Apple's
mps), and runs its logits processors as separate launches between graphs. Here the stop check reads
the device once every `CHECK_EVERY` tokens, and everything between two steps stays on the device.

What it shares with `generate`, so that its output is `generate`'s token for token (greedy, and
sampled under the same seed where the kernels agree — tests/test_training.py checks both on the CPU):
the prompt's positions counted from the attention mask, the logits processors transformers builds
for these settings (its own public classes, in its order: suppressed tokens, temperature, top-k,
top-p), `torch.multinomial` on their softmax, and a row that has ended continuing with padding.
Settings it does not reproduce (repetition penalty, min-p, beams, ...) are refused by `supported`,
and `sample_groups` then falls back to `generate`.

Cache lengths are rounded up to `BUCKET` tokens, so prompts of different lengths share one compiled
graph per bucket instead of one each."""

from __future__ import annotations

import copy
import functools
import math
import weakref

import torch

BUCKET = 64  # cache lengths are multiples of this: one compiled decode step per bucket, not per prompt length
CHECK_EVERY = 16  # tokens decoded between two reads of "has every row ended?" (the loop's only host syncs)

# Settings the loop does not reproduce, at the values that switch them off: any other value falls back to generate.
_NEUTRAL = {"repetition_penalty": 1.0, "num_beams": 1, "no_repeat_ngram_size": 0, "min_length": 0,
            "min_new_tokens": None, "bad_words_ids": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
            "forced_eos_token_id": None, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
            "top_h": None, "renormalize_logits": False, "exponential_decay_length_penalty": None,
            "num_return_sequences": 1, "watermarking_config": None}


def settings(model, sampling: dict):
    """The generation settings as `generate` resolves them: the model's generation config, what it
    leaves unset taken from transformers' global defaults, then `sampling` over both (so `top_k`
    not given is 50, and `top_k=None` given is no top-k)."""
    config = copy.deepcopy(model.generation_config)
    for name, value in config._get_default_generation_params().items():
        if getattr(config, name, None) is None:
            setattr(config, name, value)
    config.update(**sampling)
    return config


def supported(model, sampling: dict) -> str | None:
    """None when `decode_static` reproduces `generate` for these settings; else what it lacks."""
    config = settings(model, sampling)
    if config.max_new_tokens is None:
        return "max_new_tokens is not set"
    for name, neutral in _NEUTRAL.items():
        value = getattr(config, name, neutral)
        if value not in (neutral, None):
            return f"{name}={value!r}"
    return None


def logits_processors(config):
    """The processors `generate` applies for these settings, transformers' own, in its order."""
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import (SuppressTokensLogitsProcessor, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    processors = LogitsProcessorList()
    if config.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p))
    return processors


def decode_static(model, ids: torch.Tensor, mask: torch.Tensor, filled, repeats: int, compiled: bool = False,
                  **sampling) -> torch.Tensor:
    """Decode B*repeats rows after a prefill of B left-padded prompts: `filled` (a DynamicCache)
    holds each prompt but its last token, `ids` [B, P] and `mask` are the prompts. Returns
    [B*repeats, P+T] as `generate(num_return_sequences=repeats)` does. `compiled` compiles the
    decoder's step into CUDA graphs (a GPU's; on a CPU the step runs as it is)."""
    config = settings(model, sampling)
    processors = logits_processors(config)
    eos = torch.tensor(config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id],
                       device=ids.device)
    pad = config.pad_token_id if config.pad_token_id is not None else int(eos[0])
    ids, mask = ids.repeat_interleave(repeats, dim=0), mask.repeat_interleave(repeats, dim=0)
    rows, prompt_length, budget = ids.shape[0], ids.shape[1], config.max_new_tokens
    length = cache_length(prompt_length, budget)
    cache, step = _decoder(model, rows, length, compiled)
    for index, layer in enumerate(filled.layers):  # each prompt's keys and values, once per row of its group
        cache.update(layer.keys.repeat_interleave(repeats, dim=0), layer.values.repeat_interleave(repeats, dim=0),
                     index)
    full_mask = torch.cat([mask, mask.new_ones(rows, length - prompt_length)], dim=1)  # causal beyond
    position = positions(mask)[:, -1]  # the last prompt token's

    out = torch.full((rows, budget), pad, dtype=ids.dtype, device=ids.device)
    running = torch.ones(rows, dtype=torch.bool, device=ids.device)
    tokens = ids[:, -1]
    for t in range(budget):
        scores = processors(ids, step(model, cache, tokens, position + t, full_mask))  # these do not read ids
        chosen = (torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1) if config.do_sample
                  else scores.argmax(dim=-1))
        tokens = torch.where(running, chosen, pad)
        out[:, t] = tokens
        running &= ~torch.isin(tokens, eos)
        if (t + 1) % CHECK_EVERY == 0 and not bool(running.any()):
            break
    return torch.cat([ids, out[:, :_generated_length(out, eos, budget)]], dim=1)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions of left-padded rows as `generate` counts them: real tokens from 0, pads 0."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def cache_length(prompt_length: int, max_new_tokens: int) -> int:
    """Positions the cache needs (prompt and completion), rounded up to a multiple of `BUCKET`."""
    return BUCKET * math.ceil((prompt_length + max_new_tokens) / BUCKET)


def _forward(model, cache, tokens: torch.Tensor, position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One decode step for every row: the next token's float32 logits [N, V]."""
    out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position[:, None], use_cache=True,
                logits_to_keep=1, **{cache_argument(): cache})
    return out.logits[:, -1].float()


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decoder(model, rows: int, length: int, compiled: bool):
    """The static cache for `rows` x `length` (empty) and the step that decodes into it. A compiled
    step's CUDA graphs are recorded on its cache's own tensors, so that cache is kept per model
    between rollouts (a new one would record them again), and holds its memory through GRPO's
    update (`training.memory` counts it so); an uncompiled one is made for each rollout."""
    from transformers import StaticCache

    if not compiled:
        return StaticCache(config=model.config, max_cache_len=length), _forward
    kept = _DECODERS.setdefault(model, {})
    if (rows, length) not in kept:
        step = torch.compile(_forward, mode="reduce-overhead", dynamic=False)
        kept[(rows, length)] = (StaticCache(config=model.config, max_cache_len=length), step)
    cache, step = kept[(rows, length)]
    cache.reset()
    return cache, step


@functools.cache
def cache_argument() -> str:
    """What `generate` and the forward call the key/value cache: `cache` since transformers renamed
    `past_key_values` (5.x; the old name still works there, with a deprecation warning)."""
    import inspect

    from transformers import GenerationMixin

    return "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters else "past_key_values"


def _generated_length(out: torch.Tensor, eos: torch.Tensor, budget: int) -> int:
    """How many tokens `generate` would have returned: through the step at which the last row ended
    (its EOS), or the whole budget when some row never ended."""
    hit = torch.isin(out, eos)  # [N, T]
    if not bool(hit.any(dim=1).all()):
        return budget
    return int(hit.float().argmax(dim=1).max()) + 1
