"""Success and intervention figures shared by the demo and the benchmarks, and the statistics that
score a value function and its labels (explained variance, rank AUC, calibration); pure numpy."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate; sensible at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends (the formula's rounding put n/n's upper bound a hair below the rate itself)
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


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


def newcombe_interval(successes_a: int, n_a: int, successes_b: int, n_b: int, z: float = 1.96) -> tuple[float, float]:
    """Interval of rate a minus rate b (Newcombe's hybrid score interval, from the two Wilson intervals):
    what an option changed, with the uncertainty of both arms."""
    (la, ua), (lb, ub) = wilson_interval(successes_a, n_a, z), wilson_interval(successes_b, n_b, z)
    pa, pb = successes_a / n_a, successes_b / n_b
    return pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)


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


def explained_variance(returns: np.ndarray, values: np.ndarray) -> float | None:
    """1 - Var(R - V) / Var(R): 1 = perfect, 0 = no better than a constant guess."""
    spread = float(np.var(returns))
    return None if spread == 0 else round(1.0 - float(np.var(returns - values)) / spread, 4)


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting half (Mann-Whitney U).

    Threshold-free, so it scores an advantage and a binary indicator alike (for
    a 0/1 score it is (TPR + TNR) / 2). None when either class is empty.
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    return float((mean_ranks(scores)[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing their mean rank."""
    _, group, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[group]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two scores (ties at their mean rank); None with fewer than 3 pairs or a constant
    score. Scale-free: it compares a 1-5 progress with a simulator's reward without mapping one onto the other."""
    if len(a) < 3:
        return None
    ra, rb = mean_ranks(a), mean_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration(predicted: np.ndarray, observed: np.ndarray, bins: int = 10) -> dict:
    """Mean prediction vs mean outcome per quantile bin of the prediction (deciles by default), and the
    expected calibration error sum_b (n_b / n) |mean predicted_b - mean observed_b|.

    A value can explain variance yet sit off the diagonal (all too optimistic),
    which shifts every bootstrapped advantage; the bins show where.
    """
    predicted, observed = np.asarray(predicted, dtype=np.float64), np.asarray(observed, dtype=np.float64)
    groups = [g for g in np.array_split(np.argsort(predicted, kind="stable"), bins) if len(g)]
    table = [{"predicted": float(predicted[g].mean()), "observed": float(observed[g].mean()), "steps": len(g)}
             for g in groups]
    error = sum(row["steps"] * abs(row["predicted"] - row["observed"]) for row in table) / max(1, len(predicted))
    return {"bins": table, "ece": float(error)}
