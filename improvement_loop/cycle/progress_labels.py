"""The progress reward model's training set, and labels it writes for the episodes nobody judged.

A fleet records far more episodes than operators label (issue 14). The training set is RoboReward's: the
labeled episodes (a success is progress 5; a failure is the operator's progress if given, at most 4, else
1) plus generated negatives, each of a successful episode, neither of them a success:
  - counterfactual relabeling: the same states under another task's instruction (one, drawn at random from
    the instructions of the labeled episodes, so only with two or more) score 1. Only successes are
    relabeled: a failure scores 1 under any instruction, so its relabel would teach nothing new;
  - temporal clipping: the first fraction f of the steps scores 1 + round(4 f), clipped to 1..4.

Labels written by the model carry `labeled_by` "progress-model:<model id>" and the confidence in the
note. They never train a later model (only the recorded outcome and operators' labels do), and the model
never writes over a label file, so an operator's label always wins, and labeling again leaves the model's
earlier labels alone.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_runtime.episode import LABELS, EpisodeError, EpisodeStore
from robot_runtime.improvement_loop.data.text import TextEmbedder
from robot_runtime.improvement_loop.models.progress import (
    SCORES,
    ProgressConfig,
    ProgressRow,
    ProgressScorer,
    save_progress,
    train_progress,
)

log = logging.getLogger(__name__)

MODEL_LABELER = "progress-model:"  # labeled_by of a model's label; any other label file is an operator's
MIN_STEPS = 2                      # a trajectory (or a prefix) needs a start and an end
SKIP_REASONS = ("unreadable", "too_short", "non_finite", "layout_mismatch")


@dataclass
class Trajectory:
    """An episode's states and its label as read (the operator's label over the recorded outcome)."""

    episode_id: str
    task: str
    state_names: tuple[str, ...]
    states: np.ndarray          # float32 [T, S], as recorded
    outcome: str                # success, failure or unlabeled
    progress: int | None        # from labels.json, if any
    labeled_by: str | None      # who wrote labels.json; None when there is none

    @property
    def trusted(self) -> bool:
        """A training target: an outcome that the robot recorded or an operator gave, not a model."""
        return self.outcome in ("success", "failure") and not (self.labeled_by or "").startswith(MODEL_LABELER)


@dataclass(frozen=True)
class NegativesConfig:
    counterfactuals: bool = True
    prefix_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    seed: int = 0


@dataclass
class LabelSummary:
    labeled: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    low_confidence: int = 0     # predicted below min_confidence: left unlabeled
    already_labeled: int = 0    # a recorded outcome or a label file (an operator's or a model's): not touched
    skipped: dict[str, int] = field(default_factory=dict)  # unusable episodes, by reason

    def to_json(self) -> dict:
        return asdict(self)


def read_trajectories(store: EpisodeStore,
                      state_names: tuple[str, ...] | None = None) -> tuple[list[Trajectory], dict[str, int]]:
    """Every usable committed episode of `store`, and the count of the others by reason (SKIP_REASONS).

    `state_names` pins the state layout (a trained model's); by default the first usable episode sets it.
    """
    found, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    for episode_id in store.episode_ids():
        try:
            episode = store.open(episode_id)
            states = episode.array("state")
        except EpisodeError as err:
            log.warning("skipping episode %s: %s", episode_id, err)
            skipped["unreadable"] += 1
            continue
        names = episode.layout.state_names
        reason = ("layout_mismatch" if state_names is not None and names != tuple(state_names) else
                  "too_short" if len(states) < MIN_STEPS else
                  "non_finite" if not np.isfinite(states).all() else None)
        if reason:
            log.info("skipping episode %s: %s", episode_id, reason)
            skipped[reason] += 1
            continue
        state_names = names
        found.append(Trajectory(episode_id, episode.task, names, states.astype(np.float32), episode.outcome,
                                episode.meta.get("progress"), episode.meta.get("labeled_by")))
    return found, {reason: n for reason, n in skipped.items() if n}


def episode_row(trajectory: Trajectory) -> ProgressRow:
    """A labeled episode as it is: success 5; failure the operator's progress (at most 4), else 1."""
    success = trajectory.outcome == "success"
    progress = SCORES if success else min(trajectory.progress or 1, SCORES - 1)
    return ProgressRow(trajectory.states, trajectory.task, progress, success, "episode", trajectory.episode_id)


def prefix_rows(trajectory: Trajectory, fractions: tuple[float, ...]) -> list[ProgressRow]:
    """Temporal clipping: the first fraction f of the steps scores 1 + round(4 f), clipped to 1..4."""
    rows = []
    for fraction in fractions:
        steps = int(round(fraction * len(trajectory.states)))
        if steps >= MIN_STEPS:
            rows.append(ProgressRow(trajectory.states[:steps], trajectory.task,
                                    int(np.clip(1 + round(4 * fraction), 1, SCORES - 1)), False, "prefix",
                                    trajectory.episode_id))
    return rows


def training_rows(trajectories: list[Trajectory], cfg: NegativesConfig = NegativesConfig()) -> list[ProgressRow]:
    """The trusted episodes as they are, plus the generated negatives of each success (module docstring)."""
    labeled = [t for t in trajectories if t.trusted]
    instructions = sorted({t.task for t in labeled})
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for trajectory in labeled:
        rows.append(episode_row(trajectory))
        if trajectory.outcome != "success":
            continue
        others = [i for i in instructions if i != trajectory.task]
        if cfg.counterfactuals and others:
            rows.append(ProgressRow(trajectory.states, others[rng.integers(len(others))], 1, False,
                                    "counterfactual", trajectory.episode_id))
        rows.extend(prefix_rows(trajectory, cfg.prefix_fractions))
    return rows


def label_unlabeled(store: EpisodeStore, scorer: ProgressScorer, embedder: TextEmbedder,
                    min_confidence: float) -> LabelSummary:
    """Write the model's label on each unlabeled episode without a label file whose predicted outcome has
    at least `min_confidence`; every other episode is left as it is. Returns the counts."""
    trajectories, skipped = read_trajectories(store, scorer.state_names)
    summary = LabelSummary(skipped=skipped)
    todo = [t for t in trajectories if t.outcome == "unlabeled" and t.labeled_by is None]
    summary.already_labeled = len(trajectories) - len(todo)
    predictions = scorer.predict([t.states for t in todo], [t.task for t in todo], embedder)
    for trajectory, prediction in zip(todo, predictions):
        if prediction.confidence < min_confidence:
            summary.low_confidence += 1
            continue
        if (store.episodes_dir / trajectory.episode_id / LABELS).exists():  # an operator labeled it meanwhile
            summary.already_labeled += 1
            continue
        outcome = "success" if prediction.success else "failure"
        store.label(trajectory.episode_id, outcome, prediction.progress,
                    note=f"confidence {prediction.confidence:.3f}; "
                         f"success probability {prediction.success_probability:.3f}",
                    operator=f"{MODEL_LABELER}{scorer.model_id}")
        summary.labeled[outcome] += 1
    log.info("%s: progress model labels %s", store.root, summary.to_json())
    return summary


def label_store(store_root: str | os.PathLike, work_dir: str | os.PathLike, min_confidence: float,
                model_id: str = "progress", cfg: ProgressConfig = ProgressConfig()) -> dict:
    """`robot-runtime-train --stage progress`: train the model on the store's trusted episodes (plus the
    generated negatives), save it as <work>/progress/<model_id>.safetensors, and label the store's unlabeled
    episodes it is at least `min_confidence` sure of. Returns what it did (JSON)."""
    if not 0.5 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0.5, 1] (the predicted outcome's probability), not "
                         f"{min_confidence}")
    store = EpisodeStore(store_root, create=False)
    trajectories, skipped = read_trajectories(store)
    outcomes = Counter(t.outcome for t in trajectories if t.trusted)
    if not outcomes["success"] or not outcomes["failure"]:  # generated negatives are no stand-in for a real failure
        raise ValueError(f"{store.root}: the progress model needs labeled successes and failures; found "
                         f"{dict(outcomes) or 'no labeled episodes'}")
    rows = training_rows(trajectories, NegativesConfig(seed=cfg.seed))
    embedder = TextEmbedder(Path(work_dir) / "text_cache")
    scorer, info = train_progress(rows, embedder, trajectories[0].state_names, cfg, model_id)
    path = save_progress(Path(work_dir) / "progress" / f"{model_id}.safetensors", scorer, info)
    summary = label_unlabeled(store, scorer, embedder, min_confidence)
    return {"model": str(path), "training": info, "skipped_for_training": skipped,
            "min_confidence": min_confidence, "labels": summary.to_json()}
