"""pretrain + improve end to end on a few synthetic episodes, with tiny step counts."""
import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors import safe_open

from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeLayout, EpisodeStore
from robot_runtime.improvement_loop.cycle.advantage import LabelConfig, episode_folds, stable_folds
from robot_runtime.improvement_loop.cycle.cli import main
from robot_runtime.improvement_loop.cycle.rounds import CycleResult, improve, pretrain, result_path, share_weights
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset

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
    assert metrics["value_models"] == {"members": 1, "folds": 2, "fold_rule": "shuffle", "extra_rows": 0,
                                       "init_checkpoints": pretrained.value_checkpoints}
    quality = metrics["label_quality"]
    assert set(quality["by_task"]) == set(TASKS) and quality["takeover_window"] == 10
    for key in ("advantage_auc", "indicator_auc", "takeover_auc"):
        assert 0 <= quality[key] <= 1
    assert len(quality["value_calibration"]["bins"]) == 10 and quality["value_calibration"]["ece"] >= 0


def test_skipped_episodes_are_counted_in_tensorboard(rounds):
    _, work, _, _ = rounds
    assert scalars(work / "pretrain" / "tb")["data/skipped_unlabeled"] == 1
    round1 = scalars(work / "round_001" / "tb")
    assert round1["data/skipped_unlabeled"] == 1 and round1["data/skipped_layout_mismatch"] == 1
    assert round1["data/skipped_non_finite"] == 0


def test_cli_runs_a_second_round_from_the_pretrained_result(rounds, capsys):
    root, work, pretrained, _ = rounds
    main(["--store", str(root), "--work", str(work), "--stage", "round", "--round", "2",
          "--policy-steps", "2", "--value-steps", "2", "--beta", "2.0", "--model-id", "tiny", "--method", "recap",
          "--chunk-critic"])
    printed = json.loads(capsys.readouterr().out)
    round2 = CycleResult.load(result_path(work, 2))
    assert printed == round2.to_json() and round2.round_index == 2
    assert load_bundle(round2.bundle_path).manifest.parent_version == pretrained.version
    assert load_bundle(round2.bundle_path).manifest.beta == 2.0
    assert load_bundle(round2.bundle_path).manifest.has_value          # --chunk-critic: value.onnx beside it
    with pytest.raises(ValueError, match="rounds never build on rounds"):
        improve(root, work, round2, config(), 3)


OPTIONS = {
    "mc_youden": LabelConfig(estimator="mc", threshold="youden"),
    "gae": LabelConfig(estimator="gae", gae_lambda=0.9),
    "auto_n": LabelConfig(n_step="auto"),
    "ensemble": LabelConfig(ensemble=2),
    "outcome": LabelConfig(threshold="outcome"),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_each_label_option_trains_a_round(rounds, name):
    root, work, pretrained, _ = rounds
    options = OPTIONS[name]
    result = improve(root, work, pretrained, replace(config(), labels=options), 10 + list(OPTIONS).index(name))
    m = result.metrics
    assert m["advantage"] == options.estimator and m["threshold"] == options.threshold
    assert 0 <= m["label_quality"]["advantage_auc"] <= 1
    if name == "mc_youden":
        assert "n_step" not in m and set(m["threshold_by_task"].values()) <= {"youden", "fraction"}
    elif name == "gae":
        assert m["gae_lambda"] == 0.9
    elif name == "outcome":
        # Steps of successful episodes and operator steps positive, the rest negative, whatever the advantage.
        data = load_dataset(root, DatasetConfig())
        expected = np.mean(data.success | data.intervention)
        assert m["thresholds"] == {} and m["positive_fraction"] == pytest.approx(expected)
        assert m["positive_fraction_by_outcome"]["success"] == 1.0
    elif name == "auto_n":
        assert m["n_step"] == "auto" and set(m["n_step_by_task"]) == set(TASKS)
        assert all(n in (2, 5, 10, 20, 40) for n in m["n_step_by_task"].values())      # 0.25..4 s at 10 Hz
    else:
        assert len(result.value_checkpoints) == 4 and len(m["value_member_explained_variance"]) == 2


def test_share_weights_draw_the_asked_share_of_positive_rows():
    positive = np.array([True, False, False, False, True, False])
    weights = share_weights(positive, 0.8)
    assert weights[positive].sum() / weights.sum() == pytest.approx(0.8)
    assert len(set(weights[positive])) == 1 and len(set(weights[~positive])) == 1     # uniform within a side
    assert np.all(share_weights(np.ones(3, bool), 0.8) == 1.0)                         # one side: uniform rows
    with pytest.raises(ValueError, match="positive_share"):
        share_weights(positive, 1.0)


def test_positive_share_and_indicators_from_null_train_a_round(rounds):
    root, work, pretrained, _ = rounds
    result = improve(root, work, pretrained, replace(config(), positive_share=0.7, indicators_from_null=True), 20)
    assert result.metrics["policy"]["positive_share"] == 0.7 and result.metrics["policy"]["indicators_from_null"]


def test_a_shared_value_warm_started_across_rounds(rounds, tmp_path):
    root, work, pretrained, _ = rounds
    other = EpisodeStore(tmp_path / "other")                    # e.g. another task's store
    for i in range(20, 24):
        write_episode(other, i, "success" if i % 2 else "failure", steps=15, stage="rollout")
    fresh = tmp_path / "work"
    fresh.mkdir()
    for shared in ("text_cache", "pretrain"):                  # the same start, rounds of its own
        (fresh / shared).symlink_to(work / shared)
    cfg = replace(config(), labels=LabelConfig(value_init="previous", value_stores=(str(other.root),)))
    round1 = improve(root, fresh, pretrained, cfg, 1)
    assert round1.metrics["value_models"] == {"members": 1, "folds": 2, "fold_rule": "episode_hash",
                                              "init_checkpoints": pretrained.value_checkpoints, "extra_rows": 60}
    main(["--store", str(root), "--work", str(fresh), "--stage", "round", "--round", "2", "--policy-steps", "2",
          "--value-steps", "2", "--model-id", "tiny", "--value-init", "previous", "--value-store", str(other.root),
          "--advantage", "gae", "--gae-lambda", "0.8", "--threshold", "youden", "--positive-fraction", "0.3"])
    round2 = CycleResult.load(result_path(fresh, 2))
    assert round2.metrics["value_models"]["init_checkpoints"] == sorted(round1.value_checkpoints)
    assert (round2.metrics["gae_lambda"], round2.metrics["threshold"]) == (0.8, "youden")
    assert round2.metrics["positive_fraction_target"] == 0.3
    # Warm-starting from shuffled folds (the fixture's round 1) would value episodes with models that saw them.
    with pytest.raises(ValueError, match="episode hash"):
        improve(root, work, pretrained, cfg, 2)
    with pytest.raises(ValueError, match="own store"):
        improve(root, fresh, pretrained, replace(config(), labels=LabelConfig(value_stores=(str(root),))), 3)


def test_label_options_are_checked():
    for bad in ({"estimator": "td"}, {"threshold": "median"}, {"value_init": "last"}, {"n_step": 0},
                {"n_step": "long"}, {"ensemble": 0}, {"folds": 1}, {"gae_lambda": 2.0}):
        with pytest.raises(ValueError):
            LabelConfig(**bad)


def test_stable_folds_keep_an_episode_in_its_fold_as_the_store_grows():
    ids = [f"ep{i:03d}" for i in range(40)]
    first, grown = stable_folds(ids[:20], 2, seed=0), stable_folds(ids, 2, seed=0)
    assert grown[:20].tolist() == first.tolist() and set(grown) == {0, 1}
    with pytest.raises(ValueError, match="empty"):
        stable_folds(ids[:1], 2, seed=0)


def test_folds_split_episodes_evenly_and_refuse_too_few():
    folds = episode_folds(7, 2, seed=0)
    assert sorted(np.bincount(folds)) == [3, 4]
    with pytest.raises(ValueError, match="2 folds for 1 episodes"):
        episode_folds(1, 2, seed=0)


def test_improve_needs_a_pretrained_result(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the pretrain stage first"):
        improve(tmp_path, tmp_path, tmp_path / "missing.json", config(), 1)


def test_the_cli_refuses_a_bad_positive_share_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path), "--work", str(tmp_path / "work"), "--stage", "round",
              "--positive-share", "1.5"])
    assert exit_info.value.code == 2 and "positive_share must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_the_cli_trains_a_baseline_round_and_refuses_a_critic_with_it(rounds, capsys):
    root, work, pretrained, _ = rounds
    main(["--store", str(root), "--work", str(work), "--stage", "round", "--round", "21", "--method", "awr",
          "--policy-steps", "2", "--value-steps", "2", "--model-id", "tiny"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == CycleResult.load(result_path(work, 21)).to_json()
    assert printed["metrics"]["method"] == "awr" and printed["metrics"]["selection"]["clipped_fraction"] >= 0
    assert load_bundle(printed["bundle_path"]).manifest.conditioning_mode == "none"
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(root), "--work", str(work), "--stage", "round", "--round", "22", "--method", "awr",
              "--chunk-critic"])
    assert exit_info.value.code == 2 and "chunk critic" in capsys.readouterr().err


def test_a_round_trains_with_a_data_mixture_and_refuses_a_bad_one(rounds, capsys):
    root, work, pretrained, _ = rounds
    base = ["--store", str(root), "--work", str(work), "--stage", "round", "--policy-steps", "2", "--value-steps",
            "2", "--model-id", "tiny"]
    main([*base, "--round", "23", "--source-weight", "autonomous=0.5", "--task-weight", f"{TASKS[0]}=2"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["method"] == "filtered_bc"           # the measured winner trains unless told
    assert printed["metrics"]["mixture"] == {"sources": {"autonomous": 0.5}, "tasks": {TASKS[0]: 2.0}}
    assert load_bundle(printed["bundle_path"]).manifest.training["mixture"] == printed["metrics"]["mixture"]
    for bad, message in ((["--source-weight", "robots=1"], "unknown episode source"),
                         (["--source-weight", "autonomous"], "NAME=WEIGHT")):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--round", "24", *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_postbc_pretrain_records_its_posterior(rounds, tmp_path, capsys):
    root, _, _, _ = rounds
    main(["--store", str(root), "--work", str(tmp_path / "work"), "--stage", "pretrain", "--policy-steps", "2",
          "--value-steps", "2", "--model-id", "tiny", "--postbc-members", "2", "--postbc-alpha", "0.5"])
    printed = json.loads(capsys.readouterr().out)
    posterior = printed["metrics"]["postbc"]
    assert (posterior["members"], posterior["alpha"]) == (2, 0.5) and posterior["target_noise_std_mean"] > 0
