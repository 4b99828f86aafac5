"""Where each episode came from, and how much of a batch each source and task gets (the data mixture).

A fleet's store mixes operator demonstrations, autonomous rollouts, rollouts an operator corrected, episodes
imported from rosbag2 and other tasks' episodes. Uniform rows give each of them its share of the store; the
co-training recipes set the mixture instead (for example, other tasks' episodes at a lower weight, or
imported bags down-weighted until they are trusted). `MixtureConfig` is that setting: every row is drawn
with its source's weight times its task's weight, 1 for any not named, 0 to leave them out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOURCES = ("demonstration", "autonomous", "corrected", "imported")


def episode_source(meta: dict, operator_steps: int) -> str:
    """An episode's source from its recorded metadata and how many steps the operator commanded.

    imported: written by the rosbag2 importer (its `extra.source` names the bag); demonstration: no policy
    ran (empty policy_version: the operator drove); corrected: a policy ran and the operator took over for
    at least one step; autonomous: a policy ran alone.
    """
    origin = (meta.get("extra") or {}).get("source")
    if isinstance(origin, dict) and "bag" in origin:
        return "imported"
    if not meta.get("policy_version"):
        return "demonstration"
    return "corrected" if operator_steps else "autonomous"


@dataclass(frozen=True)
class MixtureConfig:
    """Sampling weights by episode source (SOURCES) and by task (its instruction); 1 for any not named."""

    sources: tuple[tuple[str, float], ...] = ()
    tasks: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        for name, weight in (*self.sources, *self.tasks):
            if not (np.isfinite(weight) and weight >= 0):
                raise ValueError(f"mixture weight of {name!r} must be a finite number >= 0, got {weight}")
        unknown = sorted({name for name, _ in self.sources} - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown episode source(s) {unknown}; sources are {SOURCES}")

    @property
    def uniform(self) -> bool:
        return all(weight == 1 for _, weight in (*self.sources, *self.tasks))


def mixture_weights(sources: list[str], tasks: list[str], episode_index: np.ndarray, task_index: np.ndarray,
                    cfg: MixtureConfig) -> np.ndarray | None:
    """Row weights [N] of the mixture (None when it is uniform: rows drawn uniformly).

    `sources` per episode, `tasks` the dataset's instruction table. A task weight for an instruction the
    data does not hold is refused (a typo would otherwise silently change nothing), as is a mixture that
    leaves no row to draw.
    """
    if cfg.uniform:
        return None
    missing = sorted({name for name, _ in cfg.tasks} - set(tasks))
    if missing:
        raise ValueError(f"task weight(s) for {missing}: no such task in the data (tasks: {tasks})")
    by_source, by_task = dict(cfg.sources), dict(cfg.tasks)
    episode_weight = np.array([by_source.get(source, 1.0) for source in sources], dtype=np.float64)
    task_weight = np.array([by_task.get(task, 1.0) for task in tasks], dtype=np.float64)
    weights = episode_weight[episode_index] * task_weight[task_index]
    if not weights.any():
        raise ValueError(f"the mixture {cfg} leaves no row to train on")
    return weights


def combined(*weights: np.ndarray | None) -> np.ndarray | None:
    """The product of the row weights given (None ones are uniform); None when all are."""
    given = [np.asarray(w, dtype=np.float64) for w in weights if w is not None]
    if not given:
        return None
    product = np.prod(given, axis=0)
    if not product.any():
        raise ValueError("the row weights leave no row to train on (the mixture and the method's weights "
                         "exclude every row together)")
    return product
