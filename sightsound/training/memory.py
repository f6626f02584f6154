"""How much GPU memory a training stage needs per device, from the model's config alone.

    sightsound estimate configs/sightsound-r1.yaml        # SFT and GRPO, per device, under run.launch

    counts = count_parameters(config, lora=..., freeze=[...])   # a meta-device model: no weights loaded
    parts = estimate(config, counts, Setup(...))                # {"weights": bytes, ...}

Nothing here loads weights: the model is built on PyTorch's `meta` device from its config, which
gives exact parameter counts (and which of them LoRA and `freeze:` leave trainable), and the
rest is arithmetic on the configured shapes. The parts, per device:

- weights, gradients, optimizer: under the launcher `run.launch` names. Plain torch (one GPU, DDP)
  trains the bf16 weights directly with AdamW, whose two states take the parameter's dtype;
  DeepSpeed keeps an fp32 master copy and fp32 states (12 bytes a trainable parameter, the ZeRO
  paper's K); accelerate's FSDP2 turns trainable bf16 weights into fp32 ones (computing in bf16),
  so their gradients and states are fp32 too. ZeRO-2 shards gradients and optimizer states over
  the processes, ZeRO-3 and FSDP the weights as well; an optimizer offloaded to the CPU takes no
  GPU memory.
- reference: GRPO's frozen copy of the starting model, whole on every device, or sharded like the
  policy under ZeRO-3 and FSDP (`training.sharding.prepare_reference`); none with LoRA: the policy
  with its adapter switched off is the reference.
- activations: what the backward pass keeps. Per token and decoder layer a Qwen2 layer keeps about
  `ACTIVATION_WIDTHS` tensors of the hidden width and the MLP width; with gradient checkpointing
  only each layer's input is kept, plus one layer's worth recomputed during backward. The audio
  encoder's frames count the same way when it is trained (each clip once: the scoring pass encodes
  a group's clip once). GRPO's scoring runs each prompt once for its group on the families marked
  `grouped_attention` in `models.families` (Qwen2 and Qwen2-Audio; `training.student.use_grouped_attention`):
  B prompts and B x G completions pass through the decoder, and each layer keeps the prompt's keys
  and values once per completion for its attention.
- logits: SFT's loss (`training.student.response_loss`) and GRPO's scoring compute log-probs
  `LOGP_ROWS` response tokens at a time and never hold more.
- rollout cache: generation's key/value cache for every sampled sequence (GRPO).

The peak (`total`) is what is always held (weights, gradients, optimizer, reference) plus the
larger of the training pass (activations and logits) and the rollouts (their cache) — or both,
when GRPO's rollouts are compiled (`grpo.decoder` auto or compiled, on a GPU, policy not
sharded): their static cache stays allocated for the next rollout.

These are estimates: allocator fragmentation, NCCL buffers and CUDA's own context (about 0.5–1 GB)
are not in them. `benchmarks/grpo_memory.py` compares the estimate with a measured peak.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from sightsound.config import with_packaged_paths
from sightsound.models.families import family_of
from sightsound.training.student import LOGP_ROWS

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LAUNCHERS = ("single", "ddp", "zero2", "zero3", "fsdp")

# Tensors a Qwen2 decoder layer keeps for backward, per token, in units of the hidden width H and
# the MLP width I: the two RMSNorms' inputs and outputs, q, k, v, the attention output and its
# projection (H each; k and v scaled by the key/value heads), and the MLP's gate, up, activation
# and product (I each).
ACTIVATION_WIDTHS = {"hidden": 8, "mlp": 4}
# The same for a Whisper-style encoder layer (width d, feed-forward f): two LayerNorms, q, k, v,
# attention output, out-projection, residuals (d each) and fc1, its activation (f each).
ENCODER_WIDTHS = {"hidden": 9, "mlp": 2}


@dataclass
class Setup:
    """One training stage's shapes and settings, per device."""
    dtype: str = "bfloat16"
    launcher: str = "single"  # one of LAUNCHERS
    processes: int = 1
    offload_optimizer: bool = False
    gradient_checkpointing: bool = False
    sequences: int = 8  # sequences in one forward (SFT: batch_size; GRPO: prompts × group size)
    clips: int = 8  # distinct audio clips in it (GRPO: prompts)
    prompt_tokens: int = 100  # text tokens of the prompt, audio placeholders not counted
    completion_tokens: int = 256  # the response (SFT) or the sampled completion (GRPO)
    audio_seconds: float = 10.0  # the clip (AVQA's are 10 s): its tokens in the decoder
    audio_window: float = 30.0  # what the encoder runs on: Qwen2-Audio pads every clip to 30 s
    stage: str = "sft"  # sft | grpo
    reference: bool = False  # GRPO with a frozen copy of the model (full-parameter, beta > 0)
    grouped: bool = False  # GRPO scoring runs each prompt once for its group (`student.use_grouped_attention`)
    cache_kept: bool = False  # GRPO's compiled rollouts keep their static cache through the update (`training.decoding`)


@dataclass
class Counts:
    total: int
    trainable: int
    audio_trainable: int  # trainable parameters inside the audio encoder


def count_parameters(config, lora=None, freeze: list[str] = ()) -> Counts:
    """Exact counts from a model built on the meta device. `lora` (a LoraConfig, enabled) makes its
    adapters the only trainable parameters; otherwise everything not matched by `freeze` trains."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = _model_class(config, AutoModelForImageTextToText)._from_config(config)
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    if lora is not None and lora.enabled:
        pattern = re.compile(lora.target_regex)
        adapters = {name: lora.rank * (module.in_features + module.out_features)
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)}
        return Counts(total + sum(adapters.values()), sum(adapters.values()),
                      sum(n for name, n in adapters.items() if "audio_tower" in name))
    patterns = [re.compile(p) for p in freeze]
    trainable = {name: p.numel() for name, p in named.items() if not any(q.search(name) for q in patterns)}
    return Counts(total, sum(trainable.values()), sum(n for name, n in trainable.items() if "audio_tower" in name))


def _model_class(config, fallback):
    """The architecture the config names (Qwen2AudioForConditionalGeneration, ...)."""
    import transformers

    names = getattr(config, "architectures", None) or []
    for name in names:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return fallback


def audio_tokens(seconds: float) -> int:
    """Tokens a clip of `seconds` becomes: 100 mel frames a second, halved by the encoder's
    stride-2 convolution and again by its pooling (Qwen2-Audio: 750 for 30 s)."""
    return math.ceil(math.ceil(seconds * 100 / 2) / 2)


def estimate(config, counts: Counts, setup: Setup) -> dict[str, float]:
    """Bytes per device of each part (see the module docstring), and `total`."""
    if setup.launcher not in LAUNCHERS:
        raise ValueError(f"launcher {setup.launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    b = DTYPE_BYTES[setup.dtype]
    n = max(setup.processes, 1)
    text = getattr(config, "text_config", config)
    audio = getattr(config, "audio_config", None)
    shard_weights = n if setup.launcher in ("zero3", "fsdp") else 1
    shard_states = n if setup.launcher in ("zero2", "zero3", "fsdp") else 1
    deepspeed = setup.launcher in ("zero2", "zero3")

    trained = 4 if setup.launcher == "fsdp" else b  # FSDP2 keeps trainable weights in fp32
    parts = {"weights": ((counts.total - counts.trainable) * b + counts.trainable * trained) / shard_weights}
    parts["gradients"] = counts.trainable * trained / shard_states
    state_bytes = 12 if deepspeed else 2 * trained  # fp32 master + two fp32 states, or two states in the weights' dtype
    parts["optimizer"] = 0.0 if setup.offload_optimizer else counts.trainable * state_bytes / shard_states
    parts["reference"] = counts.total * b / shard_weights if setup.reference else 0.0  # sharded as the policy is

    H, I, L, V = text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.vocab_size
    kv_width = H * text.num_key_value_heads / text.num_attention_heads
    per_token_layer = b * (ACTIVATION_WIDTHS["hidden"] * H + ACTIVATION_WIDTHS["mlp"] * I - 2 * (H - kv_width))
    a_tokens = audio_tokens(setup.audio_seconds) if audio is not None else 0
    prompt = a_tokens + setup.prompt_tokens
    tokens = setup.sequences * (prompt + setup.completion_tokens)  # every row a prompt and a completion
    # The training pass: grouped, each prompt once and every completion after it, plus the prompt's
    # keys and values repeated for each completion's attention (kept for its backward).
    passed = setup.clips * prompt + setup.sequences * setup.completion_tokens if setup.grouped else tokens
    repeated_kv = setup.sequences * prompt * 2 * kv_width * b if setup.grouped else 0.0
    if setup.gradient_checkpointing:
        decoder = passed * (L * H * b + per_token_layer) + repeated_kv
    else:
        decoder = passed * L * per_token_layer + L * repeated_kv
    encoder = 0.0
    if audio is not None and counts.audio_trainable:
        frames = math.ceil(setup.audio_window * 50)  # after the stride-2 convolution; pooling comes last
        d, f, La = audio.d_model, audio.encoder_ffn_dim, audio.encoder_layers
        per_frame_layer = b * (ENCODER_WIDTHS["hidden"] * d + ENCODER_WIDTHS["mlp"] * f)
        layers_kept = (La * d * b + per_frame_layer) if setup.gradient_checkpointing else La * per_frame_layer
        encoder = setup.clips * frames * layers_kept
    parts["activations"] = decoder + encoder

    # SFT's loss and GRPO's scoring, chunked: one chunk's logits in the weights' dtype and float32, and its log-softmax
    parts["logits"] = min(LOGP_ROWS, setup.sequences * setup.completion_tokens) * V * (b + 8)
    if setup.stage != "sft":
        parts["rollout_cache"] = tokens * L * 2 * kv_width * b  # keys and values of every sampled sequence
    held = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["reference"]
    if setup.cache_kept:  # allocated all along: beside the training pass, not instead of it
        parts["total"] = held + parts["rollout_cache"] + parts["activations"] + parts["logits"]
    else:
        parts["total"] = held + max(parts["activations"] + parts["logits"], parts.get("rollout_cache", 0.0))
    return parts


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"


# --- what a config says: the model's architecture and the launcher ------------------------------

# Configs of the paper's student, for machines that have not downloaded it: Qwen2-Audio-7B-Instruct's
# published config.json (its audio encoder is transformers' Qwen2AudioEncoderConfig default).
KNOWN_CONFIGS = {
    "Qwen/Qwen2-Audio-7B-Instruct": {"model_type": "qwen2_audio", "architectures": ["Qwen2AudioForConditionalGeneration"],
                                     "text_config": {"model_type": "qwen2", "hidden_size": 4096,
                                                     "intermediate_size": 11008, "num_hidden_layers": 32,
                                                     "num_attention_heads": 32, "num_key_value_heads": 32,
                                                     "vocab_size": 156032, "max_position_embeddings": 8192,
                                                     "tie_word_embeddings": False},
                                     "audio_token_index": 151646, "vocab_size": 156032},
}
KNOWN_CONFIGS["Qwen/Qwen2-Audio-7B"] = KNOWN_CONFIGS["Qwen/Qwen2-Audio-7B-Instruct"]


def model_config(path: str):
    """A checkpoint's config: from its folder or the hub cache, else a known published one, else
    from the hub (a known one is used before asking the network, which may not be there)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        pass
    if path in KNOWN_CONFIGS:
        known = dict(KNOWN_CONFIGS[path])
        return type(AutoConfig.for_model(known.pop("model_type")))(**known)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: no config.json there, in the hub cache or on the hub ({exc}); give a "
                         "folder holding the model's config.json") from None


def launcher_of(command: str | None) -> tuple[str, int, bool]:
    """(launcher, processes, optimizer offloaded) of a `run.launch` command: its accelerate
    `--config_file` (distributed_type, zero_stage, num_processes, offload_optimizer_device) and its
    `--num_processes`. No command: one process."""
    import shlex
    from pathlib import Path

    import yaml

    if not command:
        return "single", 1, False
    words = shlex.split(with_packaged_paths(command))  # configs/accelerate/... also from the package

    def option(name):
        for i, word in enumerate(words):
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
        return None

    settings = {}
    if option("--config_file"):
        path = Path(option("--config_file"))
        if not path.exists():
            raise ValueError(f"run.launch: accelerate config {option('--config_file')} not found")
        settings = yaml.safe_load(path.read_text()) or {}
    processes = int(option("--num_processes") or settings.get("num_processes") or 1)
    kind = settings.get("distributed_type", "MULTI_GPU" if processes > 1 else "NO")
    deepspeed = settings.get("deepspeed_config") or {}
    offload = str(deepspeed.get("offload_optimizer_device", "none")).lower() not in ("none", "")
    return _launcher(kind, int(deepspeed.get("zero_stage", 2))), processes, offload


SHARDED = ("zero3", "fsdp")  # launchers whose processes each hold a part of every weight


def _launcher(kind: str, zero_stage: int | None) -> str:
    """One of LAUNCHERS for accelerate's distributed_type (and DeepSpeed's ZeRO stage)."""
    if kind == "DEEPSPEED":
        return "zero3" if zero_stage == 3 else "zero2" if zero_stage == 2 else "ddp"
    return {"FSDP": "fsdp", "MULTI_GPU": "ddp"}.get(kind, "single")


# --- a pipeline config's training stages -----------------------------------------------------------

PARTS = ("weights", "gradients", "optimizer", "reference", "activations", "logits", "rollout_cache", "total")


def stage_estimates(stage: str, cfg, launch: str | tuple | None, *, audio_seconds: float, prompt_tokens: int,
                    response_tokens: int, fallback_model: str | None = None) -> dict:
    """A training stage's estimate from its config (an SFTConfig or GRPOConfig) under `launch` (a
    `run.launch` command, or `launcher_of`'s tuple): the model, its parameter counts, the setup, and
    the parts with and without gradient checkpointing."""
    path = cfg.model
    try:
        config = model_config(path)
    except ValueError:
        if fallback_model is None:  # GRPO starts from SFT's output, which does not exist yet
            raise
        config, path = model_config(fallback_model), fallback_model
    counts = count_parameters(config, cfg.lora, cfg.freeze)
    launcher, processes, offload = launch if isinstance(launch, tuple) else launcher_of(launch)
    grpo = stage == "grpo"
    setup = Setup(dtype=cfg.dtype, launcher=launcher, processes=processes, offload_optimizer=offload,
                  sequences=cfg.prompts_per_step * cfg.group_size if grpo else cfg.batch_size,
                  clips=cfg.prompts_per_step if grpo else cfg.batch_size, prompt_tokens=prompt_tokens,
                  completion_tokens=cfg.max_completion_tokens if grpo else response_tokens,
                  audio_seconds=audio_seconds, stage=stage,
                  reference=grpo and not cfg.lora.enabled and cfg.beta > 0,
                  grouped=grpo and family_of(config.model_type).grouped_attention,
                  cache_kept=grpo and launcher not in SHARDED and getattr(cfg, "decoder", "") in ("auto", "compiled"))
    by_checkpointing = {on: estimate(config, counts, dataclasses.replace(setup, gradient_checkpointing=on))
                        for on in (False, True)}
    return {"stage": stage, "model": path, "counts": counts, "setup": setup, "configured": cfg.gradient_checkpointing,
            "parts": by_checkpointing}


HEADROOM = 0.85  # `gradient_checkpointing: auto` turns it on when the estimate without it passes this share of the GPU


def checkpointing(stage: str, cfg, accelerator, shapes) -> tuple[bool, str]:
    """Whether to train with gradient checkpointing, and why: `cfg.gradient_checkpointing` when it
    is true or false; with "auto", on when this stage's estimate without it (at the shapes
    `shapes()` gives, see `shapes_of`) passes `HEADROOM` of this GPU's memory, off on a CPU.
    Recomputing activations costs about a third more compute, worth paying only when memory needs it."""
    if cfg.gradient_checkpointing != "auto":
        return bool(cfg.gradient_checkpointing), "as configured"
    if accelerator.device.type != "cuda":
        return False, "auto: not on a GPU"
    total = device_memory(accelerator.device)
    need = stage_estimates(stage, cfg, launcher_of_accelerator(accelerator), **shapes())["parts"][False]["total"]
    verdict = need > HEADROOM * total
    return verdict, (f"auto: {need / 1024 ** 3:.1f} GiB estimated without it, {'over' if verdict else 'within'} "
                     f"{HEADROOM:.0%} of this GPU's {total / 1024 ** 3:.1f} GiB")


def device_memory(device) -> int:
    """Bytes of memory on a CUDA device."""
    import torch

    return torch.cuda.get_device_properties(device).total_memory


def launcher_of_accelerator(accelerator) -> tuple[str, int, bool]:
    """`launcher_of`'s (launcher, processes, optimizer offloaded) for a running accelerator."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    zero = plugin.deepspeed_config.get("zero_optimization", {}) if plugin is not None else {}
    offload = str((zero.get("offload_optimizer") or {}).get("device", "none")).lower() not in ("none", "")
    stage = plugin.zero_stage if plugin is not None else None
    return _launcher(accelerator.distributed_type.value, stage), accelerator.num_processes, offload


def shapes_of(processor, conversations: list[list[dict]], responses: list[int | str], limit: int = 256) -> dict:
    """`stage_estimates`' shapes for training on these conversations: the longest prompt (text
    tokens), response (tokens of a text, or a count) and audio clip among up to `limit` of them,
    picked evenly."""
    import soundfile as sf

    from sightsound.models.loading import render

    step = max(1, len(conversations) // limit)
    picked = list(range(0, len(conversations), step))[:limit]
    tokens = processor.tokenizer
    prompt = max((len(tokens(render(processor, conversations[i])).input_ids) for i in picked), default=0)
    response = max((r if isinstance(r, int) else len(tokens(r).input_ids) for r in (responses[i] for i in picked)),
                   default=0)
    seconds = [sf.info(part["path"]).duration if "path" in part else len(part["audio"]) / 16_000
               for i in picked for message in conversations[i] for part in _parts(message) if part["type"] == "audio"]
    return {"prompt_tokens": prompt, "response_tokens": response, "audio_seconds": max(seconds, default=0.0)}


def _parts(message: dict) -> list[dict]:
    return message["content"] if isinstance(message.get("content"), list) else []


def describe(result: dict, gpu_gib: float | None = None) -> str:
    """A plain-text table of one stage's estimate, per device, in GiB."""
    s, c = result["setup"], result["counts"]
    launcher = s.launcher + (f" × {s.processes}" if s.processes > 1 else "") + (", optimizer on CPU" if s.offload_optimizer else "")
    lines = [f"{result['stage']}: {result['model']} — {c.total / 1e9:.2f} B parameters, {c.trainable / 1e9:.3f} B trainable "
             f"({c.audio_trainable / 1e6:.0f} M in the audio encoder); {s.dtype}; {launcher}",
             f"  per device: {s.sequences} sequences of {audio_tokens(s.audio_seconds)} audio + {s.prompt_tokens} "
             f"prompt + {s.completion_tokens} completion tokens, {s.clips} clips encoded"
             + ("; scoring runs each prompt once for its group" if s.grouped else "")
             + ("; compiled rollouts keep their cache through the update" if s.cache_kept else ""),
             f"  {'GiB per device':16} {'no checkpointing':>17} {'checkpointing':>14}"]
    for part in PARTS:
        off, on = (result["parts"][flag].get(part) for flag in (False, True))
        if off is None:
            continue
        lines.append(f"  {part:16} {gib(off):>17} {gib(on):>14}")
    flag, note = result["configured"], ""
    if flag == "auto":  # on unless the GPU given has room without it (no GPU given: on)
        need = result["parts"][False]["total"]
        flag = gpu_gib is None or need > HEADROOM * gpu_gib * GIB
        note = (f", {'on' if flag else 'off'} on {gpu_gib:g} GiB" if gpu_gib else "") + (
            f"; off on GPUs of {gib(need / HEADROOM)} GiB or more")
    chosen = result["parts"][flag]["total"]
    verdict = f"  configured (gradient_checkpointing: {str(result['configured']).lower()}{note}): {gib(chosen)} GiB"
    if gpu_gib:
        verdict += f" — {'fits' if chosen <= gpu_gib * GIB else 'does NOT fit'} in {gpu_gib:g} GiB"
    return "\n".join(lines + [verdict])
