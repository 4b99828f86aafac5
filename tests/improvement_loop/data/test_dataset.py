"""Loading real Zarr episodes for training: what is kept, what is skipped and counted."""
import json

import numpy as np
import pytest

from robot_runtime.episode import COMMIT_MARKER, EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, chunk_targets, load_dataset

LAYOUT = EpisodeLayout({"front": (8, 10)}, ("x", "y", "const"), ("vx", "vy"))


def write(store, steps, task="push", outcome="success", layout=LAYOUT, rate=10.0, bad=None, interventions=(), held=()):
    """Commit one episode whose action at step t is (t, -t) and state is (t, 2t, 5).

    Ids are numbered so that the store's order (sorted ids) is the order of writing.
    """
    episode_id = f"ep{len(store.episode_ids()):03d}"
    writer = store.writer(layout, EpisodeMetadata(task=task, robot_id="r1", control_rate_hz=rate,
                                                  episode_id=episode_id))
    for t in range(steps):
        state = np.array([t, 2 * t, 5] + [0] * (len(layout.state_names) - 3), np.float32)
        action = np.array([t, -t], np.float32)
        if bad is not None and t == steps // 2:
            (state if bad == "state" else action)[0] = np.nan if bad == "state" else np.inf
        images = {cam: np.full((*hw, 3), t, np.uint8) for cam, hw in layout.cameras.items()}
        writer.append(Step(0.1 * t, images, state, action, intervention=t in interventions, held=t in held))
    return writer.commit(outcome)


def test_chunk_targets_repeat_the_last_action_and_mask_it():
    actions = np.arange(4, dtype=np.float32)[:, None]
    chunk, mask = chunk_targets(actions, np.zeros(4, bool), 3)
    assert chunk[..., 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]]
    assert mask.tolist() == [[True] * 3, [True] * 3, [True, True, False], [True, False, False]]


def test_held_steps_are_no_imitation_target():
    _, mask = chunk_targets(np.zeros((4, 1), np.float32), np.array([False, True, False, False]), 2)
    assert mask.tolist() == [[True, False], [False, True], [True, True], [True, False]]


def test_good_episodes_become_flat_per_step_arrays(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, 5, task="push", interventions=(3, 4), held=(1,))
    write(store, 3, task="reach", outcome="failure")
    data = load_dataset(tmp_path, DatasetConfig(chunk_length=4))
    assert len(data) == 8 and len(data.episodes) == 2
    assert data.tasks == ["push", "reach"]
    assert data.control_rate_hz == 10.0
    assert data.task_index.tolist() == [0] * 5 + [1] * 3
    assert data.episode_index.tolist() == [0] * 5 + [1] * 3
    assert data.step_index.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert data.episode_length.tolist() == [5] * 5 + [3] * 3
    assert data.success.tolist() == [True] * 5 + [False] * 3
    assert data.intervention.tolist() == [False] * 3 + [True] * 2 + [False] * 3
    assert data.held.tolist() == [False, True] + [False] * 6
    assert data.chunk_mask[0].tolist() == [True, False, True, True]
    assert data.images["front"].shape == (8, 8, 10, 3) and data.images["front"][4, 0, 0, 0] == 4
    # Chunk of the second-to-last step of episode 0: actions 3, 4, then 4 repeated (masked).
    assert data.action_chunk[3, :, 0].tolist() == [3, 4, 4, 4]
    assert data.chunk_mask[3].tolist() == [True, True, False, False]
    # Chunks never reach into the next episode.
    assert data.action_chunk[4, :, 0].tolist() == [4, 4, 4, 4]
    assert sum(data.skipped.values()) == 0


def test_stats_floor_constant_dimensions(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, 6)
    cfg = DatasetConfig(state_std_floor=0.05, action_std_floor=2.0)
    data = load_dataset(tmp_path, cfg)
    stats = data.stats(cfg)
    assert stats.state_std[2] == pytest.approx(0.05)              # 'const' is always 5
    assert stats.state_mean[2] == pytest.approx(5)
    assert stats.state_std[0] == pytest.approx(np.std(np.arange(6)))   # 1.71: above the state floor
    assert stats.action_std.tolist() == [2.0, 2.0]                       # 1.71: below the action floor
    assert stats.action_mean.tolist() == [2.5, -2.5]
    low, high = data.action_bounds()
    assert low == [-1.0, -5.0] and high == [5.0, 1.0]           # widened where the data goes past [-1, 1]


def test_bad_episodes_are_skipped_and_counted(tmp_path, caplog):
    store = EpisodeStore(tmp_path)
    write(store, 4)
    write(store, 4, outcome="unlabeled")
    write(store, 0, outcome="failure")
    write(store, 4, bad="state")
    write(store, 4, bad="action")
    write(store, 4, layout=EpisodeLayout({"front": (8, 10)}, ("x", "y", "other"), ("vx", "vy")))
    write(store, 4, layout=EpisodeLayout({}, ("x", "y", "const"), ("vx", "vy")))
    write(store, 4, rate=20.0)
    corrupt = write(store, 4)
    marker = json.loads((corrupt / COMMIT_MARKER).read_text())
    (corrupt / COMMIT_MARKER).write_text(json.dumps({**marker, "schema_version": 99}))
    damaged = write(store, 4)  # a frame chunk lost: its rows would read back as zeros
    (damaged / "images/front/c/0/0/0/0").unlink()
    write(store, 2, task="reach")
    data = load_dataset(tmp_path, DatasetConfig())
    assert data.skipped == {"unreadable": 2, "unlabeled": 1, "empty": 1, "non_finite": 2,
                            "layout_mismatch": 2, "rate_mismatch": 1}
    assert len(data.episodes) == 2 and len(data) == 6
    assert np.isfinite(data.state).all() and np.isfinite(data.action).all()
    # One summary line carries the counts, at warning level so that it is seen.
    summary = [r for r in caplog.records if "episodes usable" in r.getMessage()]
    assert len(summary) == 1 and summary[0].levelname == "WARNING"
    assert "2 episodes usable, 9 skipped" in summary[0].getMessage() and "'non_finite': 2" in summary[0].getMessage()


def test_pinned_layout_skips_episodes_that_disagree(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, 3, layout=EpisodeLayout({}, ("x", "y", "const"), ("vx", "vy")))
    write(store, 3)
    data = load_dataset(tmp_path, DatasetConfig(), layout=LAYOUT)
    assert data.skipped["layout_mismatch"] == 1 and len(data) == 3 and list(data.images) == ["front"]


def test_nothing_usable_names_the_store_and_the_counts(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, 3, outcome="unlabeled")
    with pytest.raises(ValueError, match=r"no usable episodes.*'unlabeled': 1"):
        load_dataset(tmp_path, DatasetConfig())
