"""A round's improvement indicators: cross-fitted values -> advantages -> per-task thresholds.

Why cross-fitting: at fleet-night scale (tens of episodes, each with its own
object and goal placement) a value network memorizes the return of every
training episode from its observations. In-sample, V(o_t) ~ R_t and the N-step
advantage collapses to noise: on 30 push demonstrations + 20 noisy rollouts the
in-sample explained variance was 0.94 and demonstrations and rollouts came out
42 % / 38 % positive (N = 1 s). Each episode is therefore valued by models that never saw
it (K folds by episode, each trained from V_pre on the other folds): out-of-fold
explained variance 0.17, and 58 % / 25 % positive, the separation RECAP needs.
The paper avoids the problem with far more data and a web-co-trained critic.

Every other choice is a `LabelConfig` option whose default is the recipe the
benchmark's committed results were made with; label_quality.py scores them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from robot_runtime.improvement_loop.cycle.label_quality import label_quality, mean_defined, outcome_auc, takeover_auc
from robot_runtime.improvement_loop.data.batches import Tensors
from robot_runtime.improvement_loop.data.dataset import Dataset
from robot_runtime.improvement_loop.metrics import explained_variance
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint
from robot_runtime.improvement_loop.models.value import DistributionalValue
from robot_runtime.improvement_loop.recap import (
    POSITIVE,
    gae_advantages,
    indicators,
    mc_advantages,
    n_step_advantages,
    outcome_indicators,
    youden_thresholds,
)
from robot_runtime.improvement_loop.training.train import TrainConfig, predict_values, train_value

ESTIMATORS = ("n_step", "mc", "gae")
THRESHOLDS = ("fraction", "youden", "outcome")
VALUE_INITS = ("pretrained", "previous")
AUTO_N_SECONDS = (0.25, 0.5, 1.0, 2.0, 4.0)     # the horizons n_step='auto' chooses from, in seconds of control
MEMBER_SEED_STRIDE = 1000                       # ensemble member m trains with seed + m * stride


@dataclass(frozen=True)
class LabelConfig:
    """How a round turns its episodes into indicators; every default is today's recipe.

    Value (how V(o_t) is made; every step is still valued out of fold):
      folds        cross-fitting folds, by episode.
      ensemble     M members, each with its own training seed and fold split; the
                   advantage uses their mean, which averages out the training noise
                   that an N-step advantage (a difference of two predictions) doubles.
      value_init   'pretrained': each fold model starts from V_pre (the paper). 'previous':
                   from the same fold's model of the previous round, so the value keeps
                   what earlier rounds taught it; folds then come from a hash of the
                   episode id, so an episode keeps its fold as the store grows and no
                   model has seen the episodes it values. Round 1 starts from V_pre.
      value_stores other episode stores (e.g. other tasks') whose episodes the round's
                   value also trains on: one value shared across tasks, told apart by
                   the instruction embedding, returns still normalized per task. They
                   are never labelled and never held out. V_pre is unchanged.
    Advantage:
      estimator    'n_step' (A = r_t..t+N-1 + V(o_t+N) - V(o_t)), 'mc' (R_t - V(o_t): no
                   second value prediction, the outcome in full) or 'gae' (GAE(gae_lambda)).
      n_step       N; None = one second of control; 'auto' = per task, the N among
                   AUTO_N_SECONDS whose out-of-fold advantage scores best on the mean of
                   the outcome AUC and the takeover AUC (label_quality), each where defined,
                   on the steps it labels (so optimistic by a choice among five); neither
                   defined keeps one second. The outcome AUC alone would always pick the
                   longest N: the return *is* the outcome, so the limit is filtered BC, and
                   it credits the steps an operator rescued with the rescue; the takeover
                   AUC (1 s before a takeover, stalls the operator saw) pulls the other way.
    Threshold:
      threshold    'fraction': per task, `positive_fraction` of decided steps positive
                   (the paper). 'youden': per task, the epsilon maximizing Youden's J for
                   telling decided steps of successes from failures (recap.youden_thresholds;
                   tasks without both outcomes keep the fraction rule). 'outcome': no
                   threshold; positive = the steps of successful episodes (the filtered-BC
                   rows, recap.outcome_indicators), so the labels do not depend on the
                   value at all; the advantage is still computed, scored and used by AWR.
    Operator corrections are forced positive under every option.
    """

    folds: int = 2
    ensemble: int = 1
    value_init: str = "pretrained"
    value_stores: tuple[str, ...] = ()
    estimator: str = "n_step"
    n_step: int | str | None = None
    gae_lambda: float = 0.95
    threshold: str = "fraction"
    positive_fraction: float = 0.4

    def __post_init__(self):
        for name, value, allowed in (("estimator", self.estimator, ESTIMATORS),
                                     ("threshold", self.threshold, THRESHOLDS),
                                     ("value_init", self.value_init, VALUE_INITS)):
            if value not in allowed:
                raise ValueError(f"LabelConfig.{name} must be one of {allowed}, got {value!r}")
        if self.folds < 2 or self.ensemble < 1:
            raise ValueError(f"need folds >= 2 and ensemble >= 1, got {self.folds} and {self.ensemble}")
        if not (self.n_step is None or self.n_step == "auto" or (isinstance(self.n_step, int) and self.n_step >= 1)):
            raise ValueError(f"LabelConfig.n_step must be None, 'auto' or an int >= 1, got {self.n_step!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"LabelConfig.gae_lambda must be in [0, 1], got {self.gae_lambda}")


@dataclass
class Labels:
    indicators: np.ndarray          # int64 [N], recap.NEGATIVE / POSITIVE, interventions positive
    values: np.ndarray              # float64 [N], each step valued by models that never saw its episode
    advantages: np.ndarray          # float64 [N]
    models: list[DistributionalValue]   # one per (member, fold), member-major
    metrics: dict


def episode_folds(num_episodes: int, folds: int, seed: int) -> np.ndarray:
    """Fold id per episode: a seeded shuffle dealt round-robin, so folds differ in size by at most one."""
    if folds < 2 or num_episodes < folds:
        raise ValueError(f"cross-fitting needs >= 2 folds and at least one episode per fold; "
                         f"got {folds} folds for {num_episodes} episodes")
    return np.random.default_rng(seed).permutation(num_episodes) % folds


def stable_folds(episode_ids: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold id per episode from a hash of (seed, episode id): the same episode gets the same fold every round."""
    ids = np.array([int(hashlib.sha256(f"{seed}/{e}".encode()).hexdigest()[:15], 16) % folds for e in episode_ids])
    if len(np.unique(ids)) < folds:
        raise ValueError(f"{len(episode_ids)} episodes left a fold of {folds} empty; "
                         "cross-fitting needs more episodes or fewer folds")
    return ids


def joined(a: Tensors, b: Tensors) -> Tensors:
    """Rows of `a` then `b`; b's task indices point past a's rows of the stacked task table."""
    return Tensors([np.concatenate([x, y]) for x, y in zip(a.images, b.images)], np.concatenate([a.state, b.state]),
                   np.concatenate([a.action_chunk, b.action_chunk]), np.concatenate([a.chunk_mask, b.chunk_mask]),
                   np.concatenate([a.task_index, b.task_index + len(a.task_table)]),
                   a.task_table.new_tensor(np.concatenate([a.task_table.numpy(), b.task_table.numpy()])))


def cross_fitted_values(t: Tensors, data: Dataset, returns: np.ndarray, inits: list[str | Path], cfg: TrainConfig,
                        labels: LabelConfig, extra: tuple[Tensors, np.ndarray] | None = None,
                        log_dir: Path | None = None, resume_dir: Path | None = None
                        ) -> tuple[np.ndarray, np.ndarray, list[DistributionalValue], list[dict]]:
    """Out-of-fold V(o_t) for every step, averaged over the ensemble's members.

    `inits` holds the checkpoint each (member, fold) model starts from, member-major.
    Each fold model trains cfg.steps // folds steps on the other folds (plus the
    `extra` rows and returns), so a member costs about one value training.
    Returns (mean values [N], each member's values [M, N], models, their training metrics).
    """
    if len(inits) != labels.ensemble * labels.folds:
        raise ValueError(f"{len(inits)} initial value checkpoints for {labels.ensemble} member(s) x "
                         f"{labels.folds} folds")
    members, models, metrics = [], [], []
    for member in range(labels.ensemble):
        member_cfg = replace(cfg, steps=max(1, cfg.steps // labels.folds), seed=cfg.seed + MEMBER_SEED_STRIDE * member)
        if labels.value_init == "previous":
            folds = stable_folds([e.episode_id for e in data.episodes], labels.folds, member_cfg.seed)
        else:
            folds = episode_folds(len(data.episodes), labels.folds, member_cfg.seed)
        fold_of_step = folds[data.episode_index]
        values = np.zeros(len(t))
        for k in range(labels.folds):
            held_out = fold_of_step == k
            rows, targets = t.subset(~held_out), returns[~held_out]
            if extra is not None:
                rows, targets = joined(rows, extra[0]), np.concatenate([targets, extra[1]])
            init, _ = load_checkpoint(inits[len(models)], "value")
            name = f"value_fold{k}" if member == 0 else f"value_member{member}_fold{k}"
            model, fold_metrics = train_value(rows, targets, init.spec, member_cfg, init=init, log_dir=log_dir,
                                              name=name, resume_dir=resume_dir)
            values[held_out] = predict_values(model, t.subset(held_out))
            models.append(model)
            metrics.append(fold_metrics)
        members.append(values)
    return np.mean(members, axis=0), np.array(members), models, metrics


def auto_n_step(data: Dataset, returns: np.ndarray, values: np.ndarray, default: int) -> tuple[np.ndarray, dict]:
    """N-step advantages with N chosen per task (see LabelConfig.n_step); ties go to the shorter N."""
    candidates = sorted({max(1, round(s * data.control_rate_hz)) for s in AUTO_N_SECONDS} | {default})
    estimates = {n: n_step_advantages(returns, values, data.episode_index, data.step_index, data.episode_length, n)
                 for n in candidates}
    scores = {n: (outcome_auc(estimate, data), takeover_auc(estimate, data, default))
              for n, estimate in estimates.items()}
    advantages, chosen, score_by_task = estimates[default].copy(), {}, {}
    for task in np.unique(data.task_index).tolist():
        score_by_task[task] = {n: mean_defined(auc[task] for auc in scores[n]) for n in candidates}
        defined = {n: score for n, score in score_by_task[task].items() if score is not None}
        chosen[task] = max(defined, key=defined.get) if defined else default
        rows = data.task_index == task
        advantages[rows] = estimates[chosen[task]][rows]
    return advantages, {"n_step": "auto", "n_step_by_task": {data.tasks[t]: n for t, n in chosen.items()},
                        "n_step_score_by_task": {data.tasks[t]: {str(n): score for n, score in by_n.items()}
                                                 for t, by_n in score_by_task.items()}}


def advantages_of(data: Dataset, returns: np.ndarray, values: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, dict]:
    """The advantage of every step by `cfg.estimator`, and what it chose (its metrics)."""
    if cfg.estimator == "mc":
        return mc_advantages(returns, values), {}
    if cfg.estimator == "gae":
        return gae_advantages(returns, values, data.episode_index, data.step_index, data.episode_length,
                              cfg.gae_lambda), {"gae_lambda": cfg.gae_lambda}
    default = max(1, round(data.control_rate_hz))
    if cfg.n_step == "auto":
        return auto_n_step(data, returns, values, default)
    n = cfg.n_step or default
    advantages = n_step_advantages(returns, values, data.episode_index, data.step_index, data.episode_length, n)
    return advantages, {"n_step": n}


def label_steps(data: Dataset, returns: np.ndarray, values: np.ndarray,
                cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """(advantages, indicators, metrics incl. label quality) from out-of-fold values; numpy only, no training."""
    advantages, chosen = advantages_of(data, returns, values, cfg)
    if cfg.threshold == "outcome":
        labels, thresholds = outcome_indicators(data.success, data.intervention), {}
    else:
        youden = (youden_thresholds(advantages, data.task_index, ~data.intervention, data.success)
                  if cfg.threshold == "youden" else {})
        labels, thresholds = indicators(advantages, data.task_index, data.intervention, cfg.positive_fraction, youden)
    positive = labels == POSITIVE
    versions = np.array([e.policy_version for e in data.episodes])[data.episode_index]
    metrics = {
        "advantage": cfg.estimator,
        **chosen,
        "positive_fraction": float(positive.mean()),
        "positive_fraction_target": cfg.positive_fraction,
        "positive_fraction_by_outcome": {name: float(positive[data.success == ok].mean())
                                         for name, ok in (("success", True), ("failure", False))
                                         if np.any(data.success == ok)},
        "positive_fraction_by_policy_version": {v: float(positive[versions == v].mean()) for v in np.unique(versions)},
        "intervention_fraction": float(data.intervention.mean()),
        "threshold": cfg.threshold,
        "thresholds": {data.tasks[task]: eps for task, eps in thresholds.items()},
        **({"threshold_by_task": {name: "youden" if task in youden else "fraction"
                                  for task, name in enumerate(data.tasks)}} if cfg.threshold == "youden" else {}),
        "label_quality": label_quality(data, returns, values, advantages, labels, max(1, round(data.control_rate_hz))),
    }
    return advantages, labels, metrics


def round_labels(t: Tensors, data: Dataset, returns: np.ndarray, inits: list[str | Path], value_cfg: TrainConfig,
                 cfg: LabelConfig, extra: tuple[Tensors, np.ndarray] | None = None, log_dir: Path | None = None,
                 resume_dir: Path | None = None) -> Labels:
    """Indicators for one round: cross-fitted values, then `label_steps`."""
    values, members, models, fold_metrics = cross_fitted_values(t, data, returns, inits, value_cfg, cfg, extra,
                                                                log_dir, resume_dir)
    advantages, labels, label_metrics = label_steps(data, returns, values, cfg)
    metrics = {**value_metrics(returns, values, members, fold_metrics, inits, cfg, extra), **label_metrics}
    return Labels(labels, values, advantages, models, metrics)


def value_metrics(returns: np.ndarray, values: np.ndarray, members: np.ndarray, fold_metrics: list[dict],
                  inits: list[str | Path], cfg: LabelConfig, extra: tuple[Tensors, np.ndarray] | None) -> dict:
    """How a round's cross-fitted values were made and how well they explain the returns."""
    return {
        "value_folds": fold_metrics,
        "value_explained_variance_out_of_fold": explained_variance(returns, values),
        "value_models": {"members": cfg.ensemble, "folds": cfg.folds,
                         "fold_rule": "episode_hash" if cfg.value_init == "previous" else "shuffle",
                         "init_checkpoints": sorted({str(path) for path in inits}),
                         "extra_rows": 0 if extra is None else len(extra[1])},
        **({"value_member_explained_variance": [explained_variance(returns, v) for v in members]}
           if cfg.ensemble > 1 else {}),
    }
