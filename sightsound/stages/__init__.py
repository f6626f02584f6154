"""Pipeline stages. Each module has a config dataclass and a `main(cfg)` that reads straight
down: set up, loop over records, save, write the manifest last.

`SECTIONS` names the config dataclass of each section a pipeline YAML file may hold.
"""

from sightsound.datasets.synth import SynthConfig
from sightsound.stages.evaluate import EvalConfig
from sightsound.stages.prepare import PrepareConfig
from sightsound.stages.teach import TeachConfig

SECTIONS = {"synth": SynthConfig, "prepare": PrepareConfig, "teach": TeachConfig, "eval": EvalConfig}
