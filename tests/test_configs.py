"""The accelerate launch configs load (the pipeline configs are checked in test_pipeline.py)."""

from pathlib import Path

import pytest

ACCELERATE = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 2


def test_the_declared_floors_are_the_ones_make_test_floors_installs():
    """pyproject.toml's lower bounds of the model stack are exactly .ci/floors.txt's pins, the
    versions `make test-floors` runs the training and model tests with."""
    import re
    import tomllib

    from tests.conftest import ROOT

    pins = dict(re.findall(r"^([\w-]+)==([\d.]+)$", (ROOT / ".ci" / "floors.txt").read_text(), re.M))
    declared = {}
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        found = re.match(r"([\w-]+)>=([\d.]+)", requirement)
        if found and found[1] in pins:
            declared[found[1]] = found[2]
    assert set(declared) == set(pins) == {"torch", "transformers", "peft", "accelerate"}
    for name, floor in declared.items():
        if name == "torch":  # 2.11 ran on the GPU machine; the CPU wheel here is 2.13
            assert pins[name].startswith("2.13") and floor == "2.11"
        else:
            assert pins[name].startswith(floor), (name, floor, pins[name])
