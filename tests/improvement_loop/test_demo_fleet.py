"""`make demo`, tiny: the whole fleet demo as a user runs it (robot-runtime-demo in its own process: two
simulated robot graphs over DDS with their fleet agents, robot-runtime-ingest, robot-runtime-train,
robot-runtime-daemon run-now), with few steps and episodes. What a user relies on: every episode the robots
recorded for the fleet is in the workstation's catalog, the first release was installed by both robots, the
daemon's cycle recorded its decisions, and the summary shows each stage.
"""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.fleet.deployments import Deployments

DOMAIN_ID = 218  # this test's own DDS domain (the demo's range is 200-219; `make demo` uses 200)
TINY = ["--demos", "1", "--rollouts", "2", "--eval-episodes", "2", "--max-steps", "40", "--pretrain-value-steps", "5",
        "--pretrain-policy-steps", "5", "--round-value-steps", "5", "--round-policy-steps", "5", "--gate-episodes", "2",
        "--canary-episodes", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run([sys.executable, "-m", "robot_runtime.improvement_loop.demo", "--out", str(out),
                           "--domain-id", str(DOMAIN_ID), *TINY], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return out, json.loads((out / "summary.json").read_text()), done.stdout


def test_every_fleet_episode_is_cataloged(demo):
    out, summary, _ = demo
    db = sqlite3.connect(out / "workstation" / "fleet" / "catalog.sqlite")
    cataloged = dict(db.execute("SELECT episode_id, robot FROM episodes"))
    for robot in summary["robots"]:
        store = EpisodeStore(out / "robots" / robot / "episodes", create=False)
        fleet = [e for e in store.episode_ids() if store.open(e).meta["extra"]["campaign"] != "evaluation"]
        assert len(fleet) >= 1 + 2, robot                 # demonstrations, rollouts (and canary episodes)
        assert {e: cataloged.get(e) for e in fleet} == dict.fromkeys(fleet, robot)


def test_first_release_installed_on_both_robots(demo):
    out, summary, _ = demo
    deployments = Deployments(out / "workstation" / "fleet" / "catalog.sqlite")
    first = next(e.release for e in deployments.history() if e.event == "assign" and e.sequence == 1)
    for robot in summary["robots"]:
        assert any(e.event == "installed" and e.release == first for e in deployments.history(robot)), robot
        assert (out / "robots" / robot / "models" / "versions" / first / "manifest.json").is_file()
    assert [s for s in summary["rows"] if s["stage"].startswith("rollouts")]


def test_cycle_decided_and_reported(demo):
    out, summary, stdout = demo
    conn = records.connect(out / "workstation" / "fleet" / "catalog.sqlite")
    (cycle,) = records.cycles(conn)
    kinds = [d.kind for d in records.decisions(conn, cycle.id)]
    allowed = {records.DONE: [["gate", "canary", "promote"]],
               records.REFUSED: [["gate"], ["gate", "canary", "rollback"]]}   # refused by the gate or the canary
    assert kinds in allowed.get(cycle.status, []), (cycle.status, cycle.reason, kinds)
    assert [d["kind"] for d in summary["decisions"]] == kinds
    assert "gate: " in stdout and "## Stages" in stdout
    assert {"setup", "pretrain", "cycle", "evaluation", "total"} <= set(summary["seconds"])
    assert any(r["stage"].startswith("evaluation") for r in summary["rows"])
