"""Pipeline stages. Each module has a config dataclass and a `main(cfg)` that reads straight
down: set up, loop over records, save, write the manifest last.

`SECTIONS` names the config dataclass of each section a pipeline YAML file may hold.
"""

from sightsound.datasets.synth import SynthConfig
from sightsound.stages.evaluate import EvalConfig
from sightsound.stages.grpo import GRPOConfig
from sightsound.stages.prepare import PrepareConfig
from sightsound.stages.sft import SFTConfig
from sightsound.stages.teach import TeachConfig
from sightsound.stages.verify import VerifyConfig

SECTIONS = {"synth": SynthConfig, "prepare": PrepareConfig, "teach": TeachConfig, "verify": VerifyConfig,
            "sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig}
