"""The canary: a gated candidate runs on a few robots first, and the fleet's own episodes decide.

`judge` looks at the catalog once (the daemon's canary state calls it on every poll, so the wait survives
restarts): the candidate's labeled episodes from the canary robots recorded since it was assigned, against
the incumbent's from the other robots over the same period (over all of the incumbent's episodes when the
other robots recorded none since). A canary robot that refused the candidate's install or, having
installed it, reports another version as current (a runtime rollback on the robot) ends the canary at
once. Otherwise, once `canary.episodes` candidate episodes are in, `canary.rule` decides:
- not_worse: candidate success >= incumbent's - margin and intervention rate <= incumbent's + margin;
- wilson: rolled back only when the candidate's 95% Wilson success interval lies wholly below the
  incumbent's (and intervention rate as in not_worse).
Past `canary.timeout_hours` without enough episodes, the candidate is rolled back (too little evidence
is not evidence of "not worse"). With no incumbent (first release) the candidate's success must reach the
gate's first_release_min_success. "Since it was assigned" compares the workstation's assignment time with
the robots' recorded_at: keep their clocks synchronized (NTP), as the catalog's times already assume.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict

from robot_runtime.improvement_loop.daemon.config import Canary
from robot_runtime.improvement_loop.daemon.gate import Verdict
from robot_runtime.improvement_loop.daemon.records import fleet_summary
from robot_runtime.improvement_loop.fleet.deployments import Deployments
from robot_runtime.improvement_loop.metrics import RateSummary


def robot_trouble(deployments: Deployments, robots: list[str], release_name: str) -> str | None:
    """Why a canary robot cannot run `release_name` (a refused install or a runtime rollback), or None."""
    states = deployments.robot_states()
    for robot in robots:
        s = states.get(robot)
        if s is None or s.last_release != release_name:
            continue
        if s.last_installed is False:
            return f"{robot} refused the install: {s.last_cause}: {s.last_reason}"
        if s.last_installed and s.current and s.current != release_name:
            return f"{robot} installed {release_name} but now runs {s.current} (a rollback on the robot)"
    return None


def _rates(s: RateSummary | None) -> dict | None:
    return None if s is None else {**asdict(s), "ci95": list(s.ci95)}


def judge(conn: sqlite3.Connection, deployments: Deployments, cfg: Canary, canary_robots: list[str],
          candidate: str, candidate_release: str, incumbent: str, since: float, min_first_success: float,
          now: float | None = None) -> Verdict | None:
    """Promote (accepted) or roll back, or None to keep waiting. `candidate`/`incumbent` are bundle labels
    (episodes' policy_version), `candidate_release` the release name robots report."""
    now = time.time() if now is None else now
    mine = fleet_summary(conn, since=since, robots=canary_robots).get(candidate)
    ours = mine.overall if mine else None
    numbers = {"rule": cfg.rule, "since": since, "episodes_needed": cfg.episodes, "canary_robots": canary_robots,
               "candidate": {"release": candidate, **(_rates(ours) or {"episodes": 0})}}
    trouble = robot_trouble(deployments, canary_robots, candidate_release)
    if trouble:
        return Verdict(False, f"rolled back at once: {trouble}", numbers)
    if ours is None or ours.episodes < cfg.episodes:
        if now - since > cfg.timeout_hours * 3600:
            have = 0 if ours is None else ours.episodes
            return Verdict(False, f"timed out after {cfg.timeout_hours:g} h with {have} of {cfg.episodes} canary "
                                  "episodes", numbers)
        return None
    if not incumbent:
        ok = ours.success_rate >= min_first_success
        return Verdict(ok, f"first release: canary success {ours.success_rate:.0%} "
                           f"{'reaches' if ok else 'is below'} {min_first_success:.0%}", numbers)
    same = fleet_summary(conn, since=since, exclude=canary_robots).get(incumbent)
    theirs, basis = (same.overall if same else None), "same period, other robots"
    if theirs is None:
        whole = fleet_summary(conn).get(incumbent)
        theirs, basis = (whole.overall if whole else None), "all its episodes (none in the period)"
    numbers["incumbent"] = {"release": incumbent, "basis": basis, **(_rates(theirs) or {"episodes": 0})}
    if theirs is None:
        return Verdict(True, f"no episodes of the incumbent {incumbent} to compare with: promoted on "
                             f"{ours.episodes} canary episodes", numbers)
    return _compare(ours, theirs, cfg, numbers)


def _compare(ours: RateSummary, theirs: RateSummary, cfg: Canary, numbers: dict) -> Verdict:
    if cfg.rule == "wilson":
        worse_success = ours.ci95[1] < theirs.ci95[0]
    else:
        worse_success = ours.success_rate < theirs.success_rate - cfg.margin
    worse_interventions = ours.intervention_rate > theirs.intervention_rate + cfg.margin
    figures = (f"success {ours.success_rate:.0%} vs {theirs.success_rate:.0%}, intervention rate "
               f"{ours.intervention_rate:.1%} vs {theirs.intervention_rate:.1%} over {ours.episodes} vs "
               f"{theirs.episodes} episodes")
    if worse_success or worse_interventions:
        what = " and ".join(w for w, bad in (("success", worse_success), ("intervention rate", worse_interventions))
                            if bad)
        return Verdict(False, f"regressed on {what}: {figures}", numbers)
    return Verdict(True, f"not worse: {figures}", numbers)
