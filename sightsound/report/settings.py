"""The run report's settings: the pipeline config's `report` section (`ReportConfig`), which the
runner saves among the run's resolved configs as `RunDir.config("report")`. They say which models
head the tables, which pairs to test against each other, which model plays which role in the
paper's claims, and which benchmarks are in-domain and acoustic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sightsound import claims as paper_claims
from sightsound.config import read_yaml
from sightsound.rundir import RunDir


@dataclass
class ReportConfig:
    """The `report` section of a pipeline config (saved as the run's `RunDir.config("report")`)."""

    rows: list[str] = field(default_factory=list)  # eval model names in table order (default: the eval models')
    compare: list[list[str]] = field(default_factory=list)  # [first, second] model names: paired tests per benchmark
    claims: dict[str, str] = field(default_factory=dict)  # a role of claims.ROLES → the model name playing it
    in_domain: str | None = None  # the benchmark vision can answer (AVQA's analogue), for the premise and claims
    acoustic: str | None = None  # the benchmark vision cannot answer (MMAU speech/music's analogue)
    sound: str | None = None  # sound-event questions on audio-only clips (MMAU sound's analogue)
    music_like: str | None = None  # unseen templates on unseen clips, where vision helps (MUSIC-AVQA's analogue)

    def benchmark_roles(self) -> dict[str, str]:
        """The paper's benchmark each of the run's plays (`claims.BENCHMARK_ROLES` → benchmark name)."""
        return {role: getattr(self, role) for role in paper_claims.BENCHMARK_ROLES if getattr(self, role)}

    def __post_init__(self):
        unknown = sorted(set(self.claims) - set(paper_claims.ROLES))
        if unknown:
            raise ValueError(f"report.claims: unknown role {unknown[0]!r} (roles: {', '.join(paper_claims.ROLES)})")


def read_settings(run_dir: Path) -> ReportConfig:
    """The run's saved report settings (`RunDir.config("report")`), or the defaults when it has none."""
    from sightsound.config import from_dict

    path = RunDir(run_dir).config("report")
    return from_dict(ReportConfig, read_yaml(path) or {}, str(path)) if path.exists() else ReportConfig()
