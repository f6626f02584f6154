"""Every path of a run directory, named once: stages, exports, the verifier's readers, the report
and the stage registry all ask a `RunDir` where a file is.

    run = RunDir("runs/demo")
    run.samples, run.traces, run.consensus, run.corpus(), run.corpus("no-agfv")
    run.training("sft").final, run.eval("in-domain", "sft").predictions, run.manifest("teach")

What each file holds is in the README ("The run directory").
"""

from __future__ import annotations

from pathlib import Path

# prepare
SAMPLES = "samples.jsonl"
SKIPPED = "skipped.jsonl"
MEDIA = "media"
# teach
TRACES = "traces.jsonl"
CONSENSUS = "consensus.jsonl"
TEACH_ERRORS = "teach_errors.jsonl"
# verify
VERDICTS = "verdicts.jsonl"
VERIFY_ERRORS = "verify_errors.jsonl"
CORPUS = "corpus.jsonl"
# a training folder (sft/, grpo/, a variant's subdir)
METRICS = "metrics.jsonl"
COMPLETIONS = "completions.jsonl"
FINAL, BEST, MERGED = "final", "best", "merged"
CHECKPOINT = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
# an evaluation (eval/<benchmark>/<model>/)
EVAL = "eval"
PREDICTIONS = "predictions.jsonl"
RESULT = "result.json"
# the synthetic world (world/)
WORLD = "world"
FACTS = "facts.jsonl"
TRAIN_QA, VAL_QA = "train_qa.json", "val_qa.json"
VIDEOS = "videos"
# bookkeeping and the report
MANIFESTS = "manifests"
CONFIG = "config"
RUN_MANIFEST = "run"  # manifests/run.json: the latest pipeline invocation's stages and timings
REPORT = "report"  # report.md, report.html, report.csv
PLOTS = "plots"
EXPORT = "export"


def needed(path: Path, stage: str) -> Path:
    """`path`, when it exists; else the one-line error that names it and the stage that writes it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: not found; run `sightsound {stage}` on this run directory first")
    return path


def _at(*names: str) -> tuple[property, ...]:
    """One property per name: the path of that file (or folder) inside the directory."""
    return tuple(property(lambda self, name=name: self.root / name) for name in names)


class RunDir:
    """A run directory (or a folder inside one that a stage writes to: eval/<benchmark>/<model>)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    samples, skipped, media = _at(SAMPLES, SKIPPED, MEDIA)  # prepare
    traces, consensus, teach_errors = _at(TRACES, CONSENSUS, TEACH_ERRORS)  # teach
    verdicts, verify_errors = _at(VERDICTS, VERIFY_ERRORS)  # verify
    predictions, result = _at(PREDICTIONS, RESULT)  # eval/<benchmark>/<model>/
    world, plots, manifests = _at(WORLD, PLOTS, MANIFESTS)

    def corpus(self, name: str | None = None) -> Path:
        """The fact-checked corpus, or an ablation's (`corpus-<name>.jsonl`)."""
        return self.root / (CORPUS if name is None else f"corpus-{name}.jsonl")

    def training(self, subdir: str) -> TrainingDir:
        return TrainingDir(self.root / subdir)

    def benchmark(self, name: str) -> RunDir:
        """eval/<name>/: a benchmark prepared for evaluation (its samples.jsonl, media/)."""
        return RunDir(self.root / EVAL / name)

    def eval(self, benchmark: str, model: str) -> RunDir:
        """eval/<benchmark>/<model>/: one model's predictions and result on one benchmark."""
        return RunDir(self.root / EVAL / benchmark / model)

    def evaluations(self) -> list[RunDir]:
        """Every eval/<benchmark>/<model>/ with a result, sorted by path."""
        return [RunDir(p.parent) for p in sorted(self.root.glob(f"{EVAL}/*/*/{RESULT}"))]

    def training_folders(self) -> list[TrainingDir]:
        """Every folder of the run that a training stage logged metrics into, sorted by path."""
        return [TrainingDir(p.parent) for p in sorted(self.root.glob(f"*/{METRICS}"))]

    def manifest(self, stage: str) -> Path:
        return self.root / MANIFESTS / f"{stage}.json"

    def started(self, stage: str) -> Path:
        """Marks which config and inputs a stage's in-progress outputs belong to."""
        return self.root / MANIFESTS / f"{stage}.started"

    def lock(self, stage: str) -> Path:
        """Held (an OS file lock) by the one process running the stage; `<lock>.holder` says which."""
        return self.root / MANIFESTS / f"{stage}.lock"

    def config(self, stage: str, launch: bool = False) -> Path:
        """The resolved config a stage ran with (`launch`: how it was launched, e.g. accelerate's)."""
        return self.root / CONFIG / f"{stage}{'.launch' if launch else ''}.yaml"

    def report(self, suffix: str = ".md") -> Path:
        return self.root / f"{REPORT}{suffix}"

    def export(self, fmt: str, what: str) -> Path:
        return self.root / EXPORT / f"{fmt}-{what}.jsonl"


class TrainingDir:
    """A folder a training stage writes: metrics, completions, checkpoints, best/, final/."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.name = self.root.name

    def __repr__(self) -> str:
        return f"TrainingDir({str(self.root)!r})"

    metrics, completions, final, best, merged = _at(METRICS, COMPLETIONS, FINAL, BEST, MERGED)

    def checkpoint(self, step: int) -> Path:
        return self.root / f"{CHECKPOINT}{step}"

    def checkpoints(self) -> list[Path]:
        return [p for p in self.root.glob(f"{CHECKPOINT}*") if p.is_dir()] if self.root.exists() else []

    @staticmethod
    def trainer_state(checkpoint: Path) -> Path:
        """Written last into a checkpoint: one without it is partial."""
        return checkpoint / TRAINER_STATE
