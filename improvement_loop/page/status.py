"""Everything the fleet page shows, as one JSON-ready dict, read from one snapshot of the catalog's database.

The catalog is WAL and written all the time (the ingest server, the daemon), so the page opens it read-only
(`mode=ro`: a bug here cannot write) and reads inside one transaction, so every number on a page comes from the
same moment. Tables that do not exist yet (no daemon has run, no release was handed out) read as empty.
Days are UTC days of `recorded_at`, when the robot ran the episode.
"""
from __future__ import annotations

import datetime
import sqlite3
from dataclasses import asdict
from pathlib import Path

from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, summarize

DAY_S = 86400.0


class PageError(ValueError):
    """The page cannot start or read; the message names the file or setting and what to do."""


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to the catalog database (never creates it: the ingest server does)."""
    path = Path(path)
    if not path.is_file():
        raise PageError(f"catalog {path}: no such file; point --catalog at the fleet's catalog.sqlite "
                        "(robot-runtime-ingest creates it in its store)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def fleet_status(conn: sqlite3.Connection, now: float, online_window_s: float = 300.0, days: int = 14,
                 recent: int = 50) -> dict:
    """The page's data: robots, episodes per day, rates per release and robot per day, the daemon's cycles and
    decisions, canary history, gate-vs-fleet correlation, the latest episodes."""
    conn.execute("BEGIN")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        first_day = int(now // DAY_S) - days + 1
        status = {"generated_at": now, "online_window_s": online_window_s,
                  "days": [_day(d) for d in range(first_day, first_day + days)],
                  "robots": _robots(conn, tables, now, online_window_s), "releases": [], "fleet_rates": {},
                  "episodes_per_day": {}, "rates_by_release": {}, "rates_by_robot": {}, "recent_episodes": [],
                  "daemon": None, "cycles": [], "current_cycle": None, "decisions": [], "deployment_history": [],
                  "correlation": None}
        if "episodes" in tables:
            status.update(_episodes(conn, first_day * DAY_S, recent))
            status["fleet_rates"] = {k: asdict(v) for k, v in records.fleet_summary(conn).items()}
        if "releases" in tables:
            status["releases"] = [dict(zip(("sequence", "name", "rollback", "created"), (s, n, bool(r), c)))
                                  for s, n, r, c in conn.execute("SELECT sequence, name, rollback, created "
                                                                 "FROM releases ORDER BY sequence")]
            status["deployment_history"] = [
                dict(zip(("at", "robot", "event", "release", "sequence", "detail"), r)) for r in conn.execute(
                    "SELECT at, robot, event, release, sequence, detail FROM history ORDER BY rowid DESC LIMIT 100")]
        if {"cycles", "decisions", "daemon_state"} <= tables:
            current = records.current_cycle(conn)
            status.update(daemon=asdict(records.daemon_state(conn)), current_cycle=current and asdict(current),
                          cycles=[asdict(c) for c in records.cycles(conn, 20)],
                          decisions=[asdict(d) for d in records.decisions(conn)])
            if "episodes" in tables:
                correlation = records.gate_vs_fleet(conn)
                status["correlation"] = {"r": correlation.r, "points": [
                    {"release": p[0], "simulated": p[1], "fleet": p[2]} for p in correlation.points]}
        return status
    finally:
        conn.execute("ROLLBACK")


def _day(day: int) -> str:
    return datetime.datetime.fromtimestamp(day * DAY_S, datetime.timezone.utc).strftime("%Y-%m-%d")


def _robots(conn: sqlite3.Connection, tables: set[str], now: float, window: float) -> list[dict]:
    """Every robot the fleet knows (it polled, has a target or uploaded): what it runs, should run, sent."""
    robots: dict[str, dict] = {}

    def entry(name: str) -> dict:
        return robots.setdefault(name, {"robot": name, "online": False, "last_seen": None, "installed": "",
                                        "target": "", "target_reason": "", "target_rollback": False,
                                        "update_pending": False, "last_install": None, "episodes": 0,
                                        "last_upload": None})

    if "robots" in tables:
        for robot, current, last_seen, release, installed, cause, reason in conn.execute(
                "SELECT robot, current, last_seen, last_release, last_installed, last_cause, last_reason "
                "FROM robots"):
            entry(robot).update(installed=current, last_seen=last_seen, online=now - last_seen <= window,
                                last_install=None if installed is None else {
                                    "release": release, "installed": bool(installed), "cause": cause,
                                    "reason": reason})
    if "targets" in tables:
        for robot, name, rollback, reason in conn.execute(
                "SELECT t.robot, r.name, r.rollback, t.reason FROM targets t JOIN releases r ON r.sequence = "
                "t.sequence"):
            entry(robot).update(target=name, target_reason=reason, target_rollback=bool(rollback))
    if "episodes" in tables:
        for robot, count, last in conn.execute("SELECT robot, COUNT(*), MAX(received_at) FROM episodes "
                                               "GROUP BY robot"):
            entry(robot).update(episodes=count, last_upload=last)
    for r in robots.values():
        r["update_pending"] = bool(r["target"]) and r["target"] != r["installed"]
    return [robots[name] for name in sorted(robots)]


def _episodes(conn: sqlite3.Connection, since: float, recent: int) -> dict:
    """Episodes per day and robot, and success/intervention rates per day by release and by robot."""
    per_day: dict[str, dict[str, int]] = {}
    by_release: dict[str, dict[str, list[EpisodeOutcome]]] = {}
    by_robot: dict[str, dict[str, list[EpisodeOutcome]]] = {}
    for at, robot, version, outcome, steps, interventions in conn.execute(
            "SELECT recorded_at, robot, policy_version, outcome, steps, intervention_steps FROM episodes "
            "WHERE recorded_at >= ? ORDER BY recorded_at", (since,)):
        day = _day(int(at // DAY_S))
        per_day.setdefault(robot, {}).setdefault(day, 0)
        per_day[robot][day] += 1
        if outcome != "unlabeled":
            done = EpisodeOutcome(outcome == "success", steps, interventions)
            by_release.setdefault(version or "(none)", {}).setdefault(day, []).append(done)
            by_robot.setdefault(robot, {}).setdefault(day, []).append(done)
    columns = ("episode_id", "robot", "task", "policy_version", "outcome", "steps", "intervention_steps",
               "recorded_at", "received_at")
    latest = [dict(zip(columns, r)) for r in conn.execute(
        f"SELECT {', '.join(columns)} FROM episodes ORDER BY received_at DESC, episode_id LIMIT ?", (recent,))]

    def rates(groups: dict[str, dict[str, list[EpisodeOutcome]]]) -> dict:
        return {key: {day: asdict(summarize(outcomes)) for day, outcomes in sorted(days.items())}
                for key, days in sorted(groups.items())}

    return {"episodes_per_day": dict(sorted(per_day.items())), "rates_by_release": rates(by_release),
            "rates_by_robot": rates(by_robot), "recent_episodes": latest}
