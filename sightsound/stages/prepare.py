"""prepare: benchmark metadata + media → `samples.jsonl` and `skipped.jsonl` in the run directory.

    sightsound prepare --dataset mmau --root data/mmau --split test-mini --out runs/mmau

For each record the reader yields, the clip is found by file stem anywhere under `media`
(default: `root`), decoded once — frames and 16 kHz mono audio in one pass — and cached in
`RUN_DIR/media/` (`<clip>-<path hash>.wav`, and `<clip>-<path hash>.<N>x<size>.frames.npy` for the
teacher when there is video; its path is in `meta["frames"]`). Metadata that names media by a path
outside `root` and `media` is skipped (`media-outside`) unless `allow_outside_media` is set.
A record whose metadata or media cannot be used goes to `skipped.jsonl` with its reason; the run
goes on. `categories` keeps only the questions of those categories (the others are counted in the
manifest, not skipped): the demo trains on the question types vision can answer and tests the
acoustic ones as a benchmark of their own. A rerun resumes where an interrupted one stopped; a finished one is not redone.
Clips are decoded `chunk` at a time on the engine `engine` names (this process, or a Ray cluster's
actors: sightsound/engine.py); this process alone writes the records, in metadata order.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sightsound import datasets, media
from sightsound.datasets.reading import Entry, Skip
from sightsound.engine import EngineConfig, map_jobs
from sightsound.manifest import open_stage
from sightsound.records import Sample
from sightsound.rundir import RunDir
from sightsound.store import JsonlWriter, keep_only, read_jsonl, sha256_file, write_jsonl


@dataclass
class PrepareConfig:
    dataset: str = "synth"  # avqa | mmau | mmau-pro | mmar | music-avqa | jsonl | hf | synth
    root: str = "runs/world"  # folder holding the metadata file
    split: str | None = None  # names the file: avqa {split}_qa.json, mmau mmau-{split}.json, ...
    columns: dict[str, str] | None = None  # hf: our field → the dataset's column, e.g. {options: choices}
    media: str | None = None  # where clips are searched for by stem (default: root)
    out: str = "runs/demo"  # the run directory
    num_frames: int = 8  # frames cached per video clip for the teacher (0: audio only)
    frame_size: int | None = 448  # longest side of cached frames in pixels (null: as decoded)
    categories: list[str] | None = None  # keep only questions of these categories (null: all)
    limit: int | None = None  # keep only the first N usable samples
    allow_outside_media: bool = False  # use media that metadata names by a path outside root and media
    max_audio_seconds: float | None = 600.0  # audio past this is cut (and counted); null: keep it all
    chunk: int = 16  # clips decoded per job (what an engine sends to a worker at once)
    engine: EngineConfig = field(default_factory=EngineConfig)  # where the decoding runs (sightsound/engine.py)
    progress: bool = True


def main(cfg: PrepareConfig) -> dict:
    run = RunDir(cfg.out)
    metadata = datasets.read(cfg.dataset, cfg.root, cfg.split, cfg.columns)
    inputs = {str(f): sha256_file(f) for f in metadata.files}
    stage = open_stage(run.root, "prepare", cfg, inputs, [run.samples, run.skipped],
                       note=lambda m: f"{m['counts']['samples']} samples", check=lambda: _lost_media(run))
    if stage.done:
        return stage.manifest
    keep_only(run.samples, lambda row: _media_intact(row, run.root))  # a lost or empty cached clip is decoded again

    media_root = Path(cfg.media or cfg.root)
    root = Path(cfg.root)  # media named by path must lie under the media's folder or the metadata's
    allowed = None if cfg.allow_outside_media else [
        media_root.resolve(), (root if root.is_dir() else root.parent).resolve()]
    left_out: Counter = Counter()  # categories not asked for → questions
    with JsonlWriter(run.samples) as samples, JsonlWriter(run.skipped) as skipped:
        # every record read, or with a `limit`, the samples wanted (a limited run reads all, decodes few)
        bar = tqdm(total=metadata.total, desc="prepare", unit="rec", disable=not cfg.progress or cfg.limit is not None)
        todo, ids = queue(metadata, cfg, samples, skipped, left_out, bar)
        if cfg.limit is not None:
            bar = tqdm(total=min(cfg.limit, len(ids)), initial=min(cfg.limit, len(samples.ids)), desc="prepare",
                       unit="sample", disable=not cfg.progress)
        setup = functools.partial(Decoder, media_root, allowed, run.media, cfg)
        while todo and (cfg.limit is None or len(samples.ids) < cfg.limit):
            # with a limit, only as many clips as samples are still wanted (again, if some fail)
            wanted, todo = (todo, []) if cfg.limit is None else (todo[:cfg.limit - len(samples.ids)],
                                                                 todo[cfg.limit - len(samples.ids):])
            jobs = [wanted[start:start + cfg.chunk] for start in range(0, len(wanted), cfg.chunk)]
            for chunk, results in map_jobs(cfg.engine, setup, _decode_chunk, jobs):
                before = len(samples.ids)
                for entry, result in zip(chunk, results, strict=True):
                    if isinstance(result, media.MediaError):  # named by metadata file and record, then the media's words
                        skipped.write(Skip(entry.sample.id, f"{metadata.source} (id {entry.sample.id}): {result}",
                                           result.kind))
                    else:
                        samples.write(result)
                bar.update(len(chunk) if cfg.limit is None else len(samples.ids) - before)  # records, or samples
        bar.close()
    return count_and_finish(stage, cfg, run, left_out, {sample_id: n for n, sample_id in enumerate(ids)})


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _media_intact(row: dict, folder: Path) -> bool:
    """Whether a sample row's cached audio and frames (named relative to the run's `folder`, as
    `Sample.located` reads them) are still there and not empty."""
    sample = Sample(**row).located(folder)
    return all(_nonempty(Path(p)) for p in (sample.audio, sample.meta.get("frames")) if p)


def _lost_media(run: RunDir) -> list[str]:
    """'N samples lost their cached media', when some did."""
    lost = sum(not _media_intact(row, run.root) for row in read_jsonl(run.samples)) if run.samples.exists() else 0
    return [f"{lost} samples lost their cached media"] if lost else []


def queue(metadata, cfg: PrepareConfig, samples: JsonlWriter, skipped: JsonlWriter, left_out: Counter,
          bar) -> tuple[list[Entry], list[str]]:
    """Write what needs no decoding (a bad record, a repeat), count what is not asked for, and
    return the entries whose clips are to be decoded, in metadata order (less those an interrupted
    earlier run wrote already), and the ids of every sample asked for, in metadata order."""
    seen: dict[str, int] = {}  # id → how many repeats of it so far
    todo: list[Entry] = []
    for entry in metadata.entries:
        if isinstance(entry, Skip):
            skipped.write(entry)
        elif cfg.categories is not None and entry.sample.category not in cfg.categories:
            left_out[entry.sample.category] += 1
        elif entry.sample.id in seen:  # every repeat gets its own line
            seen[entry.sample.id] += 1
            skipped.write(Skip(f"{entry.sample.id} (repeat {seen[entry.sample.id]})",
                               f"{metadata.source}: duplicate id {entry.sample.id!r}", "duplicate"))
        else:
            seen[entry.sample.id] = 0
            if entry.sample.id not in samples and entry.sample.id not in skipped:
                todo.append(entry)
                continue  # a queued record is counted when it is decoded
        bar.update(1)
    return todo, list(seen)


def count_and_finish(stage, cfg: PrepareConfig, run: RunDir, left_out: Counter, order: dict[str, int]) -> dict:
    """Count the samples and the skipped records (by reason), warn about cut audio, write the manifest.
    Samples are kept in metadata order (`order`: id → position), whatever order a resumed run
    decoded them in, so that the file — and every stage that hashes it — is the same."""
    rows, skips = list(read_jsonl(run.samples)), list(read_jsonl(run.skipped))
    ordered = sorted(rows, key=lambda row: order.get(row["id"], len(order)))
    if ordered != rows:
        write_jsonl(run.samples, ordered)
        rows = ordered
    n_samples, n_skipped = len({row["id"] for row in rows}), len({row["id"] for row in skips})
    reasons = Counter(line["kind"] for line in skips)
    cut = sum("audio_cut_at_seconds" in row["meta"] for row in rows)
    if cut:
        print(f"prepare: WARNING: the audio of {cut} samples was longer than {cfg.max_audio_seconds:g} s and was cut "
              "there (max_audio_seconds; see meta.audio_cut_at_seconds)")
    manifest = stage.finish({"samples": n_samples, "skipped": n_skipped, "skipped_by_kind": dict(reasons),
                             "audio_cut": cut, "left_out_by_category": dict(left_out)},
                            dataset=cfg.dataset, split=cfg.split or datasets.BENCHMARKS[cfg.dataset].split)
    summary = ", ".join(f"{n} {kind}" for kind, n in reasons.most_common())
    print(f"prepare: {n_samples} samples, {n_skipped} skipped" + (f" ({summary})" if summary else "")
          + f" → {run.samples}")
    return manifest


class Decoder:
    """What decoding needs where it runs: the media index (one walk of the media tree) and which
    clips failed already (a bad clip is decoded once)."""

    def __init__(self, media_root: Path, allowed: list[Path] | None, cache_dir: Path, cfg: PrepareConfig):
        self.index, self.allowed, self.cache_dir, self.cfg = index_media(media_root), allowed, cache_dir, cfg
        self.failed: dict[str, media.MediaError] = {}  # clip → why

    def sample(self, entry: Entry) -> Sample:
        """The entry's sample with its media attached (cached wav, video, frames), or MediaError."""
        sample, cfg = entry.sample, self.cfg
        sample.audio, sample.video, frames = materialize(entry, self.index, self.allowed, self.cache_dir, cfg, self.failed)
        if frames is not None:
            sample.meta["frames"] = frames
        if cfg.max_audio_seconds is not None and media.wav_seconds(sample.audio) >= cfg.max_audio_seconds:
            sample.meta["audio_cut_at_seconds"] = cfg.max_audio_seconds
        return sample


def _decode_chunk(decoder: Decoder, entries: list[Entry]) -> list[Sample | media.MediaError]:
    """Each entry's sample, or the MediaError that stopped it (where an engine runs it)."""
    results = []
    for entry in entries:
        try:
            results.append(decoder.sample(entry))
        except media.MediaError as exc:
            results.append(exc)
    return results


def index_media(root: Path) -> dict[str, list[Path]]:
    """Every audio or video file under `root`, by file stem (one walk of the tree)."""
    index: dict[str, list[Path]] = {}
    exts = set(media.VIDEO_EXTS) | set(media.AUDIO_EXTS)
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in exts and path.is_file():
            index.setdefault(path.stem, []).append(path)
    return index


def find_media(stems: list[str], index: dict[str, list[Path]], allowed: list[Path] | None = None
               ) -> tuple[Path | None, Path | None]:
    """The first video and the first audio file among the stems. A stem may also be a real path. A
    file that resolves (symlinks followed) outside the `allowed` folders, when given, is refused,
    whether named by path or found by name, so that neither metadata nor a link in the media tree
    can make us read (or send to a server) files from elsewhere on the machine."""
    found: list[Path] = []
    for stem in stems:
        named = Path(stem).is_file()
        for path in [Path(stem)] if named else index.get(stem, []):
            resolved = path.resolve()  # symlinks followed: a link in the dataset may point anywhere
            if allowed is not None and not any(folder in resolved.parents for folder in allowed):
                raise media.MediaError(f"{path}: outside the dataset's folders ({', '.join(map(str, allowed))})"
                                       + (f" (a link to {resolved})" if resolved != path.absolute() else "")
                                       + "; set allow_outside_media: true to use it", "media-outside")
            found.append(path)
    videos = [p for p in found if p.suffix.lower() in media.VIDEO_EXTS]
    audios = [p for p in found if p.suffix.lower() in media.AUDIO_EXTS]
    return (videos[0] if videos else None), (audios[0] if audios else None)


def materialize(entry: Entry, index, allowed: list[Path] | None, cache_dir: Path, cfg: PrepareConfig, failed: dict):
    """Cached (audio wav, source video, frames npy) for an entry's clip; decodes at most once."""
    if entry.audio_bytes is not None:
        return stored_clip(entry, cache_dir, cfg), None, None
    video, audio_file = find_media(entry.stems, index, allowed)
    if video is None and audio_file is None:
        raise media.MediaError(f"no media file with stem {' or '.join(map(repr, entry.stems))} "
                               f"under {cfg.media or cfg.root}", "media-missing")
    source = video or audio_file
    # The cache is named by the file's stem, its full path, its size and its modification time: two
    # `clip.wav` in different folders are two clips, and a clip written anew at the same path (a
    # regenerated world, a re-encoded dataset) is decoded anew, not read from the old one's cache.
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    key = f"{source.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    if key in failed:
        raise failed[key]
    wav = cache_dir / f"{key}.wav"
    frames = None
    if video is not None and cfg.num_frames > 0:  # named by what they hold, so a new spec is decoded anew
        frames = cache_dir / f"{key}.{cfg.num_frames}x{cfg.frame_size or 'full'}.frames.npy"
    if _nonempty(wav) and (frames is None or _nonempty(frames)):
        return str(wav.resolve()), _str(video), _str(frames)
    try:
        clip = media.decode(source, num_frames=cfg.num_frames if video else 0, frame_size=cfg.frame_size,
                            max_seconds=cfg.max_audio_seconds)
        if clip.audio is None:  # a silent video: its audio may come as a separate file
            if audio_file is None:
                raise media.MediaError(f"{source}: no audio stream and no separate audio file")
            clip.audio = media.decode(audio_file, num_frames=0, max_seconds=cfg.max_audio_seconds).audio
    except media.MediaError as exc:
        failed[key] = exc
        raise
    media.write_wav(wav, clip.audio)
    if frames is not None:
        media.save_frames(frames, clip.frames)
    return str(wav.resolve()), _str(video), _str(frames)


def stored_clip(entry: Entry, cache_dir: Path, cfg: PrepareConfig) -> str:
    """The cached wav of a clip the dataset stores as bytes, named by their hash (a clip that
    several questions share is decoded once). The bytes go to a scratch file for the decoder."""
    key = hashlib.sha256(entry.audio_bytes).hexdigest()[:16]
    wav = cache_dir / f"{key}.wav"
    if not _nonempty(wav):
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = media.scratch_path(cache_dir / f"{key}.source{Path(entry.audio_name).suffix}")
        scratch.write_bytes(entry.audio_bytes)
        try:
            clip = media.decode(scratch, num_frames=0, max_seconds=cfg.max_audio_seconds)
        except media.MediaError as exc:
            raise media.MediaError(f"stored clip {entry.audio_name or key!r}: "
                                   f"{str(exc).removeprefix(str(scratch) + ': ')}", exc.kind) from None
        finally:
            scratch.unlink()
        media.write_wav(wav, clip.audio)
    return str(wav.resolve())


def _str(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def summary(manifest: dict) -> str:
    c = manifest.get("counts") or {}
    kinds = ", ".join(f"{kind}: {n}" for kind, n in (c.get("skipped_by_kind") or {}).items())
    return f"{c.get('samples')} samples, {c.get('skipped')} skipped" + (f" ({kinds})" if kinds else "")
