"""Pipeline stages. Each module has a config dataclass and a `main(cfg)` that reads straight
down: set up, loop over records, save, write the manifest last.

`SECTIONS` names the config dataclass of each section a pipeline YAML file may hold, `MAINS` the
function that runs it (the CLI's subcommand of the same name).
"""

from sightsound.datasets.synth import SynthConfig, generate
from sightsound.stages import evaluate, grpo, prepare, sft, teach, verify
from sightsound.stages.evaluate import EvalConfig
from sightsound.stages.grpo import GRPOConfig
from sightsound.stages.prepare import PrepareConfig
from sightsound.stages.sft import SFTConfig
from sightsound.stages.teach import TeachConfig
from sightsound.stages.verify import VerifyConfig

SECTIONS = {"synth": SynthConfig, "prepare": PrepareConfig, "teach": TeachConfig, "verify": VerifyConfig,
            "sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig}
MAINS = {"synth": generate, "prepare": prepare.main, "teach": teach.main, "verify": verify.main,
         "sft": sft.main, "grpo": grpo.main, "eval": evaluate.main}
