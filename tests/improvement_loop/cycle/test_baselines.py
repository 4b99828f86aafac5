"""The benchmark's baselines: which rows each trains on, and that they share a RECAP round's labels."""
from dataclasses import replace

import numpy as np
import pytest

from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.baselines import awr_weights, filtered_rows, train_baseline, train_baselines
from robot_runtime.improvement_loop.cycle.rounds import pretrain, round_data, train_round
from robot_runtime.improvement_loop.recap import POSITIVE
from robot_runtime.improvement_loop.training.train import train_policy

from tiny_cycle import config as tiny_config
from tiny_cycle import write_episode


def config():
    """The cycle tests' tiny networks on one thread (two threads crawl when other processes share the cores)."""
    c = tiny_config()
    return replace(c, value=replace(c.value, threads=1), policy=replace(c.policy, threads=1))


def test_filtered_bc_keeps_exactly_successes_and_operator_steps():
    success = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    intervention = np.array([0, 1, 0, 0, 1, 1, 0, 0], bool)
    assert filtered_rows(success, intervention).tolist() == [True, True, True, False, True, True, False, True]


def test_awr_weights_grow_with_advantage_and_are_clipped():
    advantages = np.linspace(-0.3, 0.3, 101)
    weights = awr_weights(advantages, np.zeros(101, int), temperature=0.5, max_weight=20.0)
    assert np.all(np.diff(weights) >= 0) and np.any(np.diff(weights) > 0)
    assert weights.max() == pytest.approx(20.0) and np.sum(weights == weights.max()) > 1    # the top is clipped
    assert weights.min() > 0
    # Standardized per task: the same relative advantage gets the same weight whatever the task's scale.
    both = awr_weights(np.concatenate([advantages, 10 * advantages]), np.repeat([0, 1], 101), 0.5)
    np.testing.assert_allclose(both[:101], both[101:])
    with pytest.raises(ValueError, match="temperature"):
        awr_weights(advantages, np.zeros(101, int), temperature=0)


def test_baselines_train_on_the_rounds_rows_from_the_pretrained_checkpoint(tmp_path):
    root, work = tmp_path / "store", tmp_path / "work"
    store = EpisodeStore(root)
    for i in range(4):
        write_episode(store, i, "success")
    pretrained = pretrain(root, work, config())
    for i in range(4, 10):
        write_episode(store, i, "failure" if i % 2 else "success", steps=25, stage="rollout", interventions=i % 3 == 0)
    rd = round_data(root, work, pretrained, config(), 1)          # values trained once, shared below
    recap = train_round(rd, work, config())
    baselines = train_baselines(rd, work, config())
    assert set(baselines) == {"bc", "filtered_bc", "awr"}
    bundles = {recap.bundle_path, *(b.bundle_path for b in baselines.values())}
    assert len(bundles) == 4                                      # no collision within one round and second
    for method, result in baselines.items():
        m = load_bundle(result.bundle_path).manifest
        assert m.conditioning_mode == "none" and m.parent_version == pretrained.version
        assert m.model_id == f"tiny-{method}" and result.value_checkpoints == []
        assert m.normalization == load_bundle(pretrained.bundle_path).manifest.normalization
    expected = int(filtered_rows(rd.data.success, rd.data.intervention).sum())
    assert baselines["filtered_bc"].metrics["selection"]["rows"] == expected < len(rd.data)
    assert baselines["bc"].metrics["selection"]["rows"] == len(rd.data)
    assert 0 < baselines["awr"].metrics["selection"]["effective_sample_fraction"] < 1
    # The diagnostic: BC on exactly the rows RECAP labels positive.
    positive_bc = train_baseline(rd, work, "positive_bc", config())
    assert positive_bc.metrics["selection"]["rows"] == int(np.sum(rd.labels.indicators == POSITIVE)) < len(rd.data)
    with pytest.raises(ValueError, match="unknown baseline"):
        train_baseline(rd, work, "dagger", config())


def test_sample_weights_must_be_one_non_negative_weight_per_row(tmp_path):
    root, work = tmp_path / "store", tmp_path / "work"
    store = EpisodeStore(root)
    for i in range(3):
        write_episode(store, i, "success")
    pretrained = pretrain(root, work, config())
    rd = round_data(root, work, pretrained, config(), 1)
    policy_cfg = config().policy
    for bad in (np.ones(3), -np.ones(len(rd.data)), np.zeros(len(rd.data))):
        with pytest.raises(ValueError, match="sample_weights"):
            train_policy(rd.tensors, None, None, policy_cfg, init=object(), sample_weights=bad)
