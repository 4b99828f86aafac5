"""The progress reward model on a tiny synthetic store: its training set (episodes plus RoboReward's generated
negatives), its separation of successes from failures, the labels it writes (never over anyone's label), and
benchmarks/progress_reward.py end to end."""
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.improvement_loop.cycle.progress_labels import (
    NegativesConfig,
    Trajectory,
    label_unlabeled,
    read_trajectories,
    training_rows,
)
from robot_runtime.improvement_loop.data.text import EMBEDDING_DIM, TextEmbedder
from robot_runtime.improvement_loop.metrics import rank_auc
from robot_runtime.improvement_loop.models.progress import ProgressConfig, load_progress, save_progress, train_progress
from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator
from robot_runtime.sim.rollout import run_episode, sim_layout

from repo import ROOT
from tiny_cycle import LAYOUT, TASKS, write_episode

STATE_ONLY = EpisodeLayout({}, LAYOUT.state_names, LAYOUT.action_names)
SUCCESSES, FAILURES = (0, 1), (2, 3)              # recorded outcomes; an index's parity picks its instruction
UNLABELED = {4: True, 5: True, 6: False, 7: False}  # index -> truly a success: reaches the goal, or barely moves
OPERATOR, MODEL, NAN, SHORT = 8, 9, 10, 11          # an operator's failure (progress 3), an earlier model's label
CONFIG = ProgressConfig(epochs=20, batch_size=32)   # the labels' bookkeeping needs no good model


class OfflineEmbedder(TextEmbedder):
    """A TextEmbedder whose encoder is a fixed random unit vector per text, so no test loads the real one."""

    def _encode(self, texts):
        vectors = np.stack([np.random.default_rng(list(hashlib.sha256(t.encode()).digest())).normal(
            size=EMBEDDING_DIM) for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def episode_id(index: int) -> str:
    return f"ep{index:03d}"


def reaching(store, index, outcome):
    """60 steps reach the goal; 4 barely leave the start."""
    write_episode(store, index, outcome, steps=60 if outcome == "success" else 4, layout=STATE_ONLY)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> EpisodeStore:
    store = EpisodeStore(tmp_path_factory.mktemp("progress") / "store")
    for i in SUCCESSES:
        reaching(store, i, "success")
    for i in FAILURES:
        reaching(store, i, "failure")
    for i, success in UNLABELED.items():
        write_episode(store, i, "unlabeled", steps=60 if success else 4, layout=STATE_ONLY)
    write_episode(store, OPERATOR, "unlabeled", steps=30, layout=STATE_ONLY)
    store.label(episode_id(OPERATOR), "failure", progress=3, operator="alice")
    write_episode(store, MODEL, "unlabeled", steps=60, layout=STATE_ONLY)
    store.label(episode_id(MODEL), "failure", progress=1, operator="progress-model:old")
    writer = store.writer(STATE_ONLY, EpisodeMetadata(task=TASKS[0], robot_id="sim", control_rate_hz=10.0,
                                                      episode_id=episode_id(NAN)))
    for t in range(5):
        writer.append(Step(t * 0.1, {}, np.full(4, np.nan, np.float32), np.zeros(3, np.float32)))
    writer.commit("success")
    write_episode(store, SHORT, "success", steps=1, layout=STATE_ONLY)
    return store


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on a busy machine train faster on one thread than fighting for two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> TextEmbedder:
    return OfflineEmbedder(tmp_path_factory.mktemp("text") / "text_cache")


@pytest.fixture(scope="module")
def trained(store, embedder):
    trajectories, _ = read_trajectories(store)
    return train_progress(training_rows(trajectories), embedder, STATE_ONLY.state_names, CONFIG, model_id="tiny")


def test_the_training_set_is_the_trusted_episodes_plus_counterfactuals_and_prefixes(store):
    trajectories, skipped = read_trajectories(store)
    assert skipped == {"non_finite": 1, "too_short": 1}
    rows = training_rows(trajectories)
    by_kind = {kind: [r for r in rows if r.kind == kind] for kind in ("episode", "counterfactual", "prefix")}
    targets = {r.episode_id: (r.progress, r.success) for r in by_kind["episode"]}
    assert targets == {**{episode_id(i): (5, True) for i in SUCCESSES}, **{episode_id(i): (1, False) for i in FAILURES},
                       episode_id(OPERATOR): (3, False)}        # neither the unlabeled nor the model's label train
    task_of = {t.episode_id: t.task for t in trajectories}
    assert sorted(r.episode_id for r in by_kind["counterfactual"]) == [episode_id(i) for i in SUCCESSES]
    for row in by_kind["counterfactual"]:
        assert row.instruction != task_of[row.episode_id] and (row.progress, row.success) == (1, False)
        assert len(row.states) == 60
    prefixes = sorted((r.episode_id, len(r.states), r.progress, r.success) for r in by_kind["prefix"])
    assert prefixes == sorted((episode_id(i), steps, progress, False) for i in SUCCESSES
                              for steps, progress in ((12, 2), (24, 3), (36, 3), (48, 4)))
    one_task = [t for t in trajectories if t.task == TASKS[0]]
    assert not [r for r in training_rows(one_task) if r.kind == "counterfactual"]
    assert len(training_rows(trajectories, NegativesConfig(False, ()))) == len(by_kind["episode"])


def moving_to(start, target, steps, goal) -> np.ndarray:
    """States [x, y, goal_x, goal_y] of a point going straight from `start` to `target` in `steps` steps."""
    path = start + np.linspace(0, 1, steps)[:, None] * (target - start)
    return np.hstack([path, np.tile(goal, (steps, 1))]).astype(np.float32)


def separable(count: int, seed: int) -> list[Trajectory]:
    """Trajectories of the two instructions as the recipe assumes them: told apart by their states (each
    task has its own goal region, recorded in the state) and ending where a success ends, at the goal; a
    failure stops 20-70% of the way there."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(count):
        task, success = i % 2, i % 4 < 2
        start, goal = rng.uniform(-1, 1, 2), np.array([0.5, 0.5] if task == 0 else [-0.5, 0.5]) + rng.normal(0, 0.1, 2)
        end = goal if success else start + rng.uniform(0.2, 0.7) * (goal - start)
        found.append(Trajectory(f"s{seed}-{i}", TASKS[task], STATE_ONLY.state_names,
                                moving_to(start, end, int(rng.integers(20, 40)), goal),
                                "success" if success else "failure", None, None))
    return found


def test_the_model_tells_successes_from_failures_it_never_saw_and_round_trips(embedder, tmp_path):
    # write_episode's two instructions share their dynamics and run on past the goal, so its successes are
    # contradicted by their own counterfactuals and late prefixes; these trajectories are not.
    rows = training_rows(separable(48, seed=0))
    scorer, fit = train_progress(rows, embedder, STATE_ONLY.state_names, ProgressConfig(epochs=40), "tiny")
    assert fit["rows"] == {"counterfactual": 24, "episode": 48, "prefix": 96}
    unseen = separable(24, seed=1)
    predictions = scorer.predict([t.states for t in unseen], [t.task for t in unseen], embedder)
    truth = np.array([t.outcome == "success" for t in unseen])
    assert rank_auc(np.array([p.success_probability for p in predictions]), truth) > 0.8  # chance: 0.5
    for p in predictions:
        assert 1 <= p.progress <= 5 and (p.progress == 5) == p.success and p.confidence >= 0.5
    again, info = load_progress(save_progress(tmp_path / "progress.safetensors", scorer, {"rows": fit["rows"]}))
    assert info == {"rows": fit["rows"]} and again.model_id == "tiny" and again.state_names == STATE_ONLY.state_names
    assert again.predict([t.states for t in unseen], [t.task for t in unseen], embedder) == predictions


def test_labels_go_only_on_unlabeled_episodes_above_the_confidence(store, embedder, trained, tmp_path):
    scorer, _ = trained
    mine = EpisodeStore(shutil.copytree(store.root, tmp_path / "store"))
    before = {eid: mine.open(eid).meta for eid in mine.episode_ids()}
    unseen = [t for t in read_trajectories(mine)[0] if t.outcome == "unlabeled"]
    assert sorted(t.episode_id for t in unseen) == [episode_id(i) for i in UNLABELED]
    predictions = scorer.predict([t.states for t in unseen], [t.task for t in unseen], embedder)
    confidence = {t.episode_id: p.confidence for t, p in zip(unseen, predictions)}

    nothing = label_unlabeled(mine, scorer, embedder, min_confidence=1.01)
    assert nothing.low_confidence == 4 and sum(nothing.labeled.values()) == 0
    assert nothing.skipped == {"non_finite": 1, "too_short": 1} and nothing.already_labeled == 6
    threshold = sorted(confidence.values())[1]
    some = label_unlabeled(mine, scorer, embedder, min_confidence=threshold)
    sure = {eid for eid, c in confidence.items() if c >= threshold}
    assert sum(some.labeled.values()) == len(sure) and some.low_confidence == 4 - len(sure)
    rest = label_unlabeled(mine, scorer, embedder, min_confidence=0.0)
    assert sum(rest.labeled.values()) == 4 - len(sure) and rest.already_labeled == 6 + len(sure)

    for eid, meta in before.items():
        now = mine.open(eid).meta
        if eid in confidence:
            assert now["labeled_by"] == "progress-model:tiny" and now["outcome"] in ("success", "failure")
            assert f"confidence {confidence[eid]:.3f}" in now["note"]
            assert (now["progress"] == 5) == (now["outcome"] == "success")
        else:
            assert now == meta                                  # the operator's, the old model's, the recorded
    assert mine.open(episode_id(OPERATOR)).meta["labeled_by"] == "alice"


def test_the_benchmark_reports_held_out_agreement(store, embedder, tmp_path):
    embedder.embed(list(TASKS))                                 # the cache the run reads: no encoder to load
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "progress_reward.py"), "--stores", str(store.root),
                           str(tmp_path / "not_a_store"), "--out", str(out), "--text-cache", str(embedder.cache_dir),
                           "--epochs", "5", "--train-fraction", "0.5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["stores"] == {str(store.root): 10, str(tmp_path / "not_a_store"): None}
    assert results["skipped"] == {"non_finite": 1, "too_short": 1}
    assert results["episodes"]["train"] + results["episodes"]["held_out"] == 5
    assert set(results["settings"]) == {"with_negatives", "labeled_only"}
    held_out = results["settings"]["with_negatives"]["held_out"]
    assert held_out["episode"]["n"] == results["episodes"]["held_out"] and 0 <= held_out["episode"]["progress_mae"] <= 4
    assert results["metaworld_left_out"]["not_metaworld"] == results["episodes"]["held_out"]   # no sim layouts here
    assert results["settings"]["with_negatives"]["metaworld"] == {"n": 0} and (out / "results.md").is_file()


def test_metaworld_progress_is_replayed_exactly_from_recorded_layouts_and_actions(tmp_path):
    """The benchmark's reference: MetaWorld's reward after a recorded episode's last step, by replay. An
    expert's success ends at the goal (10); an episode cut short ends between; one whose recorded layout is
    not the one it ran on is left out rather than scored against another scene."""
    spec = importlib.util.spec_from_file_location("progress_reward", ROOT / "benchmarks" / "progress_reward.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    store = EpisodeStore(tmp_path / "store")
    robot = MetaWorldRobot(SimConfig(env_name="push-v3", render=False, max_steps=150))
    try:
        expert = ScriptedOperator("push-v3", OperatorConfig(mode="demonstrate"))
        done = run_episode(robot, 0, operator=expert, store=store)
        robot.config.max_steps = 25
        cut = run_episode(robot, 1, operator=expert, store=store)
        writer = store.writer(sim_layout(robot), EpisodeMetadata(task=robot.instruction, robot_id="sim",
                              control_rate_hz=20.0, extra={"env_name": "push-v3", "seed": 3}))
        obs = robot.reset(2)                                    # recorded as layout 3: not the scene it ran in
        for t in range(10):
            action = np.array([0.5, 0.0, 0.0, 0.0], np.float32)
            writer.append(Step(t * 0.05, {}, obs.state, action, intervention=True))
            obs = robot.step(action)
        writer.commit("failure")
    finally:
        robot.close()
    assert done.success and not cut.success
    trajectories, _ = read_trajectories(store)
    rewards, left_out = bench.metaworld_progress(trajectories, {t.episode_id: store for t in trajectories})
    assert left_out == {"not_metaworld": 0, "replay_diverged": 1} and set(rewards) == {done.episode_id, cut.episode_id}
    assert rewards[done.episode_id] == 10.0 and 0 < rewards[cut.episode_id] < 10.0


def test_the_train_command_labels_a_store_and_refuses_one_without_both_outcomes(store, tmp_path, capsys):
    from robot_runtime.improvement_loop.cycle.cli import main

    mine, work = shutil.copytree(store.root, tmp_path / "store"), tmp_path / "work"
    OfflineEmbedder(work / "text_cache").embed(list(TASKS))     # the cache the command reads: no encoder to load
    main(["--store", str(mine), "--work", str(work), "--stage", "progress", "--min-confidence", "0.5"])
    printed = json.loads(capsys.readouterr().out)
    assert sum(printed["labels"]["labeled"].values()) == len(UNLABELED) and printed["labels"]["already_labeled"] == 6
    assert load_progress(printed["model"])[0].state_names == STATE_ONLY.state_names
    assert {EpisodeStore(mine).open(episode_id(i)).meta["labeled_by"] for i in UNLABELED} == {"progress-model:progress"}

    only_successes = EpisodeStore(tmp_path / "successes")
    for i in SUCCESSES:
        reaching(only_successes, i, "success")
    for argv, message in ((["--store", str(only_successes.root)], "needs labeled successes and failures"),
                          (["--store", str(mine), "--min-confidence", "0.3"], "min_confidence must be in"),
                          (["--store", str(tmp_path / "absent")], "absent")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--work", str(work), "--stage", "progress"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
