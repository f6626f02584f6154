"""A run's training data in the dataset formats of the trainers our users also use.

    sightsound export runs/demo --format swift                   # → runs/demo/export/swift-sft.jsonl
    sightsound export runs/demo --format swift --what grpo       # → runs/demo/export/swift-grpo.jsonl
    sightsound export runs/demo --format llamafactory --out data/avqa_cot.jsonl

`--what sft` exports the fact-checked corpus (`corpus.jsonl`, read alone: each `records.CorpusRow`
holds its question, options and audio) as the pairs `sightsound sft` trains on; `--what grpo` the
unanimous prompts of `consensus.jsonl` with the teacher's label as `solution`. Formats: `swift`
(ms-swift), `llamafactory` (sharegpt; sft only) and `trl`, the prompt built by `prompts.student_turn`.
TRL's SFTTrainer gets the audio through `sightsound.training.trl_audio.AudioCollator`; its
GRPOTrainer passes no audio, so GRPO is exported for ms-swift only, with a plugin file registering
the run's own rewards (ms-swift's stock `accuracy` parses math, not option words).
`--format mmau-submission` turns an MMAU test evaluation into the leaderboard's file instead.
Details: docs/reference.md, "sightsound/exports.py".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sightsound import prompts, rundir
from sightsound.answers import bare_letter, extract_answer
from sightsound.config import ConfigError, read_yaml
from sightsound.datasets.reading import load_json_list
from sightsound.manifest import input_files, read_manifest
from sightsound.records import Consensus, CorpusRow, Sample
from sightsound.rl import DEFAULT_REWARDS, reward_function
from sightsound.rundir import RunDir
from sightsound.store import read_jsonl, sha256_file, write_json

FORMATS = ("swift", "llamafactory", "trl", "mmau-submission")
MMAU_SUBMISSION = "mmau-submission.json"  # written into the evaluation's folder
LLAMAFACTORY_INFO = "dataset_info.json"  # LLaMA-Factory's dataset registry, beside the export
WHAT = ("sft", "grpo")


def export(run_dir: str | Path, fmt: str, what: str = "sft", out: str | Path | None = None,
           corpus: str = rundir.CORPUS, answer: str | None = None, metadata: str | Path | None = None,
           force: bool = False, media_root: str | Path | None = None) -> Path:
    """Write the export and return its path (default `RUN_DIR/export/<format>-<what>.jsonl`). An
    `out` of the user's never replaces a file of the run directory (but for its export folder's),
    nor any other existing file unless `force`. `answer` (letter or text) defaults to the run's
    own: what its sft (or grpo) stage asked for, else its teacher. Audio paths are absolute (where
    the run is now, also when it was moved or copied), or relative to `media_root` when given."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if out is not None:  # (an eval folder's mmau-submission may sit beside its predictions)
        check_out(Path(run_dir), Path(out), force, inside_ok=fmt == "mmau-submission")
    if fmt == "mmau-submission":
        return mmau_submission(run_dir, out, metadata)
    if what not in WHAT:
        raise ConfigError(f"--what {what!r}: expected one of {', '.join(WHAT)}")
    if fmt == "llamafactory" and what == "grpo":
        raise ConfigError("LLaMA-Factory has no GRPO trainer; export --what sft for it, or grpo for swift")
    if fmt == "trl" and what == "grpo":
        raise ConfigError("TRL's GRPOTrainer passes images to the model but no audio, so it would train an audio "
                          "model on text alone; export --format swift --what grpo for ms-swift (with its reward "
                          "plugin), or train with `sightsound grpo`")
    run = RunDir(run_dir)
    answer = answer or run_answer(run, what)
    if what == "sft":  # the corpus stands alone: its rows hold their question, options and audio
        pairs = [(row, row.text.strip()) for row in read_jsonl(rundir.needed(run / corpus, "verify"), CorpusRow)]
        _check_agreement(pairs, answer, run / corpus)
    else:
        samples = {s.id: s for s in read_jsonl(rundir.needed(run.samples, "prepare"), Sample)}
        unanimous = [row for row in read_jsonl(rundir.needed(run.consensus, "teach"), Consensus) if row.unanimous]
        unknown = [row.id for row in unanimous if row.id not in samples]
        if unknown:
            raise ValueError(f"{run.consensus}: {len(unknown)} rows name samples that {run.samples} does not hold "
                             f"(first: id {unknown[0]!r}); run `sightsound teach` on this run again")
        pairs = [(samples[row.id], prompts.label_text(samples[row.id].options, row.label, answer)) for row in unanimous]
    rows = [_row(fmt, what, record, value, answer, media_root) for record, value in pairs]
    path = Path(out) if out else run.export(fmt, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    if fmt == "llamafactory":
        _register(path)
    if fmt == "swift" and what == "grpo":
        write_swift_plugin(path.parent / SWIFT_PLUGIN, run_rewards(run), path)
    return path


SWIFT_PLUGIN = "sightsound_swift_rewards.py"  # beside a swift grpo export: its rewards for ms-swift

_SWIFT_PLUGIN_TEXT = '''"""sightsound's GRPO rewards for ms-swift, written by `sightsound export --format swift --what grpo`.

ms-swift's stock `accuracy` reward parses math (math_verify): an option word or letter such as
"D", "one" or "high" reads as nothing and pays 0 on every row. These are the rewards `sightsound
grpo` trained this run with, registered in ms-swift's reward registry (`orms`), as its guide to
custom rewards describes. sightsound must be importable where ms-swift runs; ms-swift 4.6 pins
older transformers and peft than sightsound declares, so install it there with
`pip install --no-deps sightsound` (the rewards need neither):

    swift rlhf --rlhf_type grpo --external_plugins {plugin} --dataset {dataset} \\
        --reward_funcs {names} --reward_weights {weights} ...
"""

try:
    from swift.rewards import ORM, orms  # ms-swift 4
except ImportError:
    from swift.plugin import ORM, orms  # ms-swift 3

from sightsound.exports import swift_rewards

orms.update(swift_rewards(ORM, {rewards!r}))
'''


def swift_name(reward: str) -> str:
    """A reward's name in ms-swift's registry: `sightsound_<name>` (an import path's `.:` as `_`)."""
    return "sightsound_" + re.sub(r"\W", "_", reward)


def swift_rewards(orm: type, rewards: dict) -> dict[str, type]:
    """{ms-swift name: reward class} for each of our `rewards` (names; `rl.reward_function` finds
    each), as ms-swift's `ORM` subclasses: called with the completions and the dataset's columns
    (`solution`, `options`, …) as keyword arguments, one float per completion."""
    classes = {}
    for name in rewards:
        function = reward_function(name)

        def __call__(self, completions, solution, options=None, _function=function, **kwargs):
            options = options if options is not None else [[]] * len(completions)
            return [float(_function(completion, label, choices))
                    for completion, label, choices in zip(completions, solution, options, strict=True)]

        classes[swift_name(name)] = type(swift_name(name), (orm,), {"__call__": __call__})
    return classes


def run_rewards(run: RunDir) -> dict:
    """The rewards (name → weight) the run's grpo stage was set to, else sightsound's defaults."""
    path = run.config("grpo")
    rewards = read_yaml(path).get("rewards") if path.exists() else None
    return dict(rewards) if isinstance(rewards, dict) and rewards else dict(DEFAULT_REWARDS)


def write_swift_plugin(path: Path, rewards: dict, dataset: Path) -> None:
    """The ms-swift plugin file registering `rewards` (see its docstring)."""
    path.write_text(_SWIFT_PLUGIN_TEXT.format(
        plugin=path.name, dataset=dataset.name, names=" ".join(map(swift_name, rewards)),
        weights=" ".join(str(weight) for weight in rewards.values()), rewards=rewards))


def run_answer(run: RunDir, what: str) -> str:
    """How the run asked for multiple-choice answers: its `what` stage's `answer`, else teach's, else letter."""
    for stage in (what, "teach"):
        path = run.config(stage)
        value = read_yaml(path).get("answer") if path.exists() else None
        if value in ("letter", "text"):
            return value
    return "letter"


def _check_agreement(pairs: list, answer: str, corpus: Path) -> None:
    """Refuse prompts that ask for one answer form over traces that answer in the other."""
    answered = [bare_letter(extract_answer(text), len(row.options)) is not None for row, text in pairs if row.options]
    if not answered:
        return
    style = "letter" if sum(answered) > len(answered) / 2 else "text"
    if style != answer:
        raise ConfigError(f"{corpus}: its traces answer with the option {style}, but --answer {answer} would ask "
                          f"for the {answer}; drop --answer (the run's own is {style}) so that prompts and answers agree")


def check_out(run_dir: Path, out: Path, force: bool, inside_ok: bool = False) -> None:
    """Refuse to write an export among a run's own files, or over an existing file unless `force`."""
    root, target = run_dir.resolve(), out.resolve()
    if not target.exists():
        return
    if not inside_ok and root in target.parents and (root / rundir.EXPORT).resolve() not in target.parents:
        raise ConfigError(f"--out {out} is one of the run directory's own files; write the export elsewhere, "
                          f"or under {run_dir / rundir.EXPORT}")
    if not force:
        raise ConfigError(f"--out {out} exists; pass --force to replace it")


def prompt_text(record: Sample | CorpusRow, answer: str) -> str:
    """The student's chain-of-thought prompt for this question, as `sightsound sft` and `grpo` ask it."""
    turn = prompts.student_turn(record, "zero_shot_cot", answer)
    return next(part["text"] for part in turn[0]["content"] if part["type"] == "text")


def _row(fmt: str, what: str, sample: Sample | CorpusRow, value: str, answer: str, media_root=None) -> dict:
    """One line: `value` is the trace (sft) or the label as its solution (grpo); the record's `id`
    is its sample's."""
    text = prompt_text(sample, answer)
    audio = Path(sample.audio).resolve()
    audio = Path(os.path.relpath(audio, Path(media_root).resolve())).as_posix() if media_root else str(audio)
    sample_id = getattr(sample, "sample_id", sample.id)
    if fmt == "trl":  # sft only (TRL's GRPOTrainer passes no audio)
        return {"prompt": [{"role": "user", "content": text}], "completion": [{"role": "assistant", "content": value}],
                "audio": audio, "id": sample_id}
    messages = [{"role": "user", "content": "<audio>" + text}]
    if what == "sft":
        messages.append({"role": "assistant", "content": value})
    row = {"messages": messages, "audios": [audio]}
    if what == "grpo":
        row.update(solution=value, options=sample.options)
    return {**row, "id": sample_id}


def _register(path: Path) -> None:
    """LLaMA-Factory's dataset_info.json beside the file, with this dataset's entry added."""
    info_path = path.parent / LLAMAFACTORY_INFO
    try:
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    except ValueError as exc:
        raise ValueError(f"{info_path}: not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_path}: LLaMA-Factory's dataset registry is a JSON object, not {type(info).__name__}")
    info[path.stem] = {"file_name": path.name, "formatting": "sharegpt",
                       "columns": {"messages": "messages", "audios": "audios"},
                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                "assistant_tag": "assistant"}}
    info_path.write_text(json.dumps(info, indent=2) + "\n")


MMAU_OUTPUT_KEY = "model_output"  # what the official evaluation.py scores


def mmau_submission(eval_dir: str | Path, out: str | Path | None = None, metadata: str | Path | None = None) -> Path:
    """The leaderboard file for an evaluation on MMAU (default `EVAL_DIR/mmau-submission.json`):
    the benchmark file prepare read (or `metadata`), each record with its prediction under
    `model_output` — the key the official scorer reads (`output_key = 'model_output'` in
    Sakshi113/MMAU's evaluation.py; a record without it is skipped) — and under `model_prediction`,
    the name its README gives."""
    eval_dir = Path(eval_dir)
    rows = {row["id"]: row for row in read_jsonl(rundir.needed(RunDir(eval_dir).predictions, "eval"))}
    datasets_seen = {row["meta"].get("dataset") for row in rows.values()}
    if datasets_seen - {"mmau"}:
        raise ConfigError(f"{eval_dir}: these predictions are on {', '.join(sorted(map(str, datasets_seen)))}, "
                          "not MMAU; mmau-submission exports an MMAU evaluation")
    source = Path(metadata) if metadata else _benchmark_file(eval_dir)
    records = load_json_list(source)
    missing = 0
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{source} record {number}: missing field 'id'")
        row = rows.get(str(record["id"]))
        missing += row is None
        record[MMAU_OUTPUT_KEY] = record["model_prediction"] = "" if row is None else _prediction_text(row)
    path = Path(out) if out else eval_dir / MMAU_SUBMISSION
    write_json(path, records)
    if missing:
        print(f"export: WARNING: {missing} of {len(records)} questions have no prediction (skipped by prepare or "
              f"not evaluated); they are written with an empty prediction, which the leaderboard scores wrong")
    return path


def _prediction_text(row: dict) -> str:
    """The chosen option as text, else the model's own answer (the official rule reads words)."""
    if row["options"] and row["pred_index"] is not None:
        return row["options"][row["pred_index"]]
    return extract_answer(row["response"]).strip()


def _benchmark_file(eval_dir: Path) -> Path:
    """The MMAU JSON file behind an evaluation: eval's manifest names its samples, prepare's manifest
    beside them names the file it read (with its sha256, checked: the order must be the one read)."""
    manifest = read_manifest(eval_dir, "eval")
    if manifest is None:
        raise FileNotFoundError(f"{eval_dir}: no eval manifest; run `sightsound eval` to the end first")
    samples = next((Path(p) for p in input_files(eval_dir, manifest) if Path(p).name == rundir.SAMPLES), None)
    prepared = read_manifest(samples.parent, "prepare") if samples else None
    if prepared is None:
        raise FileNotFoundError(f"{eval_dir}: the prepare manifest of its samples is not found; "
                                "pass the benchmark file (mmau-test.json) with --metadata")
    path, digest = next(iter(input_files(samples.parent, prepared).items()))
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: the benchmark file prepare read is gone; pass it with --metadata")
    if sha256_file(path) != digest:
        raise ValueError(f"{path}: changed since prepare read it (sha256 differs); prepare again, "
                         "or pass the file prepare read with --metadata")
    return Path(path)
