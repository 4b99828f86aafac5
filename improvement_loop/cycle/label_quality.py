"""How good a round's labels are, measured before any evaluation episode is spent.

BC on exactly RECAP's positive rows scores what RECAP scores
(benchmarks/results/recap_state/analysis.md): the labels decide. A label is
good when it ranks the policy's own (autonomous) steps of successful episodes
above those of failed ones, and the steps the operator had to rescue below the
rest; the value behind it is good when it explains the return out of fold and
is calibrated. Every figure is per task (advantages and thresholds are per
task), then averaged over the tasks where it is defined.

The outcome AUC rewards labels that copy the episode outcome (the limit is
filtered BC), so `takeover_auc` is reported beside it: whether autonomous steps
in the `window` steps before an operator takeover (a stall or a drift the
operator saw) score lower than the other autonomous steps. It needs no outcome.
"""
from __future__ import annotations

import numpy as np

from robot_runtime.improvement_loop.data.dataset import Dataset
from robot_runtime.improvement_loop.metrics import calibration, explained_variance, rank_auc
from robot_runtime.improvement_loop.recap import POSITIVE


def outcome_auc(scores: np.ndarray, data: Dataset) -> dict[int, float | None]:
    """Per task index, the AUC of `scores` for telling autonomous steps of successes from those of failures."""
    return _per_task(scores, data, data.success)


def takeover_auc(scores: np.ndarray, data: Dataset, window: int) -> dict[int, float | None]:
    """Per task index, the AUC of `scores` for telling other autonomous steps from those `before_takeover`."""
    return _per_task(scores, data, ~before_takeover(data, window))


def _per_task(scores: np.ndarray, data: Dataset, positive: np.ndarray) -> dict[int, float | None]:
    aucs = {}
    for task in np.unique(data.task_index):
        rows = ~data.intervention & (data.task_index == task)
        aucs[int(task)] = rank_auc(scores[rows], positive[rows])
    return aucs


def before_takeover(data: Dataset, window: int) -> np.ndarray:
    """Autonomous steps with an operator takeover starting 1..`window` steps later in the same episode."""
    rows = np.arange(len(data))
    onsets = np.flatnonzero(data.intervention & (~np.r_[False, data.intervention[:-1]] | (data.step_index == 0)))
    if not len(onsets):
        return np.zeros(len(data), dtype=bool)
    following = onsets[np.minimum(np.searchsorted(onsets, rows), len(onsets) - 1)]
    gap = following - rows
    same_episode = data.episode_index[following] == data.episode_index
    return ~data.intervention & same_episode & (gap >= 1) & (gap <= window)


def label_quality(data: Dataset, returns: np.ndarray, values: np.ndarray, advantages: np.ndarray,
                  labels: np.ndarray, window: int) -> dict:
    """The round's label-quality figures (see the module docstring); None where a figure is undefined."""
    autonomous, positive, rescued = ~data.intervention, labels == POSITIVE, before_takeover(data, window)
    aucs = {"advantage_auc": outcome_auc(advantages, data), "indicator_auc": outcome_auc(positive, data),
            "takeover_auc": takeover_auc(advantages, data, window)}
    by_task = {}
    for task, name in enumerate(data.tasks):
        rows = data.task_index == task
        mine = autonomous & rows
        by_task[name] = {
            **{key: per_task.get(task) for key, per_task in aucs.items()},
            "explained_variance": explained_variance(returns[rows], values[rows]),
            "positive_autonomous": {outcome: float(positive[mine & (data.success == ok)].mean())
                                    for outcome, ok in (("success", True), ("failure", False))
                                    if np.any(mine & (data.success == ok))},
            "autonomous_steps": {"success": int(np.sum(mine & data.success)),
                                 "failure": int(np.sum(mine & ~data.success)),
                                 "before_takeover": int(np.sum(mine & rescued))},
        }
    return {**{key: mean_defined(per_task.values()) for key, per_task in aucs.items()}, "takeover_window": window,
            "value_calibration": calibration(values, returns), "by_task": by_task}


def mean_defined(figures) -> float | None:
    """The mean of the figures that are not None (None if there are none)."""
    found = [f for f in figures if f is not None]
    return float(np.mean(found)) if found else None
