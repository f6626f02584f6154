"""Every YAML file in configs/ binds to the dataclasses of its sections."""

from pathlib import Path

import pytest
import yaml

from sightsound.config import load_config
from sightsound.stages import SECTIONS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_binds(path):
    data = yaml.safe_load(path.read_text())
    assert data, f"{path} is empty"
    unknown = set(data) - set(SECTIONS)
    assert not unknown, f"{path}: sections without a stage: {unknown}"
    for section, cls in SECTIONS.items():
        if section in data:
            assert isinstance(load_config(cls, path, section=section), cls)


def test_paper_config_matches_the_paper():
    path = next(p for p in CONFIGS if p.name == "sightsound-r1.yaml")
    teach = load_config(SECTIONS["teach"], path, section="teach")
    assert teach.model.model == "Qwen/Qwen2.5-VL-32B-Instruct" and teach.n >= 2
    prepare = load_config(SECTIONS["prepare"], path, section="prepare")
    assert (prepare.dataset, prepare.split) == ("avqa", "train")


ACCELERATE = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 2
