from dataclasses import dataclass, field

import pytest
import yaml

from sightsound.config import ConfigError, config_hash, load_config, save_config
from sightsound.stages.prepare import PrepareConfig


@dataclass
class Inner:
    rank: int = 8
    alpha: float = 16.0


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    lr: float = 1e-3
    tags: list[str] = field(default_factory=list)
    limit: int | None = None
    lora: Inner = field(default_factory=Inner)


def test_yaml_keys_map_to_fields_and_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\nsteps: 5\nlora:\n  rank: 4\n")
    cfg = load_config(Outer, path, ["steps=7", "lora.alpha=32", "tags=[a, b]", "lr=2e-5"])
    assert cfg == Outer(name="run", steps=7, lr=2e-5, tags=["a", "b"], lora=Inner(rank=4, alpha=32.0))
    assert isinstance(cfg.lora.alpha, float)


def test_section_of_a_pipeline_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("prepare:\n  dataset: mmau\n  split: test-mini\nteach:\n  n: 4\n")
    cfg = load_config(PrepareConfig, path, section="prepare")
    assert (cfg.dataset, cfg.split, cfg.num_frames) == ("mmau", "test-mini", 8)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: run\nstep: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'step'"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match=r"unknown key 'lora\.rnak'"):
        load_config(Outer, None, ["lora.rnak=3"])


def test_wrong_types_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="'steps' must be int"):
        load_config(Outer, None, ["steps=many"])
    with pytest.raises(ConfigError, match="'steps' must be int"):
        load_config(Outer, None, ["steps=true"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["steps"])
    assert load_config(Outer, None, ["limit=null"]).limit is None
    assert load_config(Outer, None, ["limit=3"]).limit == 3


def test_cli_values_sit_between_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\nname: file\n")
    cfg = load_config(Outer, path, ["steps=9"], values={"steps": 6, "name": "flag", "lr": None})
    assert (cfg.steps, cfg.name, cfg.lr) == (9, "flag", 1e-3)


def test_resolved_config_is_saved_and_hash_ignores_output_place(tmp_path):
    cfg = PrepareConfig(dataset="avqa", root="r", out="a")
    save_config(cfg, tmp_path / "config" / "prepare.yaml")
    assert yaml.safe_load((tmp_path / "config" / "prepare.yaml").read_text())["dataset"] == "avqa"
    assert config_hash(cfg) == config_hash(PrepareConfig(dataset="avqa", root="r", out="b", progress=False))
    assert config_hash(cfg) != config_hash(PrepareConfig(dataset="avqa", root="r", split="train"))


@dataclass
class Stage:
    lora: Inner = field(default_factory=lambda: Inner(rank=4))  # a default unlike the class's own


def test_a_nested_override_keeps_the_stages_own_defaults(tmp_path):
    from sightsound.stages.teach import TeachConfig

    assert load_config(Stage, None, ["lora.alpha=8"]).lora == Inner(rank=4, alpha=8.0)
    cfg = load_config(TeachConfig, None, ["model.backend=openai", "model.base_url=http://127.0.0.1:8000/v1"])
    assert (cfg.model.backend, cfg.model.model) == ("openai", TeachConfig().model.model)
    path = tmp_path / "c.yaml"
    path.write_text("teach:\n  model: {batch_size: 2}\n")
    assert load_config(TeachConfig, path, section="teach").model.model == TeachConfig().model.model
    with pytest.raises(ConfigError, match="unknown key 'model.bogus'"):
        load_config(TeachConfig, None, ["model.bogus=1"])


def _numeric_keys(cls, prefix=""):
    """(dotted key, leaf name, default) for every int or float field of a config, nested ones too."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kinds = [k for k in (typing.get_args(hints[f.name]) or (hints[f.name],)) if k is not type(None)]
        nested = [k for k in kinds if dataclasses.is_dataclass(k)]
        if nested:
            yield from _numeric_keys(nested[0], f"{prefix}{f.name}.")
        elif typing.get_origin(hints[f.name]) is not dict and set(kinds) & {int, float}:
            yield f"{prefix}{f.name}", f.name, getattr(cls(), f.name)


def test_every_numeric_key_has_a_checked_range():
    from sightsound.checking.verifier import TrainConfig
    from sightsound.config import RANGES
    from sightsound.registry import STAGES

    for cls in [stage.config for stage in STAGES.values()] + [TrainConfig]:
        for dotted, name, default in _numeric_keys(cls):
            assert name in RANGES, f"{cls.__name__}.{dotted} has no valid range in config.RANGES"
            assert default is None or RANGES[name][0](default), f"{cls.__name__}.{dotted}: default out of range"


@pytest.mark.parametrize("override, message", [
    ("n=0", "'n' must be at least 1, got 0"), ("n=-1", "'n' must be at least 1"),
    ("chunk=-1", "'chunk' must be at least 1"), ("chunk=0", "'chunk' must be at least 1"),
    ("limit=-3", "'limit' must be at least 1"), ("top_p=1.5", "'top_p' must be between"),
    ("temperature=-0.1", "'temperature' must be at least 0"), ("model.batch_size=0", "'model.batch_size' must be"),
])
def test_out_of_range_values_are_refused_naming_the_key(override, message):
    from sightsound.stages.teach import TeachConfig

    with pytest.raises(ConfigError, match=message):
        load_config(TeachConfig, None, [override])


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/v1", "localhost:8000", "ftp://host/v1", "http:///v1"])
def test_a_bad_server_url_is_refused_when_the_config_is_loaded(url):
    from sightsound.stages.teach import TeachConfig

    with pytest.raises(ConfigError, match="'base_url'"):
        load_config(TeachConfig, None, [f"model.base_url={url}"])


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: a.yaml\n"}, "goes round in a circle: a.yaml → a.yaml"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "circle: a.yaml → b.yaml → a.yaml"),
    ({"a.yaml": "extends: [1, 2]\n"}, "names one config file, not \\[1, 2\\]"),
    ({"a.yaml": "- 1\n- 2\n"}, "must be a mapping"),
])
def test_extends_cycles_and_odd_values_are_one_clear_error(tmp_path, files, message):
    from sightsound.pipeline import read_pipeline_yaml

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_pipeline_yaml(tmp_path / "a.yaml")


def test_paths_inside_the_run_directory_are_hashed_relative_to_it(tmp_path):
    from sightsound.config import portable

    run, models = tmp_path / "runs" / "demo", str(tmp_path / "runs" / "demo-models")
    value = {"root": f"{run}/world", "model": models, f"model:{run}/sft/final": "h", "all": [str(run)]}
    assert portable(value, run) == {"root": "{run}/world", "model": models, "model:{run}/sft/final": "h",
                                    "all": ["{run}"]}  # demo-models is beside the run, not in it
    here = PrepareConfig(dataset="synth", root=f"{run}/world", out=str(run))
    moved = PrepareConfig(dataset="synth", root=f"{tmp_path}/b/world", out=f"{tmp_path}/b")
    assert config_hash(here, root=run) == config_hash(moved, root=tmp_path / "b")
    assert config_hash(here) != config_hash(moved)
