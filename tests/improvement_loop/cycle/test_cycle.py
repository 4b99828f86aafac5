"""pretrain + improve end to end on a few synthetic episodes, with tiny step counts."""
import json

import numpy as np
import pytest
from safetensors import safe_open

from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeLayout, EpisodeStore
from robot_runtime.improvement_loop.cycle.advantage import episode_folds
from robot_runtime.improvement_loop.cycle.cli import main
from robot_runtime.improvement_loop.cycle.rounds import CycleResult, improve, pretrain, result_path

from tiny_cycle import LAYOUT, TASKS, config, scalars, write_episode


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    root, work = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("work")
    store = EpisodeStore(root)
    for i in range(6):
        write_episode(store, i, "success")
    write_episode(store, 6, "unlabeled")
    pretrained = pretrain(root, work, config())
    # Round-1 data: autonomous rollouts, some failing, some with an operator taking over.
    for i in range(7, 13):
        write_episode(store, i, "failure" if i % 3 == 0 else "success", steps=25, stage="rollout",
                      interventions=i % 2 == 0)
    write_episode(store, 13, "success", layout=EpisodeLayout({}, LAYOUT.state_names, LAYOUT.action_names))
    round1 = improve(root, work, pretrained, config(beta=1.5), round_index=1)
    return root, work, pretrained, round1


def test_pretrain_exports_a_behaviour_cloning_bundle(rounds):
    _, work, pretrained, _ = rounds
    bundle = load_bundle(pretrained.bundle_path)
    m = bundle.manifest
    assert bundle.path.parent == work / "bundles" and bundle.path.name == f"tiny-{pretrained.version}"
    assert m.conditioning_mode == "none" and m.parent_version == ""
    assert m.tasks == sorted(TASKS) and m.chunk_length == 10 and m.control_rate_hz == 10.0
    assert [c.name for c in m.cameras] == ["front"] and m.action_names == list(LAYOUT.action_names)
    assert m.action_low == [-1.0] * 3 and m.action_high == [1.0] * 3
    assert m.training["episodes_used"] == 6 and m.training["episodes_skipped"]["unlabeled"] == 1
    assert m.training["parity_max_abs_error"] <= 1e-4
    assert m.normalization.state_std[0] > 0
    assert len(pretrained.value_checkpoints) == 1
    for path in (pretrained.policy_checkpoint, *pretrained.value_checkpoints):
        with safe_open(path, framework="pt") as f:
            assert json.loads(f.metadata()["info"])["version"] == pretrained.version
    assert CycleResult.load(result_path(work, 0)) == pretrained


def test_improve_exports_an_advantage_bundle_from_the_pretrained_checkpoint(rounds):
    _, work, pretrained, round1 = rounds
    m = load_bundle(round1.bundle_path).manifest
    assert m.conditioning_mode == "advantage" and m.beta == 1.5
    assert m.parent_version == pretrained.version
    # Rounds keep the pretrained units, so the pretrained weights still mean the same thing.
    assert m.normalization == load_bundle(pretrained.bundle_path).manifest.normalization
    metrics = round1.metrics
    assert metrics["episodes_used"] == 12
    assert metrics["episodes_skipped"]["layout_mismatch"] == 1 and metrics["episodes_skipped"]["unlabeled"] == 1
    assert metrics["n_step"] == 10
    assert len(round1.value_checkpoints) == 2 and len(metrics["value_folds"]) == 2     # cross-fitted values
    assert round1.value_checkpoints[0].endswith("round_001/value_fold0.safetensors")
    assert set(metrics["thresholds"]) == set(TASKS)
    # 40 % of advantage-labelled steps are positive, plus every intervention step.
    assert 0.4 < metrics["positive_fraction"] <= 0.4 + metrics["intervention_fraction"] + 0.05
    assert metrics["data_policy_versions"] == {"": 6, "r0": 6}
    assert set(metrics["positive_fraction_by_policy_version"]) == {"", "r0"}
    assert set(metrics["positive_fraction_by_outcome"]) == {"success", "failure"}
    assert metrics["parity_max_abs_error"] <= 1e-4
    assert round1.policy_checkpoint.startswith(str(work / "round_001"))


def test_skipped_episodes_are_counted_in_tensorboard(rounds):
    _, work, _, _ = rounds
    assert scalars(work / "pretrain" / "tb")["data/skipped_unlabeled"] == 1
    round1 = scalars(work / "round_001" / "tb")
    assert round1["data/skipped_unlabeled"] == 1 and round1["data/skipped_layout_mismatch"] == 1
    assert round1["data/skipped_non_finite"] == 0


def test_cli_runs_a_second_round_from_the_pretrained_result(rounds, capsys):
    root, work, pretrained, _ = rounds
    main(["--store", str(root), "--work", str(work), "--stage", "round", "--round", "2",
          "--policy-steps", "2", "--value-steps", "2", "--beta", "2.0", "--model-id", "tiny"])
    printed = json.loads(capsys.readouterr().out)
    round2 = CycleResult.load(result_path(work, 2))
    assert printed == round2.to_json() and round2.round_index == 2
    assert load_bundle(round2.bundle_path).manifest.parent_version == pretrained.version
    assert load_bundle(round2.bundle_path).manifest.beta == 2.0
    with pytest.raises(ValueError, match="rounds never build on rounds"):
        improve(root, work, round2, config(), 3)


def test_folds_split_episodes_evenly_and_refuse_too_few():
    folds = episode_folds(7, 2, seed=0)
    assert sorted(np.bincount(folds)) == [3, 4]
    with pytest.raises(ValueError, match="2 folds for 1 episodes"):
        episode_folds(1, 2, seed=0)


def test_improve_needs_a_pretrained_result(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the pretrain stage first"):
        improve(tmp_path, tmp_path, tmp_path / "missing.json", config(), 1)
