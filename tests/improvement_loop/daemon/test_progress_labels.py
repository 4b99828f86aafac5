"""The daemon with `training.progress_labels`: its snapshot takes the fleet's unlabeled episodes too, and the
progress reward model labels them there (never in the fleet's store) before the value trains on them."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from daemon_world import catalog_store, record_episodes, write_config

from robot_runtime.episode import LABELS, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.improvement_loop.cycle.rounds import CycleConfig, pretrain
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.cycle import KILL_AT
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig

from tiny_cycle import SMALL

DAEMON = str(Path(sys.executable).with_name("robot-runtime-daemon"))


def unlabeled_copy(store: EpisodeStore, episode_id: str, new_id: str) -> None:
    """The recorded episode's steps again, committed with no outcome, as a robot uploads an unjudged one."""
    episode = store.open(episode_id)
    writer = store.writer(episode.layout, EpisodeMetadata(task=episode.task, robot_id="r1", episode_id=new_id,
                                                          control_rate_hz=episode.meta["control_rate_hz"]))
    for t, (state, action) in enumerate(zip(episode.array("state"), episode.array("action"))):
        writer.append(Step(t * 0.05, {}, state, action))
    writer.commit("unlabeled")


def test_the_model_labels_the_snapshots_unlabeled_episodes_and_leaves_the_fleets_store_alone(tmp_path):
    judged = record_episodes(tmp_path / "store", 4)
    store = EpisodeStore(tmp_path / "store")
    store.label(judged[0], "success", operator="alice")       # the model learns from both outcomes, whatever
    store.label(judged[3], "failure", operator="alice")       # the short demonstrations reached
    unjudged = [f"unjudged{k}" for k in range(2)]
    for k, new_id in enumerate(unjudged):
        unlabeled_copy(store, judged[1 + k], new_id)
    catalog_store(tmp_path / "catalog.sqlite", tmp_path / "store")
    small = {"steps": 4, "batch_size": 8, "progress": False, "net": SMALL, "threads": 1}
    pretrain(tmp_path / "store", tmp_path / "train", CycleConfig(
        model_id="mw", value=TrainConfig(**small), policy=PolicyTrainConfig(**small), denoising_steps=2))
    config = write_config(tmp_path / "daemon.yaml", tmp_path,
                          training={"progress_labels": True, "progress_min_confidence": 0.5})
    env = {**{k: v for k, v in os.environ.items() if k != KILL_AT}, KILL_AT: "value", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([DAEMON, "--config", str(config), "run-now"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]  # stopped once the value state is written

    conn = records.connect(tmp_path / "catalog.sqlite")
    c = records.cycles(conn, 1)[0]
    conn.close()
    assert c.state == "value" and sorted(c.snapshot["episodes"]) == sorted(judged + unjudged)
    value = json.loads((Path(c.work_dir) / "states" / "value.json").read_text())
    assert value["next"] == "advantages", value
    assert sum(value["progress_labels"]["labeled"].values()) == len(unjudged)
    snapshot = EpisodeStore(Path(c.work_dir) / "snapshot", create=False)
    for episode_id in unjudged:
        meta = snapshot.open(episode_id).meta
        assert meta["labeled_by"].startswith("progress-model:") and meta["outcome"] in ("success", "failure")
        assert not (store.episodes_dir / episode_id / LABELS).exists()        # the fleet's copy stays unjudged
        assert store.open(episode_id).outcome == "unlabeled"
    assert {store.open(e).meta["labeled_by"] for e in (judged[0], judged[3])} == {"alice"}
