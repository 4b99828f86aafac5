"""Episode sources read from a real store, and the data mixture's row weights by source and task."""
import numpy as np
import pytest

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset
from robot_runtime.improvement_loop.data.sources import MixtureConfig, combined, episode_source

from tiny_cycle import TASKS, write_episode


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    store = EpisodeStore(tmp_path_factory.mktemp("store"))
    write_episode(store, 0, "success")                                           # demonstration, TASKS[0]
    write_episode(store, 1, "success")                                           # demonstration, TASKS[1]
    write_episode(store, 2, "failure", stage="rollout")                          # autonomous, TASKS[0]
    write_episode(store, 3, "success", stage="rollout", interventions=True)      # corrected, TASKS[1]
    return load_dataset(store.root, DatasetConfig())


def test_sources_come_from_the_recorded_metadata(data):
    assert [e.source for e in data.episodes] == ["demonstration", "demonstration", "autonomous", "corrected"]
    imported = {"policy_version": "r3", "extra": {"source": {"bag": "/bags/run1", "storage": "mcap"}}}
    assert episode_source(imported, 0) == "imported"
    assert episode_source({"policy_version": "r3", "extra": {"source": "a note"}}, 0) == "autonomous"


def test_row_weights_multiply_source_and_task(data):
    assert data.mixture(MixtureConfig()) is None                                 # uniform: rows drawn uniformly
    weights = data.mixture(MixtureConfig(sources=(("autonomous", 0.0), ("corrected", 3.0)), tasks=((TASKS[1], 2.0),)))
    per_episode = [weights[data.episode_index == k] for k in range(4)]
    assert all(len(set(w)) == 1 for w in per_episode)                            # one weight per episode
    assert [w[0] for w in per_episode] == [1.0, 2.0, 0.0, 6.0]


@pytest.mark.parametrize("mixture, message", [
    (MixtureConfig(tasks=(("stack the cups", 2.0),)), "no such task"),
    (MixtureConfig(sources=(("demonstration", 0.0), ("autonomous", 0.0), ("corrected", 0.0))), "no row"),
])
def test_a_mixture_the_data_cannot_honour_is_refused(data, mixture, message):
    with pytest.raises(ValueError, match=message):
        data.mixture(mixture)


def test_bad_settings_are_refused_when_made():
    with pytest.raises(ValueError, match="unknown episode source"):
        MixtureConfig(sources=(("simulation", 1.0),))
    with pytest.raises(ValueError, match=">= 0"):
        MixtureConfig(tasks=(("reach", -1.0),))
    with pytest.raises(ValueError, match="no row"):
        combined(np.array([1.0, 0.0]), np.array([0.0, 5.0]))
    assert combined(None, None) is None
