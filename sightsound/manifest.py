"""Stage manifests, and the one opening and closing every stage shares.

    stage = open_stage(run_dir, "teach", cfg, inputs, outputs=[traces_path, consensus_path])
    if stage.done:                        # finished before with this config and these inputs
        return stage.manifest
    ...                                   # the stage's own work, resumable record by record
    if pending:
        return stage.incomplete(counts, f"{pending} samples failed", errors_path)
    return stage.finish(counts, model=cfg.model.model)

A stage's manifest (`RUN_DIR/manifests/<stage>.json`) is written last, after every output is on
disk: a stage without one has not finished. It holds the config hash, the hashes of the inputs,
the counts and the times. While a stage runs, `manifests/<stage>.started` holds the hash of the
config and inputs its outputs belong to, so a rerun with both the same resumes them and a rerun
with another config or other inputs starts again from nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sightsound.config import config_hash, save_config
from sightsound.rundir import RunDir
from sightsound.store import write_json


def model_inputs(*models: str | None) -> dict:
    """A fingerprint of each local model folder (its files' names, sizes and modification times; a
    LoRA adapter's base folder too), for a stage's `inputs`: a model retrained in place makes the
    stages that used it run again. Hub ids are left out (their name is in the config already)."""
    out = {}
    for model in models:
        folder = Path(model) if model else None
        if folder is None or not folder.is_dir():
            continue
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        out[f"model:{folder}"] = digest.hexdigest()
        adapter = folder / "adapter_config.json"
        if adapter.exists():
            out |= model_inputs(json.loads(adapter.read_text()).get("base_model_name_or_path"))
    return out


def manifest_path(run_dir: str | Path, stage: str) -> Path:
    return RunDir(run_dir).manifest(stage)


def read_manifest(run_dir: str | Path, stage: str, strict: bool = True) -> dict | None:
    """A stage's manifest, or None when there is none. `strict=False` (the report's reading) also
    gives None for a manifest that cannot be read or is not a JSON object."""
    path = manifest_path(run_dir, stage)
    if not strict:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(run_dir, stage: str, *, config_hash: str, inputs: dict, counts: dict,
                   started: float, **extra) -> dict:
    """Write a stage's manifest atomically; call it only after every output is on disk."""
    finished = time.time()
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "inputs": inputs,
        "counts": counts,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "seconds": round(finished - started, 3),
        **extra,
    }
    write_json(manifest_path(run_dir, stage), manifest)
    return manifest


def stage_status(run_dir, stage: str, config_hash: str, inputs: dict) -> str:
    """'done' when the manifest matches this config and these inputs; 'stale' when one exists
    for something else; 'resume' when outputs were started, without a manifest, from this very
    config and these very inputs; else 'new' (outputs started from other inputs are not resumed:
    their records could point at questions or options that are no longer there)."""
    manifest = read_manifest(run_dir, stage)
    if manifest is not None:
        same = manifest["config_hash"] == config_hash and manifest["inputs"] == inputs
        return "done" if same else "stale"
    started = _started_path(run_dir, stage)
    if started.exists() and started.read_text().split() == [config_hash, _digest(inputs)]:
        return "resume"
    return "new"


def mark_started(run_dir, stage: str, config_hash: str, inputs: dict) -> None:
    """Note which config and inputs the in-progress outputs belong to, so a rerun knows whether it
    may resume them."""
    path = _started_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path(run_dir, stage).unlink(missing_ok=True)
    path.write_text(f"{config_hash}\n{_digest(inputs)}\n")


def _started_path(run_dir, stage: str) -> Path:
    return RunDir(run_dir).started(stage)


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


# --- the opening and closing of a stage -----------------------------------------------------------


@dataclass
class StageRun:
    """One run of a stage in `run_dir`: what it was started with, and its manifest when it had
    already finished with the same config and inputs (`done`)."""

    run_dir: Path
    stage: str
    digest: str  # the config hash
    inputs: dict  # input file → sha256 (and model folder fingerprints)
    started: float
    manifest: dict | None = None

    @property
    def done(self) -> bool:
        return self.manifest is not None

    def finish(self, counts: dict, **extra) -> dict:
        """Write the manifest (last, once every output is on disk) and return it."""
        return write_manifest(self.run_dir, self.stage, config_hash=self.digest, inputs=self.inputs,
                              counts=counts, started=self.started, **extra)

    def incomplete(self, counts: dict, what: str, errors: Path | None = None) -> dict:
        """Leave the manifest unwritten because some work failed (`what`, e.g. "3 samples failed");
        the next run retries just that work."""
        see = f" (see {errors})" if errors is not None else ""
        print(f"{self.stage}: {what} and will be retried on the next run{see}; no manifest written")
        return {"counts": counts}


def open_stage(run_dir, stage: str, cfg, inputs: dict, outputs: list[Path], *,
               exclude=("out", "progress"), main_process: bool = True, note=None) -> StageRun:
    """Open a stage run. When the stage already finished with this config (hashed without the
    keys in `exclude`) and these inputs, the returned run is `done` and holds its manifest (and
    "already done" is printed, with `note(manifest)` when given). Otherwise get ready to run:
    outputs left by another config or other inputs are removed (an interrupted run's, with this
    config, are kept to be resumed), the start is marked and the resolved config saved as
    `RUN_DIR/config/<stage>.yaml`. Every output must lie inside `run_dir` (checked before anything
    is touched). In a multi-process run every process opens the stage, and only
    the main one (`main_process`) touches files or prints."""
    run_dir = Path(run_dir)
    for path in outputs:
        inside(run_dir, path)
    digest = config_hash(cfg, exclude)
    run = StageRun(run_dir, stage, digest, inputs, time.time())
    status = stage_status(run_dir, stage, digest, inputs)
    if status == "done":
        run.manifest = read_manifest(run_dir, stage)
        if main_process:
            print(f"{stage}: already done in {run_dir}" + (f" ({note(run.manifest)})" if note else ""))
        return run
    if not main_process:
        return run
    if status in ("new", "stale"):
        for path in map(Path, outputs):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    mark_started(run_dir, stage, digest, inputs)
    save_config(cfg, RunDir(run_dir).config(stage))
    return run


def inside(run_dir: Path, path: Path) -> Path:
    """`path`, when it resolves to something strictly inside `run_dir`; a stage writes and deletes
    nothing else (a config value like `subdir: ..` must not make it delete the run directory)."""
    root, target = Path(run_dir).resolve(), Path(path).resolve()
    if root not in target.parents:
        raise ValueError(f"{path} is not inside the run directory {run_dir}: refusing to write or delete it")
    return path


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
