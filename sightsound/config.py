"""Stage configuration: one dataclass per stage, YAML keys map 1:1 to fields.

    cfg = load_config(PrepareConfig, "configs/demo.yaml", ["split=val"], section="prepare")

A YAML file may hold one stage's keys at top level, or several stages under their section names
(`prepare:`, `teach:`, ...); `section` picks one. Overrides are `key=value` (dotted keys reach
nested dataclasses) and their values are parsed as YAML, so `n=8`, `frame_size=null` and
`options=[a, b]` all do what they look like (and `lr: 5e-5` is a float, as meant). Unknown keys are an error naming the key and file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import re
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


PACKAGED = Path(__file__).resolve().parent / "configs"  # the configs that ship inside the package


def find_config(name: str | Path) -> Path:
    """A config file by its path, else a packaged config by its name: `demo`, `sightsound-r1`,
    `ablations/sft`, or as a checkout spells it, `configs/demo.yaml` (so paths in the docs work after
    a plain `pip install`, from any folder)."""
    path = Path(name)
    if path.exists():
        return path
    inside = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    for candidate in (PACKAGED / inside, PACKAGED / inside.with_name(inside.name + ".yaml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{name}: no such file, and no packaged config of that name (`sightsound configs` lists them)")


def packaged_configs() -> dict[str, str]:
    """Each packaged pipeline config's name and the first sentence of its header comment (which may
    run over several comment lines)."""
    found = {}
    for path in sorted(PACKAGED.rglob("*.yaml")):
        if path.parent.name == "accelerate":
            continue
        paragraph = []
        for line in path.read_text().splitlines():
            text = line.lstrip("#").strip()
            if not line.startswith("#") or (not text and paragraph):
                break
            paragraph += [text] if text else []
        joined = " ".join(paragraph)
        found[str(path.relative_to(PACKAGED).with_suffix(""))] = re.split(r"(?<=\.)\s", joined, maxsplit=1)[0]
    return found


def with_packaged_paths(command: str) -> str:
    """A launch command whose `configs/...` arguments that do not exist here point into the package."""
    import shlex

    words = []
    for word in shlex.split(command):
        key, eq, value = word.rpartition("=") if word.startswith("--") and "=" in word else ("", "", word)
        if value.startswith("configs/") and not Path(value).exists() and (PACKAGED / value[len("configs/"):]).exists():
            value = str(PACKAGED / value[len("configs/"):])
        words.append(f"{key}{eq}{value}")
    return shlex.join(words)


def load_config(cls, path: str | Path | None = None, overrides=(), section: str | None = None,
                values: dict | None = None):
    """Build `cls` from an optional YAML file (or one section of it), then `values` (typed, e.g.
    from command-line flags), then `key=value` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = find_config(path)
        source = str(path)
        loaded = read_yaml(path)
        if section is not None and section in loaded:
            loaded = loaded[section] or {}
            source = f"{path} [{section}]"
        data = loaded
    given = {k: v for k, v in (values or {}).items() if v is not None}
    if path is None and (given or overrides):
        source = "command line"  # what the error names: no file was read
    data = {**data, **given}
    apply_overrides(data, overrides)
    return from_dict(cls, data, source)


def apply_overrides(data: dict, overrides, sections: bool = False) -> dict:
    """Set each `key=value` override in `data` (dotted keys reach into nested mappings; values are
    parsed as YAML). With `sections` every key must name a section (`section.key=value`)."""
    form = "section.key=value" if sections else "key=value"
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or (sections and "." not in key):
            raise ConfigError(f"override {item!r} is not of the form {form}")
        set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return data


def read_yaml(path: str | Path) -> dict:
    """A config file's top-level mapping, or a ConfigError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return data


def set_dotted(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    data[last] = value


def from_dict(cls, data: dict, source: str = "config", prefix: str = ""):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and values of the wrong type. A
    nested section is laid over the field's own default, so `model.backend=openai` changes the
    backend and keeps the model the stage names by default."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' for {cls.__name__} "
            f"(known keys: {', '.join(names)})"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {k: _coerce(hints[k], _over(fields[k], v), source, f"{prefix}{k}") for k, v in data.items()}
    for key, value in kwargs.items():
        _check_range(key, value, source, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


# --- the valid range of every numeric config key, by name (tests check that every key has one) ------


def _at_least(low):
    return (lambda v: v >= low), f"at least {low}"


def _above(low):
    return (lambda v: v > low), f"above {low}"


def _within(low, high):
    return (lambda v: low <= v <= high), f"between {low} and {high}"


COUNT, POSITIVE, FRACTION = _at_least(1), _above(0), _within(0, 1)
RANGES = {
    **dict.fromkeys(["n", "chunk", "limit", "steps", "batch_size", "grad_accum", "prompts_per_step", "clips",
                     "max_new_tokens", "max_completion_tokens", "val_max_new_tokens", "log_every", "save_every",
                     "keep_checkpoints", "val_every", "val_limit", "updates_per_batch", "heldout_limit", "rank",
                     "max_concurrency", "frame_size", "fps", "sample_rate", "workers"], COUNT),
    **dict.fromkeys(["lr", "alpha", "duration", "timeout", "max_grad_norm", "max_audio_seconds"], POSITIVE),
    **dict.fromkeys(["seed", "num_frames", "warmup_steps", "max_retries", "weight_decay", "beta", "epsilon",
                     "temperature", "log_completions_every", "num_cpus", "num_gpus"], _at_least(0)),
    **dict.fromkeys(["threshold", "dropout", "val_fraction", "holdout", "mime", "audio_only", "replay_share"], FRACTION),
    "max_sources": _within(2, 4),  # scenes of two sources at least; "how many" offers one to four
    "top_p": _within(0.0, 1.0),
    "top_k": _at_least(-1),  # -1: no limit (vLLM)
    "group_size": _at_least(2),  # a group's rewards need a spread: one completion has no std
    "size": _at_least(16),  # frame width and height: room for three glyphs
    "similarity_threshold": _within(-1.0, 1.0),  # a cosine
    "noise": _within(0.0, 1.0),  # the synthetic world's hiss: a standard deviation at full scale 1.0
}


def _check_range(key: str, value, source: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or key not in RANGES:
        return
    valid, description = RANGES[key]
    if not valid(value):
        raise ConfigError(f"{source}: '{name}' must be {description}, got {value!r}")


def _over(f: dataclasses.Field, value):
    """A mapping given for a dataclass-valued field, laid over that field's default value."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return {**{g.name: getattr(default, g.name) for g in dataclasses.fields(default)}, **value}


def _coerce(hint, value, source: str, key: str):
    """Check `value` against a field's annotation; build nested dataclasses; int -> float is allowed."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_dict(hint, value, source, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        return [_coerce(item_hint, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `5e-5` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' must be {hint.__name__}, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{source}: '{key}' must be {hint.__name__}, got {value!r}")
    return value


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(key: str, value: str) -> str:
    """`value` when it is a plain folder name (letters, digits, `.`, `_`, `-`; no path separators,
    not `.` or `..`), so that a folder named by a config value stays inside its parent."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or set(value) == {"."}:
        raise ConfigError(f"'{key}' must be a plain folder name (letters, digits, '.', '_', '-'), not {value!r}")
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg, exclude=("out", "progress", "report_to", "log_completions_every", "engine"),
                root: Path | None = None) -> str:
    """Stable hash of what a stage's output depends on (where it goes and how it is watched are
    excluded; paths inside the run directory `root` are hashed as `{run}/…`, so a moved run is
    still the same run)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in exclude}
    if root is not None:
        data = portable(data, root)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def portable(value, root: Path):
    """`value` with every path under the run directory `root` (as written, or resolved) spelled
    `{run}/…` — also after a `model:` prefix — in strings, lists and mappings (keys included):
    what a run's manifests compare, so that moving or copying a run does not make it stale."""
    prefixes = dict.fromkeys((str(root).rstrip("/"), str(Path(root).resolve())))
    return _map_strings(value, lambda text: _swap(text, prefixes, "{run}"))


def unportable(value, root: Path):
    """`portable` undone: `{run}` spelled as the run directory `root` is now."""
    return _map_strings(value, lambda text: _swap(text, ["{run}"], str(root)))


def _swap(text: str, prefixes, by: str) -> str:
    """`text` with a leading path `prefix` (at the start, or after a `model:`-style tag) replaced."""
    for prefix in prefixes:
        text = re.sub(rf"(?:^|(?<=:)){re.escape(prefix)}(?=/|$)", lambda _: by, text)
    return text


def _map_strings(value, change):
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {_map_strings(k, change): _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_strings(v, change) for v in value)
    return value


_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def mask_credentials(value):
    """`value` with the user and password of every URL in it (`http://user:pass@host`) masked as
    `***@`, in strings, lists and mappings: what is written to a run directory or an error."""
    return _map_strings(value, lambda text: _USERINFO.sub(r"\1***@", text))


def save_config(cfg, path: str | Path) -> bool:
    """Write the resolved config (credentials in URLs masked), so a run directory says exactly what
    produced it; whether it was written (an unchanged config is left untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(mask_credentials(to_dict(cfg)), sort_keys=False)
    if path.is_file() and path.read_bytes() == text.encode():  # (a damaged file is simply rewritten)
        return False
    path.write_text(text)
    return True


def field_comments(cls) -> dict[str, str]:
    """The comment written after each field of a config dataclass (`n: int = 4  # traces per
    sample`), read from its source (and its dataclass bases'): the help of each key, shown by the
    stage's `--help`."""
    comments = {}
    for klass in [k for k in cls.__mro__ if dataclasses.is_dataclass(k)]:
        for name, comment in _own_comments(klass).items():
            comments.setdefault(name, comment)
    return comments


def _own_comments(cls) -> dict[str, str]:
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. a class made at run time)
        return {}
    comments, current, line_start = {}, None, True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            current = None if token.type == tokenize.NEWLINE else current
            line_start = line_start or token.type == tokenize.NEWLINE
            continue
        if token.type == tokenize.COMMENT:
            if current is not None:
                comments.setdefault(current, token.string.lstrip("#").strip())
            continue
        if line_start and token.type == tokenize.NAME and token.string in names:
            current = token.string
        line_start = False
    return comments
