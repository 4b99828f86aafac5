"""The cycle's chunk critic: trained on a stage's rows, shipped as value.onnx, parity-checked, run by the robot."""
from dataclasses import replace

import numpy as np
import pytest

from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.rounds import improve, pretrain
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint
from robot_runtime.improvement_loop.models.critic import ChunkCritic
from robot_runtime.runtime.guidance import ValueGuidance
from robot_runtime.runtime.policy import PolicyRunner

from tiny_cycle import TASKS, config, write_episode


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root, work = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("work")
    store = EpisodeStore(root)
    for i in range(4):
        write_episode(store, i, "success")
    cfg = replace(config(), chunk_critic=True)
    first = pretrain(root, work, cfg)
    for i in range(4, 8):
        write_episode(store, i, "failure" if i % 2 else "success", steps=25, stage="rollout")
    return first, improve(root, work, first, cfg, 1)


def test_pretrain_and_round_bundles_carry_a_parity_checked_critic(stages):
    for result in stages:
        manifest = load_bundle(result.bundle_path).manifest
        assert manifest.has_value
        assert manifest.training["value_parity_max_abs_error"] <= manifest.training["parity_tolerance"]
        assert manifest.training["critic"]["steps"] == config().value.steps
        critic, _ = load_checkpoint(result.metrics["critic_checkpoint"], "critic")
        assert isinstance(critic, ChunkCritic)


def test_the_robot_ranks_candidates_with_the_exported_critic(stages):
    runner = PolicyRunner.load(stages[1].bundle_path, "onnxruntime", guidance=ValueGuidance(True, 6))
    runner.select_task(TASKS[0])
    chunk = runner.infer({"front": np.zeros((16, 16, 3), np.uint8)}, np.zeros(4, np.float32))
    assert runner.candidates == 6 and runner.last_scores.shape == (6,)
    assert np.all((-1 <= runner.last_scores) & (runner.last_scores <= 0))      # normalized returns
    assert chunk.shape == (runner.manifest.chunk_length, 3) and np.all(np.isfinite(chunk))


def test_without_the_option_no_critic_is_trained(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    for i in range(4):
        write_episode(store, i, "success")
    result = pretrain(store.root, tmp_path / "work", config())
    assert not load_bundle(result.bundle_path).manifest.has_value and "critic" not in result.metrics
