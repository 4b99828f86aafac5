"""RECAP labels (pi*0.6, Sec. IV-V): rewards, returns, value bins, advantages, indicators.

Pure numpy functions so the arithmetic is unit-tested without torch. Conventions:

- Reward: -1 per step; the final step gets 0 on success and -C_fail on failure.
  C_fail defaults to the task's longest episode, so that a failure always costs
  at least as much as the slowest success.
- Values are normalized per task to [-1, 0] by dividing by `max_length + C_fail`
  (our choice; the paper divides by the maximum episode length). With the
  default C_fail a success lands in (-0.5, 0] and a failure in [-1, -0.5], so
  the two outcomes never share a value range and failures sit near -1. The
  paper's divisor alone would push every failure below -1 and onto the bottom bin.
- Advantages and thresholds work in those normalized units. Three estimators of
  the same advantage trade the value's noise against the return's: N-step
  (today's default), Monte Carlo (N = the episode) and GAE(lambda), which blends
  every horizon with weights lambda^k.
- The indicator is one of three values; NULL marks "no indicator" (the
  30 % dropout in training and the unconditional branch of CFG).
"""
from __future__ import annotations

import numpy as np

NUM_BINS = 201
NEGATIVE, POSITIVE, NULL = 0, 1, 2


def episode_rewards(length: int, success: bool, c_fail: float) -> np.ndarray:
    """Per-step rewards of one episode of `length` steps."""
    if length < 1:
        raise ValueError(f"episode length must be >= 1, got {length}")
    rewards = np.full(length, -1.0)
    rewards[-1] = 0.0 if success else -float(c_fail)
    return rewards


def mc_returns(rewards: np.ndarray) -> np.ndarray:
    """Monte Carlo return-to-go R_t = sum_{t' >= t} r_t' of one episode."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


def normalized_returns(lengths: np.ndarray, tasks: np.ndarray, success: np.ndarray,
                       c_fail: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalized Monte Carlo returns of a dataset, given per episode.

    `lengths`, `tasks` (task index) and `success` have one entry per episode.
    Returns (the episodes' returns in [-1, 0] concatenated in episode order, one
    per step; the normalizer `max_length + C_fail` of each task). `c_fail` None
    means "the task's longest episode".
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    tasks = np.asarray(tasks, dtype=np.int64)
    num_tasks = int(tasks.max()) + 1 if len(tasks) else 0
    max_length = np.zeros(num_tasks)
    np.maximum.at(max_length, tasks, lengths)
    fail_cost = max_length if c_fail is None else np.full(num_tasks, float(c_fail))
    normalizer = max_length + fail_cost
    per_episode = [mc_returns(episode_rewards(n, ok, fail_cost[t])) / normalizer[t]
                   for n, t, ok in zip(lengths, tasks, success)]
    returns = np.concatenate(per_episode) if per_episode else np.zeros(0)
    return np.clip(returns, -1.0, 0.0), normalizer


def bin_centers(num_bins: int = NUM_BINS) -> np.ndarray:
    """Value of each bin: evenly spaced over [-1, 0], both ends included."""
    return np.linspace(-1.0, 0.0, num_bins)


def to_bins(values: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Index of the nearest bin for normalized values (clipped to [-1, 0])."""
    scaled = (np.clip(values, -1.0, 0.0) + 1.0) * (num_bins - 1)
    return np.rint(scaled).astype(np.int64)


def n_step_advantages(returns: np.ndarray, values: np.ndarray, episode_index: np.ndarray,
                      step_index: np.ndarray, episode_length: np.ndarray, n: int) -> np.ndarray:
    """A_t = sum_{t'=t}^{t+N-1} r_t' + V(o_{t+N}) - V(o_t), all normalized, per step.

    The reward sum is R_t - R_{t+N} of the Monte Carlo returns; when t+N reaches
    past the last step the bootstrap is dropped and A_t = R_t - V(o_t). Steps of
    one episode must be contiguous and in order (as `dataset.load_dataset` gives them).
    """
    if n < 1:
        raise ValueError(f"n-step horizon must be >= 1, got {n}")
    returns = np.asarray(returns, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    within = step_index + n < episode_length
    ahead = np.where(within, np.arange(len(returns)) + n, 0)
    if np.any(episode_index[ahead][within] != episode_index[within]):
        raise ValueError("steps of an episode are not contiguous; cannot look N steps ahead")
    bootstrapped = returns - returns[ahead] + values[ahead] - values
    return np.where(within, bootstrapped, mc_advantages(returns, values))


def mc_advantages(returns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A_t = R_t - V(o_t): no bootstrap, so no second noisy value; the return carries the episode's outcome."""
    return np.asarray(returns, dtype=np.float64) - np.asarray(values, dtype=np.float64)


def gae_advantages(returns: np.ndarray, values: np.ndarray, episode_index: np.ndarray, step_index: np.ndarray,
                   episode_length: np.ndarray, lam: float) -> np.ndarray:
    """GAE(lambda) with gamma = 1: A_t = sum_k lambda^k delta_{t+k} over the rest of the episode.

    delta_t = r_t + V(o_{t+1}) - V(o_t) is the 1-step advantage (the value after
    the last step is 0), so lambda = 0 gives the 1-step estimate and lambda = 1
    the Monte Carlo one; in between, long horizons count less the noisier they are.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"GAE lambda must be in [0, 1], got {lam}")
    delta = n_step_advantages(returns, values, episode_index, step_index, episode_length, 1)
    last = step_index == episode_length - 1
    advantages, running = np.empty_like(delta), 0.0
    for row in range(len(delta) - 1, -1, -1):
        running = delta[row] + (0.0 if last[row] else lam * running)
        advantages[row] = running
    return advantages


def task_thresholds(advantages: np.ndarray, task_index: np.ndarray, decided: np.ndarray,
                    positive_fraction: float) -> dict[int, float]:
    """Per task, the epsilon for which `positive_fraction` of decided steps have A > epsilon.

    Only `decided` steps count: operator corrections are positive whatever their
    advantage, so they would otherwise skew the fraction of the steps that the
    advantage actually labels.
    """
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
    thresholds = {}
    for task in np.unique(task_index):
        sample = advantages[(task_index == task) & decided]
        if len(sample):
            thresholds[int(task)] = float(np.quantile(sample, 1.0 - positive_fraction, method="lower"))
    return thresholds


def youden_thresholds(advantages: np.ndarray, task_index: np.ndarray, decided: np.ndarray,
                      success: np.ndarray) -> dict[int, float]:
    """Per task, the epsilon maximizing Youden's J = TPR - FPR of 1(A > epsilon) for telling
    decided steps of successful episodes from those of failed ones.

    The labels then separate what the outcome separates as well as the advantage
    can, instead of a fixed share. A task is left out (the caller keeps its
    fraction threshold) when its decided steps lack either outcome or no epsilon
    does better than chance (J <= 0).
    """
    thresholds = {}
    for task in np.unique(task_index):
        rows = (task_index == task) & decided
        good, bad = np.sort(advantages[rows & success]), np.sort(advantages[rows & ~success])
        if not len(good) or not len(bad):
            continue
        candidates = np.unique(advantages[rows])
        tpr = 1.0 - np.searchsorted(good, candidates, side="right") / len(good)    # share with A > epsilon
        fpr = 1.0 - np.searchsorted(bad, candidates, side="right") / len(bad)
        best = int(np.argmax(tpr - fpr))
        if tpr[best] - fpr[best] > 0:
            thresholds[int(task)] = float(candidates[best])
    return thresholds


def outcome_indicators(success: np.ndarray, intervention: np.ndarray) -> np.ndarray:
    """I_t = POSITIVE for the steps of successful episodes and operator steps, NEGATIVE otherwise.

    The filtered-BC rows as RECAP's indicator: the positive-conditioned policy learns
    what filtered BC learns, while the same network also sees the failed episodes'
    steps, labelled as what not to do (and CFG at beta > 1 steers away from them).
    """
    positive = np.asarray(success, dtype=bool) | np.asarray(intervention, dtype=bool)
    return np.where(positive, POSITIVE, NEGATIVE).astype(np.int64)


def indicators(advantages: np.ndarray, task_index: np.ndarray, intervention: np.ndarray, positive_fraction: float,
               chosen: dict[int, float] | None = None) -> tuple[np.ndarray, dict[int, float]]:
    """Improvement indicator I_t = 1(A_t > epsilon_task), interventions forced POSITIVE.

    epsilon_task puts `positive_fraction` of the task's decided steps above it,
    except for the tasks in `chosen` (e.g. `youden_thresholds`), whose epsilon it gives.
    Returns (int64 array of NEGATIVE/POSITIVE per step, thresholds per task).
    """
    intervention = np.asarray(intervention, dtype=bool)
    thresholds = {**task_thresholds(advantages, task_index, ~intervention, positive_fraction), **(chosen or {})}
    eps = np.array([thresholds.get(int(t), -np.inf) for t in task_index])
    positive = (advantages > eps) | intervention
    return np.where(positive, POSITIVE, NEGATIVE).astype(np.int64), thresholds
