"""Success and intervention figures shared by the demo and the benchmarks."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate; sensible at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeOutcome:
    success: bool
    steps: int
    intervention_steps: int


@dataclass
class RateSummary:
    episodes: int
    success_rate: float
    ci95: tuple[float, float]
    intervention_rate: float  # share of all steps the operator commanded
    mean_steps_to_success: float | None

    def to_json(self) -> dict:
        return asdict(self)


def summarize(outcomes: list[EpisodeOutcome]) -> RateSummary:
    n = len(outcomes)
    wins = [o for o in outcomes if o.success]
    steps = sum(o.steps for o in outcomes)
    return RateSummary(
        episodes=n,
        success_rate=len(wins) / n if n else 0.0,
        ci95=wilson_interval(len(wins), n),
        intervention_rate=sum(o.intervention_steps for o in outcomes) / steps if steps else 0.0,
        mean_steps_to_success=sum(o.steps for o in wins) / len(wins) if wins else None,
    )
