"""The cost-sensitive checker of paper §3.2: a small audio–text verifier trained on a calibration set.

    sightsound verifier train --calibration calibration.jsonl --out runs/verifier audio_encoder=runs/tiny/student
    sightsound verifier train --from-run runs/checked --out runs/verifier   # labels: that run's verdicts
    p_accept = Verifier.load("runs/verifier").predict(["clip.wav", ...], ["<think>...</think>...", ...])  # [N]

A calibration line holds `audio` (a 16 kHz wav), `text` (a trace) and `label` (true: accept). A trace
is scored claim by claim (vectors from `checking.encoders`): its clip's audio-tower frames, max-pooled,
and each sentence of its reasoning go through a low-rank bilinear logistic regression, and its
P(accept) is the product of its sentences' (every claim must hold). Those defaults gave the best
rejection F1 on the demo's teacher traces (0.77, AUC 0.93; whole traces, mean-pooled: 0.51).
Rejection precision, recall and F1 are measured on a split held out by clip, on exactly the
classifier that is saved. The saved folder: `verifier.json` (encoders, classifier shape, training
settings, the calibration file's sha256 and counts, held-out metrics) and `classifier.safetensors`
(no pickle). docs/architecture.md, "The trained verifier", has the details.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sightsound.checking.encoders import TEXT_ENCODER, AudioEncoder, claims, embed_parts
from sightsound.models.loading import local_path
from sightsound.checking.encoders import POOLINGS, UNITS, embed_texts  # noqa: F401 (what callers import from here)
from sightsound.records import UNPARSEABLE, Sample, Trace
from sightsound.rundir import RunDir
from sightsound.scoring import rejection_metrics
from sightsound.store import read_jsonl, sha256_file

VERIFIER_FILE = "verifier.json"
WEIGHTS_FILE = "classifier.safetensors"
CALIBRATION_FILE = "calibration.jsonl"  # what `--from-run` writes into the verifier's folder


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
        encoder = AudioEncoder(local_path(info["audio_encoder"]["checkpoint"], folder), device=device,
                               pooling=info["audio_encoder"]["pooling"],
                               features=info["audio_encoder"].get("features", "tower"))
        return cls(head.eval(), info, encoder)

    def save(self, folder: str | Path) -> None:
        """Save to `folder`; a local audio encoder is written relative to it, so the two can move together."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(folder / WEIGHTS_FILE))
        info = json.loads(json.dumps(self.info))
        checkpoint = Path(info["audio_encoder"]["checkpoint"])
        if checkpoint.is_dir():
            info["audio_encoder"]["checkpoint"] = os.path.relpath(checkpoint.resolve(), folder.resolve())
        (folder / VERIFIER_FILE).write_text(json.dumps(info, indent=2) + "\n")

    def predict(self, audio_paths: list[str], texts: list[str]) -> np.ndarray:
        """[N] P(accept) for each (clip, trace) pair."""
        owner, parts = claims(texts, self.info["classifier"]["unit"])
        audio = self.audio_encoder(audio_paths)
        return head_probabilities(self.head, audio[owner], embed_parts(parts), owner)


# --- calibration and training ------------------------------------------------------------------


@dataclass
class TrainConfig:
    calibration: str | None = None  # JSONL: audio, text, label (true = supported by the audio)
    from_run: str | None = None  # or: a run whose verdicts.jsonl labels its traces (writes OUT/calibration.jsonl)
    out: str = "runs/verifier"  # the folder the verifier is saved to
    audio_encoder: str = "runs/tiny/student"  # an audio LM checkpoint (Qwen2-Audio or Qwen2.5-Omni)
    pooling: str = "max"  # the clip's audio frames → one vector: max, mean or mean+max
    features: str = "tower"  # which frames: the audio tower's output, or its log-mel input ("log-mel")
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
    run = RunDir(run_dir)
    for path in (run.verdicts, run.traces, run.samples):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run `sightsound verify` on {run.root} first")
    samples = {s.id: s for s in read_jsonl(run.samples, Sample)}
    traces = {t.id: t for t in read_jsonl(run.traces, Trace)}
    lines = []
    for verdict in read_jsonl(run.verdicts):
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
    calibration = Path(cfg.calibration) if cfg.calibration else out / CALIBRATION_FILE
    if cfg.from_run:
        written = calibration_from_run(cfg.from_run, calibration)
        print(f"verifier: {written} calibration lines from {cfg.from_run} → {calibration}")
    rows = read_calibration(calibration)
    labels = np.array([r["label"] for r in rows])
    audio_paths = [r["audio"] for r in rows]
    train_index, test_index = split_by_clip(audio_paths, labels, cfg.holdout, cfg.seed)

    encoder = AudioEncoder(cfg.audio_encoder, device=cfg.device, batch_size=cfg.batch_size, pooling=cfg.pooling,
                           features=cfg.features)
    audio = encoder(audio_paths)
    owner, parts = claims([r["text"] for r in rows], cfg.unit)
    text = embed_parts(parts)

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
                          "pooling": cfg.pooling, "features": cfg.features},
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
