"""The gate and canary states on a real catalog and deployments: a candidate worse in simulation is refused
with its numbers and reaches no robot; a regressing canary is rolled back after the configured N episodes
and the canary robots return to the incumbent; a refused install rolls back at once; a candidate as good as
the incumbent is promoted to the whole fleet; too few episodes time out; `status` shows it all."""
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_world import fleet_episode, reach_bundle, release_key, write_config

from robot_runtime.bundle import load_bundle
from robot_runtime.files import write_json_atomic
from robot_runtime.fleet.releases import sign_bundle, sign_rollback
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.cli import main
from robot_runtime.improvement_loop.daemon.config import ConfigError, load_config
from robot_runtime.improvement_loop.daemon.cycle import KILL_AT, CycleRunner
from robot_runtime.improvement_loop.fleet.deployments import Deployments

N = 3


@pytest.fixture
def fleet(tmp_path, request):
    """Incumbent ref@old on r1 and r2 (release 1); a cycle waiting in its canary state (or the state the test
    names as its parameter) with ref@new signed as release 2, as the states before it leave it."""
    at = getattr(request, "param", "canary")
    baseline = at == "baseline"  # no release from the daemon yet: the fleet was provisioned with release 1
    at = "canary" if baseline else at
    key = release_key(tmp_path / "keys")
    old, new = reach_bundle(tmp_path / "old", 10.0, "old"), reach_bundle(tmp_path / "new", 0.0, "new")
    incumbent, candidate = sign_bundle(old, key, 1), sign_bundle(new, key, 2)
    cfg = load_config(write_config(tmp_path / "daemon.yaml", tmp_path, canary={"episodes": N, "poll_seconds": 0},
                                   gate={"rule": "one_sided_test", "max_steps": 60, "episodes": 3},
                                   fleet={"baseline_release": str(old)} if baseline else {}))
    deployments = Deployments(cfg.catalog)
    if baseline:
        runner = CycleRunner(cfg, records.connect(cfg.catalog))
        runner.assign_baseline()
        assert runner.incumbent() == ("ref@old", str(old), incumbent.name)
    else:
        deployments.assign(old, ["r1", "r2"], "first release")
    conn = records.connect(cfg.catalog)
    c = records.new_cycle(conn, cfg.digest(), "ref@old", cfg.work)
    states = {"snapshot": {"incumbent": ["ref@old", str(old), incumbent.name]}, "export": {"bundle": str(new)},
              "sign": {"release": candidate.name, "sequence": 2}}
    (Path(c.work_dir) / "states").mkdir(parents=True)
    (Path(c.work_dir) / "snapshot" / "episodes").mkdir(parents=True)
    for state, output in states.items():
        write_json_atomic(Path(c.work_dir) / "states" / f"{state}.json", output)
    for before, after in itertools.pairwise(records.STATES[:records.STATES.index(at) + 1]):
        columns = {"sign": {"candidate": "ref@new"}, "value": {"snapshot": {"episodes": [], "high_water": None}}}
        records.advance(conn, c.id, before, after, **columns.get(after, {}))
    return cfg, conn, deployments, incumbent, candidate


def _feeder(cfg, candidate_ok: bool, log: list):
    """The fleet between two polls: one candidate episode on the canary robot, one incumbent episode on r2."""
    def sleep(_seconds):
        k = len(log)
        fleet_episode(cfg.catalog, f"canary{k:03d}", "ref@new", "r1", candidate_ok, interventions=0 if candidate_ok
                      else 20)
        fleet_episode(cfg.catalog, f"other{k:03d}", "ref@old", "r2", True)
        log.append(k)
    return sleep


def test_a_regressing_canary_is_rolled_back_within_n_episodes(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet
    polls = []
    c = CycleRunner(cfg, conn, sleep=_feeder(cfg, False, polls)).run()
    assert (c.status, c.state) == ("refused", "rollback") and len(polls) == N
    canary, rollback = records.decisions(conn, c.id)
    assert canary.kind == "canary" and not canary.accepted and canary.reason.startswith("regressed on success and "
                                                                                         "intervention rate")
    assert canary.numbers["candidate"]["episodes"] == N and canary.numbers["candidate"]["success_rate"] == 0.0
    assert canary.numbers["incumbent"]["success_rate"] == 1.0
    assert canary.numbers["incumbent"]["basis"] == "same period, other robots"
    assert rollback.kind == "rollback" and rollback.accepted and "ref@old" in rollback.reason
    back = deployments.target("r1")
    assert back.rollback and back.name == incumbent.name and back.sequence == 3
    assert deployments.target("r2").name == incumbent.name and not deployments.target("r2").rollback
    assert [e.event for e in deployments.history("r1")] == ["assign", "assign", "rollback"]


@pytest.mark.parametrize("fleet", ["baseline"], indirect=True)
def test_a_first_release_rolls_back_to_the_baseline_the_fleet_was_provisioned_with(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet
    assert "provisioned with" in deployments.target("r2").reason
    c = CycleRunner(cfg, conn, sleep=_feeder(cfg, False, [])).run()
    assert (c.status, c.state) == ("refused", "rollback")
    back = deployments.target("r1")
    assert back.rollback and back.name == incumbent.name and deployments.target("r2").name == incumbent.name


def test_a_bad_baseline_release_is_refused_by_name(tmp_path):
    key = release_key(tmp_path / "keys")
    signed = reach_bundle(tmp_path / "signed", 1.0, "s")
    sign_bundle(signed, key, 1)
    sign_rollback(signed, tmp_path / "rollback", key, 2)
    for directory, message in ((tmp_path / "nowhere", "missing; sign the bundle first"),
                               (reach_bundle(tmp_path / "unsigned", 1.0, "u"), "missing; sign the bundle first"),
                               (tmp_path / "rollback", "is a rollback instruction, not a signed bundle")):
        with pytest.raises(ConfigError, match=f"fleet.baseline_release: .*{message}"):
            load_config(write_config(tmp_path / "daemon.yaml", tmp_path, fleet={"baseline_release": str(directory)}))


def test_a_refused_install_rolls_back_at_once(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet

    def refuse(_seconds):
        deployments.report("r1", candidate.name, 2, False, "bad-signature", "signature does not verify",
                           incumbent.name)

    c = CycleRunner(cfg, conn, sleep=refuse).run()
    (canary, _) = records.decisions(conn, c.id)
    assert c.state == "rollback" and "r1 refused the install: bad-signature" in canary.reason
    assert canary.numbers["candidate"]["episodes"] == 0 and deployments.target("r1").rollback


def test_a_canary_as_good_as_the_incumbent_is_promoted(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet
    c = CycleRunner(cfg, conn, sleep=_feeder(cfg, True, [])).run()
    assert (c.status, c.state) == ("done", "promote")
    assert [d.kind for d in records.decisions(conn, c.id)] == ["canary", "promote"]
    assert {deployments.target(r).name for r in ("r1", "r2")} == {candidate.name}
    assert load_bundle(deployments.target("r2").path).label == "ref@new"


def test_too_few_canary_episodes_time_out(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet
    clock = [time.time()]

    def wait(_seconds):
        clock[0] += 2 * 3600

    c = CycleRunner(cfg, conn, sleep=wait, clock=lambda: clock[0]).run()
    (canary, _) = records.decisions(conn, c.id)
    assert c.state == "rollback" and canary.reason == "timed out after 1 h with 0 of 3 canary episodes"


@pytest.mark.parametrize("fleet", ["gate"], indirect=True)
def test_a_candidate_worse_in_simulation_is_refused_at_the_gate(fleet):
    cfg, conn, deployments, incumbent, candidate = fleet
    c = CycleRunner(cfg, conn).run()
    assert (c.status, c.state) == ("refused", "gate")
    (gate,) = records.decisions(conn, c.id)
    assert gate.kind == "gate" and not gate.accepted and c.reason == f"gate: {gate.reason}"
    assert gate.numbers["candidate"]["success_rate"] == 0.0 and gate.numbers["incumbent"]["success_rate"] == 1.0
    assert gate.numbers["incumbent"]["release"] == "ref@old" and gate.numbers["candidate"]["release"] == "ref@new"
    assert {deployments.target(r).name for r in ("r1", "r2")} == {incumbent.name}   # no robot saw it


def test_status_shows_the_cycle_and_its_decisions(fleet, capsys):
    cfg, conn, *_ = fleet
    CycleRunner(cfg, conn, sleep=_feeder(cfg, False, [])).run()
    main(["--config", cfg.source, "status", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["running"] is None and shown["lock"]["pid"] is None and not shown["paused"]
    (c,) = shown["cycles"]
    assert (c["status"], c["state"]) == ("refused", "rollback")
    assert [d["kind"] for d in c["decisions"]] == ["canary", "rollback"]
    assert shown["schedule"]["next"].endswith(("+01:00", "+02:00"))           # Europe/Berlin
    main(["--config", cfg.source, "status"])
    human = capsys.readouterr().out
    assert "cycle 1" in human and "refused in rollback" in human and "canary: refused: regressed" in human
    for verb in ("pause", "resume"):
        main(["--config", cfg.source, verb])
        assert records.daemon_state(conn).paused == (verb == "pause")


def test_killed_after_the_rollback_it_resumes_without_signing_or_rolling_back_twice(fleet):
    """The rollback state (the one the whole-cycle kill test does not reach): the daemon is SIGKILLed once the
    rollback is signed and handed out, before the cycle advances; the restart finishes it from its outputs."""
    cfg, conn, deployments, incumbent, candidate = fleet
    deployments.report("r1", candidate.name, 2, False, "incompatible", "does not fit this robot", incumbent.name)
    command = [str(Path(sys.executable).with_name("robot-runtime-daemon")), "--config", cfg.source, "run-now"]
    killed = subprocess.run(command, env={**os.environ, KILL_AT: "rollback"}, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    c = records.cycle(conn, 1)
    assert (c.state, c.status) == ("rollback", "running") and deployments.target("r1").rollback
    done = subprocess.run(command, env={k: v for k, v in os.environ.items() if k != KILL_AT}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "cycle 1: refused in state rollback" in done.stdout
    ran = [line.split()[0] for line in (Path(c.work_dir) / "executed.log").read_text().splitlines()]
    assert ran == ["canary", "rollback"]
    assert [d.kind for d in records.decisions(conn, 1)] == ["canary", "rollback"]
    assert [(e.event, e.sequence) for e in deployments.history("r1")] == [("assign", 1), ("refused", 2),
                                                                          ("assign", 2), ("rollback", 3)]
