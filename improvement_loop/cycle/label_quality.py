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
    aucs = {}
    for task in np.unique(data.task_index):
        rows = ~data.intervention & (data.task_index == task)
        aucs[int(task)] = rank_auc(scores[rows], data.success[rows])
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
    autonomous, positive = ~data.intervention, labels == POSITIVE
    rescued = before_takeover(data, window)
    by_task = {}
    for task, name in enumerate(data.tasks):
        rows = data.task_index == task
        mine = autonomous & rows
        by_task[name] = {
            "advantage_auc": rank_auc(advantages[mine], data.success[mine]),
            "indicator_auc": rank_auc(positive[mine], data.success[mine]),
            "takeover_auc": rank_auc(advantages[mine], ~rescued[mine]),
            "explained_variance": explained_variance(returns[rows], values[rows]),
            "positive_autonomous": {outcome: float(positive[mine & (data.success == ok)].mean())
                                    for outcome, ok in (("success", True), ("failure", False))
                                    if np.any(mine & (data.success == ok))},
            "autonomous_steps": {"success": int(np.sum(mine & data.success)),
                                 "failure": int(np.sum(mine & ~data.success)),
                                 "before_takeover": int(np.sum(mine & rescued))},
        }

    def mean(key: str) -> float | None:
        found = [figures[key] for figures in by_task.values() if figures[key] is not None]
        return float(np.mean(found)) if found else None

    return {"advantage_auc": mean("advantage_auc"), "indicator_auc": mean("indicator_auc"),
            "takeover_auc": mean("takeover_auc"), "takeover_window": window,
            "value_calibration": calibration(values, returns), "by_task": by_task}
