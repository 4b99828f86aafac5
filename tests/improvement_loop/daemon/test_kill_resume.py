"""A whole cycle of the real daemon (robot-runtime-daemon run-now, training children, MetaWorld gate, canary),
SIGKILLed at every state in turn and restarted each time: it resumes the same cycle, runs every state once,
loses no episode and ends with the candidate promoted.

Each kill comes right after the state's outputs are written and before the database advances (the
daemon's ROBOT_RUNTIME_DAEMON_KILL_AT), the window where a careless resume would redo the state; one more
kill arrives from outside while the value step's training child runs, and that child must die with it.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_world import catalog_store, fleet_episode, record_episodes, release_key, write_config

from robot_runtime.episode import EpisodeStore
from robot_runtime.fleet.releases import sign_bundle
from robot_runtime.improvement_loop.cycle.rounds import CycleConfig, pretrain
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.cycle import KILL_AT
from robot_runtime.improvement_loop.fleet.deployments import Deployments
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig

from tiny_cycle import SMALL

DAEMON = str(Path(sys.executable).with_name("robot-runtime-daemon"))
STATES = ("snapshot", "value", "advantages", "policy", "export", "sign", "gate", "canary", "promote")


@pytest.fixture
def world(tmp_path):
    record_episodes(tmp_path / "store", 4)
    catalog_store(tmp_path / "catalog.sqlite", tmp_path / "store")
    small = {"steps": 4, "batch_size": 8, "progress": False, "net": SMALL, "threads": 1}
    first = pretrain(tmp_path / "store", tmp_path / "train", CycleConfig(
        model_id="mw", value=TrainConfig(**small), policy=PolicyTrainConfig(**small), denoising_steps=2))
    release_key(tmp_path / "keys")
    sign_bundle(first.bundle_path, tmp_path / "keys" / "ws.release.pem", 1)
    Deployments(tmp_path / "catalog.sqlite").assign(first.bundle_path, ["r1", "r2"], "first release")
    return write_config(tmp_path / "daemon.yaml", tmp_path), tmp_path


def _daemon(config: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    env.update({"OMP_NUM_THREADS": "1", **({KILL_AT: kill_at} if kill_at else {})})
    return subprocess.Popen([DAEMON, "--config", str(config), "run-now"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _until(what, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cycle(root: Path) -> records.Cycle:
    conn = records.connect(root / "catalog.sqlite")
    try:
        return records.cycles(conn, 1)[0]
    finally:
        conn.close()


def _kill_while_training(config: Path, root: Path) -> None:
    """SIGKILL the daemon from outside while its value step's training child runs: the child dies too."""
    daemon = _daemon(config)
    child = _until(lambda: _children(daemon.pid))[0]
    time.sleep(1.0)
    daemon.send_signal(signal.SIGKILL)
    assert daemon.wait(30) == -signal.SIGKILL
    stat = Path(f"/proc/{child}/stat")
    _until(lambda: not stat.exists() or stat.read_text().split()[2] == "Z", timeout=30)
    assert _cycle(root).state == "value"


def _canary_episodes(root: Path) -> None:
    """The fleet meanwhile: the canary robot runs the candidate twice, once it is assigned to it."""
    cycle = _until(lambda: (c := _cycle(root)).state == "canary" and c)
    deployments = Deployments(root / "catalog.sqlite")
    _until(lambda: (t := deployments.target("r1")) is not None and t.sequence == 2)
    for k in range(2):
        fleet_episode(root / "catalog.sqlite", f"canary{k}", cycle.candidate, "r1", True, steps=20)


def test_killed_at_every_state_the_cycle_resumes_and_runs_each_state_once(world):
    config, root = world
    episodes = sorted(EpisodeStore(root / "store").episode_ids())
    for state in STATES:
        if state == "value":
            _kill_while_training(config, root)
        daemon = _daemon(config, kill_at=state)
        if state == "canary":
            _canary_episodes(root)
        out, err = daemon.communicate(timeout=300)
        assert daemon.returncode == -signal.SIGKILL, f"{state}: rc {daemon.returncode}\n{err[-3000:]}"
        c = _cycle(root)
        assert (c.state, c.status) == (state, "running"), f"killed at {state}: {c.state} {c.status} {c.reason}"
    final = _daemon(config)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    c = _cycle(root)
    assert (c.id, c.status, c.state) == (1, "done", "promote"), c.reason
    ran = [line.split()[0] for line in (Path(c.work_dir) / "executed.log").read_text().splitlines()]
    assert ran == list(STATES)                         # every state once, in order, across 11 processes
    assert set(c.times) == set(STATES) and all("finished" in c.times[s] for s in STATES)
    conn = sqlite3.connect(root / "catalog.sqlite")
    kinds = [r[0] for r in conn.execute("SELECT kind FROM decisions WHERE cycle_id = 1 ORDER BY id")]
    assert kinds == ["gate", "canary", "promote"]
    deployments = Deployments(root / "catalog.sqlite")
    assert {deployments.target(r).sequence for r in ("r1", "r2")} == {2}
    assert sorted(EpisodeStore(root / "store").episode_ids()) == episodes     # no episode lost or moved
    assert len(c.snapshot["episodes"]) == len(episodes) and c.candidate.startswith("mw@r1-")
    print("\n".join(f"killed at {s}: resumed ok ({c.times[s]['finished'] - c.times[s]['started']:.1f} s in the "
                    "state across its runs)" for s in STATES))
