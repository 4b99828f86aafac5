"""The offline baselines RECAP is compared with, trained on exactly a round's rows (see `cycle.RoundData`).

Each starts from the pretrained policy checkpoint with RECAP's policy step budget
(`cfg.policy`) and exports a plain behaviour-cloning bundle (conditioning 'none'):

- `bc`: every step, null indicator.
- `filtered_bc`: steps of successful episodes plus every operator step.
- `awr`: advantage-weighted BC. Rows are drawn with probability proportional to
  w = min(exp(z / temperature), max_weight), z the round's cross-fitted advantage
  standardized per task: RECAP's own advantages, so only the way they are used differs.
  Standardizing makes `temperature` mean "in advantage standard deviations" whatever
  the task's return normalizer; with the defaults a row 3 sigma above the mean hits the clip.

One diagnostic, not a baseline: `positive_bc` is BC on the rows RECAP labels positive.
Against RECAP it separates what the labels are worth from what conditioning on them
(one network, both indicators, CFG) makes of them.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from robot_runtime.improvement_loop.cycle.methods import ROUND_METHODS
from robot_runtime.improvement_loop.cycle.rounds import (
    CycleConfig,
    CycleResult,
    RoundData,
    data_metrics,
    finish_stage,
    stage_dir,
)
from robot_runtime.improvement_loop.data.sources import combined
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint
from robot_runtime.improvement_loop.recap import POSITIVE
from robot_runtime.improvement_loop.training.train import train_policy

METHODS = tuple(m for m in ROUND_METHODS if m != "recap")
DIAGNOSTICS = ("positive_bc",)


def filtered_rows(success: np.ndarray, intervention: np.ndarray) -> np.ndarray:
    """Boolean mask: steps of successful episodes and operator (intervention) steps."""
    return np.asarray(success, dtype=bool) | np.asarray(intervention, dtype=bool)


def awr_weights(advantages: np.ndarray, task_index: np.ndarray, temperature: float = 1.0,
                max_weight: float = 20.0) -> np.ndarray:
    """exp(advantage standardized per task / temperature), clipped at `max_weight`; one weight per row."""
    if temperature <= 0:
        raise ValueError(f"AWR temperature must be > 0, got {temperature}")
    advantages = np.asarray(advantages, dtype=np.float64)
    z = np.zeros_like(advantages)
    for task in np.unique(task_index):
        rows = task_index == task
        z[rows] = (advantages[rows] - advantages[rows].mean()) / max(advantages[rows].std(), 1e-8)
    return np.exp(np.minimum(z / temperature, np.log(max_weight)))


def baseline_rows(method: str, success: np.ndarray, intervention: np.ndarray, advantages: np.ndarray,
                  indicators: np.ndarray, task_index: np.ndarray, mixture: np.ndarray | None = None,
                  awr_temperature: float = 1.0, awr_max_weight: float = 20.0
                  ) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """What `method` trains on: (row mask or None for every row, weights of the kept rows or None, a summary).

    `mixture` [N] (the cycle's data mixture, sources.mixture_weights) multiplies the method's own weights."""
    if method not in METHODS + DIAGNOSTICS:
        raise ValueError(f"unknown baseline '{method}'; choose from {METHODS + DIAGNOSTICS}")
    rows, weights, selection = None, None, {"rows": len(success)}
    if method in ("filtered_bc", "positive_bc"):
        rows = filtered_rows(success, intervention) if method == "filtered_bc" else indicators == POSITIVE
        selection = {"rows": int(rows.sum()), "row_fraction": float(rows.mean())}
    elif method == "awr":
        weights = awr_weights(advantages, task_index, awr_temperature, awr_max_weight)
        selection.update(temperature=awr_temperature, max_weight=awr_max_weight,
                         clipped_fraction=float(np.mean(weights >= awr_max_weight)),
                         effective_sample_fraction=float(weights.sum() ** 2 / (weights ** 2).sum() / len(weights)))
    weights = combined(weights, mixture)
    return rows, weights if rows is None or weights is None else weights[rows], selection


def train_baseline(rd: RoundData, work_dir: str | os.PathLike, method: str, cfg: CycleConfig = CycleConfig(),
                   awr_temperature: float = 1.0, awr_max_weight: float = 20.0, as_round: bool = False) -> CycleResult:
    """Train `method` on the round's rows from the pretrained policy; save it under round_NNN/<method>/ with
    the model id <model_id>-<method> (beside RECAP's, as the benchmark needs), or, `as_round`, as the round
    itself (round_NNN/result.json, cfg.model_id: the cycle's `method` option)."""
    start = time.perf_counter()
    data = rd.data
    rows, weights, selection = baseline_rows(method, data.success, data.intervention, rd.labels.advantages,
                                             rd.labels.indicators, data.task_index, data.mixture(cfg.mixture),
                                             awr_temperature, awr_max_weight)
    tensors = rd.tensors if rows is None else rd.tensors.subset(rows)
    out = stage_dir(work_dir, rd.round_index) / ("" if as_round else method)
    policy, _ = load_checkpoint(rd.pretrained.policy_checkpoint, "policy")
    policy, policy_metrics = train_policy(tensors, None, policy.spec, cfg.policy, init=policy,
                                          log_dir=out / "tb", sample_weights=weights)
    metrics = {**data_metrics(data), **(rd.labels.metrics if as_round else {}), "method": method,
               "selection": selection, "policy": policy_metrics}
    # Beside RECAP, its own model id, so its bundle directory never collides with RECAP's of the same round.
    return finish_stage(out, work_dir, data, rd.stats, policy, rd.labels.models if as_round else [],
                        tensors.task_table.numpy(), "none", rd.round_index, rd.pretrained.version, metrics, start,
                        cfg if as_round else replace(cfg, model_id=f"{cfg.model_id}-{method}"))


def train_baselines(rd: RoundData, work_dir: str | os.PathLike, cfg: CycleConfig = CycleConfig(),
                    methods: tuple[str, ...] = METHODS) -> dict[str, CycleResult]:
    return {method: train_baseline(rd, work_dir, method, cfg) for method in methods}
