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
a fingerprint of each output (so that "already done" holds only while they are as the stage left
them: a truncated, emptied or deleted output makes the stage run again, resuming what is
intact), the counts and the times. While a stage runs, `manifests/<stage>.started` holds the
hash of the config and inputs its outputs belong to, so a rerun with both the same resumes them
and a rerun with another config or other inputs starts again from nothing; and the process
running it holds `manifests/<stage>.lock` (`filelock`: an OS lock, freed when its process dies,
however it dies), so that a second process on the same stage stops with one line naming the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from sightsound.config import config_hash, portable, save_config, unportable
from sightsound.rundir import RunDir
from sightsound.store import write_json


def model_inputs(*models: str | None) -> dict:
    """A `fingerprint` of each local model folder (a LoRA adapter's base folder too), for a stage's
    `inputs`: a model retrained in place makes the stages that used it run again; a copied one does
    not. Hub ids are left out (their name is in the config already)."""
    out = {}
    for model in models:
        folder = Path(model) if model else None
        if folder is None or not folder.is_dir():
            continue
        out[f"model:{folder}"] = fingerprint(folder)["sha256"]
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
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


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
    try:
        manifest = read_manifest(run_dir, stage)
    except ValueError as exc:  # damaged: as if the stage had not finished (its outputs are resumed if theirs)
        print(f"{stage}: {exc}; running the stage again")
        manifest_path(run_dir, stage).unlink()
        manifest = None
    if manifest is not None:
        same = manifest.get("config_hash") == config_hash and manifest.get("inputs") == inputs
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


# --- what a finished stage left: output fingerprints ---------------------------------------------

SAMPLE = 1 << 16  # bytes read at the start, middle and end of a file over 3 of them


def fingerprint(path: Path) -> dict | None:
    """A file's or folder's size and a sha256 of its files' names, sizes and sampled bytes (whole
    when small; else the first, middle and last 64 KiB): cheap on checkpoints, independent of
    modification times (a copied run is not stale), changed by truncation, emptying or deletion.
    None when the path does not exist."""
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, total = hashlib.sha256(), 0
    for file in files:
        size = file.stat().st_size
        total += size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0{size}\0".encode())
        with file.open("rb") as fh:
            if size <= 3 * SAMPLE:
                digest.update(fh.read())
            else:
                for offset in (0, size // 2, size - SAMPLE):
                    fh.seek(offset)
                    digest.update(fh.read(SAMPLE))
    return {"bytes": total, "files": len(files), "sha256": digest.hexdigest()[:32]}


def output_fingerprints(run_dir: Path, outputs: list[Path]) -> dict:
    """{path relative to the run directory: fingerprint} for each output."""
    return {str(Path(p).resolve().relative_to(run_dir.resolve())): fingerprint(Path(p)) for p in outputs}


def changed_outputs(run_dir: Path, manifest: dict) -> list[str]:
    """How the outputs a manifest vouches for differ from what is on disk now, one phrase each."""
    changes = []
    for name, was in (manifest.get("outputs") or {}).items():
        now = fingerprint(run_dir / name)
        if now == was:
            continue
        if now is None:
            changes.append(f"{name} is gone")
        elif was is None:
            changes.append(f"{name} appeared")
        else:
            changes.append(f"{name} changed ({was['bytes']:,} → {now['bytes']:,} bytes)")
    return changes


# --- one process per stage --------------------------------------------------------------------------


class StageBusy(RuntimeError):
    """Another process is running this stage in this run directory."""


_HELD: dict[Path, FileLock] = {}  # this process's stage locks, by lock file


def lock_stage(run_dir: Path, stage: str) -> None:
    """Take the stage's lock, or raise StageBusy naming the process that holds it. Re-entrant in
    one process (a stage that raised keeps its lock until it finishes or the process ends)."""
    path = RunDir(run_dir).lock(stage)
    key = path.resolve()
    if key in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    holder = path.with_name(path.name + ".holder")
    try:
        lock.acquire()
    except Timeout:
        try:
            who = json.loads(holder.read_text())
            by = f"pid {who['pid']} on {who['host']}, since {who['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            by = "another process"
        raise StageBusy(f"{run_dir}: the {stage} stage is already running ({by}); wait for it to end, "
                        "or use another run directory") from None
    holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _iso(time.time())}))
    _HELD[key] = lock


def unlock_stage(run_dir: Path, stage: str) -> None:
    path = RunDir(run_dir).lock(stage)
    lock = _HELD.pop(path.resolve(), None)
    if lock is not None:
        path.with_name(path.name + ".holder").unlink(missing_ok=True)
        lock.release()


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
    outputs: list[Path] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.manifest is not None

    def finish(self, counts: dict, **extra) -> dict:
        """Write the manifest (last, once every output is on disk), free the stage, return it."""
        manifest = write_manifest(self.run_dir, self.stage, config_hash=self.digest, inputs=self.inputs,
                                  counts=counts, started=self.started,
                                  outputs=output_fingerprints(self.run_dir, self.outputs), **extra)
        unlock_stage(self.run_dir, self.stage)
        return manifest

    def incomplete(self, counts: dict, what: str, errors: Path | None = None) -> dict:
        """Leave the manifest unwritten because some work failed (`what`, e.g. "3 samples failed");
        the next run retries just that work."""
        see = f" (see {errors})" if errors is not None else ""
        print(f"{self.stage}: {what} and will be retried on the next run{see}; no manifest written")
        unlock_stage(self.run_dir, self.stage)
        return {"counts": counts}


def open_stage(run_dir, stage: str, cfg, inputs: dict, outputs: list[Path], *,
               exclude=("out", "progress"), main_process: bool = True, note=None, check=None) -> StageRun:
    """Open a stage run. When the stage already finished with this config (hashed without the
    keys in `exclude`) and these inputs, the returned run is `done` and holds its manifest (and
    "already done" is printed, with `note(manifest)` when given) — unless its outputs changed since
    (or `check()`, a stage's own test, names damage), when it resumes. Otherwise get ready to run:
    outputs left by another config or other inputs are removed (an interrupted run's, with this
    config, are kept to be resumed), the start is marked and the resolved config saved as
    `RUN_DIR/config/<stage>.yaml`. Every output must lie inside `run_dir` (checked before anything
    is touched). In a multi-process run every process opens the stage, and only
    the main one (`main_process`) touches files or prints."""
    run_dir = Path(run_dir)
    for path in outputs:
        inside(run_dir, path)
    root = run_root(run_dir)
    digest, inputs = config_hash(cfg, exclude, root=root), portable(inputs, root)
    run = StageRun(run_dir, stage, digest, inputs, time.time(), outputs=list(map(Path, outputs)))
    if main_process:
        lock_stage(run_dir, stage)
    status = stage_status(run_dir, stage, digest, inputs)
    if status == "done":
        manifest = read_manifest(run_dir, stage)
        changes = changed_outputs(run_dir, manifest) + (check() if check else [])
        if not changes:
            run.manifest = manifest
            if main_process:
                unlock_stage(run_dir, stage)
                print(f"{stage}: already done in {run_dir}" + (f" ({note(run.manifest)})" if note else ""))
            return run
        status = "resume"
        if main_process:
            print(f"{stage}: {'; '.join(changes)} since it finished; running it again, keeping what is intact")
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


def run_root(run_dir: Path) -> Path:
    """The run directory a stage folder belongs to: the highest of it and up to three parents that
    holds `manifests/` (an evaluation's `RUN/eval/<benchmark>/<model>` belongs to `RUN`). Paths
    under it are hashed relative to it, so the run can be moved or copied and still be done."""
    root = run_dir
    for parent in list(run_dir.parents)[:3]:
        if RunDir(parent).manifests.is_dir():
            root = parent
    return root


def input_files(run_dir, manifest: dict) -> dict[str, str]:
    """The `inputs` of a stage's manifest in `run_dir`, with `{run}/…` spelled as the path it is now."""
    return unportable(manifest.get("inputs") or {}, run_root(Path(run_dir)))


def inside(run_dir: Path, path: Path) -> Path:
    """`path`, when it resolves to something strictly inside `run_dir`; a stage writes and deletes
    nothing else (a config value like `subdir: ..` must not make it delete the run directory)."""
    root, target = Path(run_dir).resolve(), Path(path).resolve()
    if root not in target.parents:
        raise ValueError(f"{path} is not inside the run directory {run_dir}: refusing to write or delete it")
    return path


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
