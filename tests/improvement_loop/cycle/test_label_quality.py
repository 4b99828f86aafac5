"""A round's label-quality figures on hand-built datasets whose answers are known."""
import numpy as np
import pytest

from robot_runtime.episode import EpisodeLayout
from robot_runtime.improvement_loop.cycle.label_quality import before_takeover, label_quality, outcome_auc
from robot_runtime.improvement_loop.data.dataset import Dataset, EpisodeInfo
from robot_runtime.improvement_loop.recap import NEGATIVE, POSITIVE


def dataset(lengths, tasks, success, intervention=None) -> Dataset:
    """Per-step bookkeeping of contiguous episodes; no observations (the figures never read them)."""
    lengths = np.asarray(lengths)
    n = int(lengths.sum())
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    episodes = [EpisodeInfo(f"ep{i}", t, ok, int(length), int(start), "r0", "autonomous")
                for i, (t, ok, length, start) in enumerate(zip(tasks, success, lengths, starts))]

    def per_step(values):
        return np.repeat(np.asarray(values), lengths)

    return Dataset(
        layout=EpisodeLayout({}, ("x",), ("a",)), control_rate_hz=10.0,
        tasks=[f"task{t}" for t in range(max(tasks) + 1)], episodes=episodes, images={},
        state=np.zeros((n, 1), np.float32), action=np.zeros((n, 1), np.float32),
        action_chunk=np.zeros((n, 1, 1), np.float32), chunk_mask=np.ones((n, 1), bool),
        task_index=per_step(tasks).astype(np.int64), episode_index=per_step(np.arange(len(lengths))).astype(np.int64),
        step_index=np.concatenate([np.arange(m) for m in lengths]).astype(np.int64),
        episode_length=per_step(lengths).astype(np.int64),
        intervention=np.zeros(n, bool) if intervention is None else np.asarray(intervention, bool),
        held=np.zeros(n, bool), success=per_step(success).astype(bool))


def test_steps_before_a_takeover_are_the_window_before_each_onset_in_the_same_episode():
    # Episode 0: operator on steps 4-5; episode 1: operator from step 0 (no autonomous step before it).
    intervention = [0, 0, 0, 0, 1, 1, 0, 0] + [1, 1, 0, 0]
    data = dataset([8, 4], [0, 0], [True, False], intervention)
    assert before_takeover(data, window=2).tolist() == [0, 0, 1, 1, 0, 0, 0, 0] + [0, 0, 0, 0]
    assert before_takeover(data, window=10).tolist() == [1, 1, 1, 1, 0, 0, 0, 0] + [0, 0, 0, 0]
    assert not before_takeover(dataset([3], [0], [True]), window=5).any()


def test_outcome_auc_is_per_task_and_ignores_operator_steps():
    # Task 0: a success and a failure; task 1: successes only (undefined).
    intervention = [0, 0, 1] + [0, 0, 0] + [0, 0]
    data = dataset([3, 3, 2], [0, 0, 1], [True, False, True], intervention)
    scores = np.array([0.9, 0.8, -5.0] + [0.1, 0.2, 0.3] + [0.0, 0.0])  # the operator step's -5 must not count
    assert outcome_auc(scores, data) == {0: 1.0, 1: None}


def test_label_quality_of_separating_labels_and_a_perfect_value():
    data = dataset([4, 4, 4, 4], [0, 0, 1, 1], [True, False, True, False],
                   [0, 0, 0, 0] + [0, 0, 1, 1] + [0, 0, 0, 0] + [0, 0, 0, 0])
    returns = np.linspace(-1, 0, 16)
    # Advantages: successes above failures in task 0, reversed in task 1; the steps before the takeover lowest.
    advantages = np.array([1, 1, 1, 1] + [-2, -2, 0, 0] + [-1, -1, -1, -1] + [1, 1, 1, 1], dtype=float)
    labels = np.where(advantages > 0, POSITIVE, NEGATIVE)
    figures = label_quality(data, returns, returns, advantages, labels, window=2)
    task0, task1 = figures["by_task"]["task0"], figures["by_task"]["task1"]
    assert task0["advantage_auc"] == 1.0 and task1["advantage_auc"] == 0.0
    assert figures["advantage_auc"] == 0.5                      # the mean over tasks
    assert task0["indicator_auc"] == 1.0 and task0["positive_autonomous"] == {"success": 1.0, "failure": 0.0}
    assert task0["takeover_auc"] == 1.0 and task1["takeover_auc"] is None     # no takeover in task 1
    assert figures["takeover_auc"] == 1.0 and figures["takeover_window"] == 2
    assert task0["autonomous_steps"] == {"success": 4, "failure": 2, "before_takeover": 2}
    assert task0["explained_variance"] == 1.0
    assert figures["value_calibration"]["ece"] == pytest.approx(0, abs=1e-12)
