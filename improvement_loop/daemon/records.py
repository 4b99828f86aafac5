"""What the nightly daemon did, in the catalog's own SQLite database, for itself (resume after a crash) and
for the fleet page (read only).

Three tables beside `episodes` (catalog.py) and the deployments tables, same habits (WAL so readers never
block the daemon or the ingest server, synchronous=FULL so an advanced state survives a power cut):
- `cycles`: one row per cycle; `state` is the last state entered (STATES), `status` RUNNING until the cycle
  ends as done | skipped | failed | refused; `incumbent` and `candidate` are bundle labels
  (`model_id@version`, what episodes record as policy_version); `snapshot` the episode ids the cycle trains
  on and their high-water mark (received_at); `times` {state: {"started", "finished"}} as JSON.
- `decisions`: every gate, canary, promote and rollback decision with its numbers (JSON) and reason.
- `daemon_state`: one row: paused or not, and the lock's owner (pid, host, since); the lock itself is an
  fcntl lock (daemon/lock.py), this row only says who holds it.
Page readers: `cycles`, `decisions`, `current_cycle`, `daemon_state`, `fleet_summary`, `gate_vs_fleet`.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from robot_runtime.improvement_loop.fleet.catalog import Catalog
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, RateSummary, summarize

STATES = ("snapshot", "value", "advantages", "policy", "export", "sign", "gate", "canary", "promote", "rollback")
RUNNING, DONE, SKIPPED, FAILED, REFUSED = "running", "done", "skipped", "failed", "refused"
STATUSES = (RUNNING, DONE, SKIPPED, FAILED, REFUSED)
KINDS = ("gate", "canary", "promote", "rollback")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cycles (id INTEGER PRIMARY KEY AUTOINCREMENT, created DOUBLE PRECISION NOT NULL, "
    "state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, incumbent TEXT NOT NULL, "
    "candidate TEXT NOT NULL, snapshot TEXT NOT NULL, times TEXT NOT NULL, config_hash TEXT NOT NULL, "
    "work_dir TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, cycle_id BIGINT NOT NULL, "
    "kind TEXT NOT NULL, accepted INTEGER NOT NULL, numbers TEXT NOT NULL, reason TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daemon_state (id INTEGER PRIMARY KEY CHECK (id = 1), paused INTEGER NOT NULL, "
    "paused_at DOUBLE PRECISION, lock_pid BIGINT, lock_host TEXT, lock_started DOUBLE PRECISION, "
    "last_scheduled DOUBLE PRECISION)",
    "INSERT OR IGNORE INTO daemon_state VALUES (1, 0, NULL, NULL, NULL, NULL, NULL)",
)


@dataclass(frozen=True)
class Cycle:
    id: int
    created: float
    state: str
    status: str
    reason: str
    incumbent: str          # bundle label, "" when the fleet has none yet
    candidate: str          # bundle label, "" until exported
    snapshot: dict          # {"episodes": [ids], "high_water": received_at or None, "new": count}
    times: dict             # {state: {"started": t, "finished": t}}
    config_hash: str
    work_dir: str


@dataclass(frozen=True)
class Decision:
    id: int
    cycle_id: int
    kind: str               # gate | canary | promote | rollback
    accepted: bool
    numbers: dict
    reason: str
    at: float


@dataclass(frozen=True)
class DaemonState:
    paused: bool
    paused_at: float | None
    lock_pid: int | None
    lock_host: str | None
    lock_started: float | None
    last_scheduled: float | None  # the scheduled time (epoch seconds) of the last cycle the schedule started


@dataclass(frozen=True)
class ReleaseSummary:
    """The fleet's measured rates for one policy version (episodes.policy_version), overall and per robot."""

    release: str
    overall: RateSummary
    robots: dict[str, RateSummary] = field(default_factory=dict)
    first_at: float = 0.0   # recorded_at of its first and last episode
    last_at: float = 0.0


@dataclass(frozen=True)
class Correlation:
    """Gate-simulated vs fleet-measured success per release; r is None with fewer than 3 releases."""

    r: float | None
    points: list[tuple[str, float, float]]  # (release, simulated success, fleet success)


def connect(path: str | Path) -> sqlite3.Connection:
    """The catalog database with the daemon's tables (created if missing) and a 30 s busy wait."""
    db = Catalog(path).db
    db.execute("PRAGMA busy_timeout=30000")
    for statement in _SCHEMA:
        db.execute(statement)
    return db


_CYCLE_COLUMNS = "id, created, state, status, reason, incumbent, candidate, snapshot, times, config_hash, work_dir"


def _cycle(row) -> Cycle:
    return Cycle(*row[:7], json.loads(row[7]), json.loads(row[8]), *row[9:])


def cycles(conn: sqlite3.Connection, limit: int = 50) -> list[Cycle]:
    """The latest `limit` cycles, newest first."""
    return [_cycle(r) for r in conn.execute(f"SELECT {_CYCLE_COLUMNS} FROM cycles ORDER BY id DESC LIMIT ?",
                                            (limit,))]


def cycle(conn: sqlite3.Connection, cycle_id: int) -> Cycle | None:
    row = conn.execute(f"SELECT {_CYCLE_COLUMNS} FROM cycles WHERE id = ?", (cycle_id,)).fetchone()
    return _cycle(row) if row else None


def current_cycle(conn: sqlite3.Connection) -> Cycle | None:
    """The running cycle (at most one), or None."""
    row = conn.execute(f"SELECT {_CYCLE_COLUMNS} FROM cycles WHERE status = ? ORDER BY id DESC LIMIT 1",
                       (RUNNING,)).fetchone()
    return _cycle(row) if row else None


def decisions(conn: sqlite3.Connection, cycle_id: int | None = None) -> list[Decision]:
    """Decisions in the order they were made, of one cycle or of all."""
    query = "SELECT * FROM decisions" + (" WHERE cycle_id = ?" if cycle_id is not None else "") + " ORDER BY id"
    return [Decision(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), r[5], r[6])
            for r in conn.execute(query, () if cycle_id is None else (cycle_id,))]


def daemon_state(conn: sqlite3.Connection) -> DaemonState:
    r = conn.execute("SELECT paused, paused_at, lock_pid, lock_host, lock_started, last_scheduled "
                     "FROM daemon_state WHERE id = 1").fetchone()
    return DaemonState(bool(r[0]), *r[1:])


# --- writes (the daemon's; the page only reads) ---

def new_cycle(conn: sqlite3.Connection, config_hash: str, incumbent: str, work_root: Path) -> Cycle:
    """A running cycle in state `snapshot`; its work dir is work_root/cycle-<id> (an integer, never a name)."""
    now = time.time()
    with conn:
        if current_cycle(conn) is not None:
            raise RuntimeError("a cycle is already running: resume it instead of starting another")
        cur = conn.execute("INSERT INTO cycles (created, state, status, reason, incumbent, candidate, snapshot, "
                           "times, config_hash, work_dir) VALUES (?, 'snapshot', ?, '', ?, '', '{}', ?, ?, '')",
                           (now, RUNNING, incumbent, json.dumps({"snapshot": {"started": now}}), config_hash))
        cycle_id = cur.lastrowid
        conn.execute("UPDATE cycles SET work_dir = ? WHERE id = ?", (str(Path(work_root) / f"cycle-{cycle_id}"),
                                                                    cycle_id))
    return cycle(conn, cycle_id)


def advance(conn: sqlite3.Connection, cycle_id: int, finished: str, to: str, **columns) -> None:
    """State `finished` is done (its outputs already on disk); enter `to`; set candidate/snapshot if given."""
    now = time.time()
    with conn:
        times = json.loads(conn.execute("SELECT times FROM cycles WHERE id = ?", (cycle_id,)).fetchone()[0])
        times.setdefault(finished, {})["finished"] = now
        times.setdefault(to, {})["started"] = now
        _update(conn, cycle_id, state=to, times=json.dumps(times), **columns)


def finish(conn: sqlite3.Connection, cycle_id: int, status: str, reason: str, **columns) -> None:
    """End the cycle in its current state with `status` and why."""
    if status not in STATUSES or status == RUNNING:
        raise ValueError(f"status {status!r}: a cycle ends as one of {STATUSES[1:]}")
    now = time.time()
    with conn:
        state, times = conn.execute("SELECT state, times FROM cycles WHERE id = ?", (cycle_id,)).fetchone()
        times = json.loads(times)
        times.setdefault(state, {})["finished"] = now
        _update(conn, cycle_id, status=status, reason=reason, times=json.dumps(times), **columns)


def _update(conn, cycle_id: int, **columns) -> None:
    allowed = {"state", "status", "reason", "candidate", "snapshot", "times", "incumbent"}
    if set(columns) - allowed:
        raise ValueError(f"cycles has no writable column {sorted(set(columns) - allowed)}")
    values = [json.dumps(v) if k == "snapshot" else v for k, v in columns.items()]
    conn.execute(f"UPDATE cycles SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?", (*values, cycle_id))


def record_decision(conn: sqlite3.Connection, cycle_id: int, kind: str, accepted: bool, numbers: dict,
                    reason: str) -> Decision:
    if kind not in KINDS:
        raise ValueError(f"decision kind {kind!r}: one of {KINDS}")
    now = time.time()
    with conn:
        cur = conn.execute("INSERT INTO decisions (cycle_id, kind, accepted, numbers, reason, at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (cycle_id, kind, int(accepted), json.dumps(numbers), reason,
                                                         now))
    return Decision(cur.lastrowid, cycle_id, kind, accepted, numbers, reason, now)


def set_paused(conn: sqlite3.Connection, paused: bool) -> None:
    with conn:
        conn.execute("UPDATE daemon_state SET paused = ?, paused_at = ? WHERE id = 1",
                     (int(paused), time.time() if paused else None))


def set_lock_owner(conn: sqlite3.Connection, pid: int | None, host: str | None) -> None:
    with conn:
        conn.execute("UPDATE daemon_state SET lock_pid = ?, lock_host = ?, lock_started = ? WHERE id = 1",
                     (pid, host, time.time() if pid is not None else None))


def set_last_scheduled(conn: sqlite3.Connection, at: float) -> None:
    with conn:
        conn.execute("UPDATE daemon_state SET last_scheduled = ? WHERE id = 1", (at,))


# --- the fleet's measured rates, for the canary and the page ---

def fleet_summary(conn: sqlite3.Connection, since: float | None = None, until: float | None = None,
                  robots: list[str] | None = None, exclude: list[str] = ()) -> dict[str, ReleaseSummary]:
    """Per release (episodes.policy_version): episodes, success rate (Wilson 95%), intervention rate and
    steps to success, overall and per robot, over labeled episodes recorded in [since, until), from `robots`
    (default all) less `exclude`."""
    query = ("SELECT policy_version, robot, outcome, steps, intervention_steps, recorded_at FROM episodes "
             "WHERE outcome != 'unlabeled' AND recorded_at >= ? AND recorded_at < ? ORDER BY recorded_at")
    per: dict[str, dict[str, list[EpisodeOutcome]]] = {}
    span: dict[str, list[float]] = {}
    for version, robot, outcome, steps, interventions, at in conn.execute(
            query, (-math.inf if since is None else since, math.inf if until is None else until)):
        if (robots is not None and robot not in robots) or robot in exclude:
            continue
        per.setdefault(version, {}).setdefault(robot, []).append(EpisodeOutcome(outcome == "success", steps,
                                                                                interventions))
        span.setdefault(version, [at, at])[1] = at
    return {version: ReleaseSummary(version, summarize([o for os_ in robots.values() for o in os_]),
                                    {robot: summarize(os_) for robot, os_ in sorted(robots.items())},
                                    *span[version])
            for version, robots in sorted(per.items())}


def gate_vs_fleet(conn: sqlite3.Connection) -> Correlation:
    """Pearson r between each release's simulated success in its latest gate decision (as candidate or as
    incumbent) and its success measured on the fleet (PolaRiS-style: does the gate predict the fleet?)."""
    simulated: dict[str, float] = {}
    for d in decisions(conn):
        if d.kind != "gate":
            continue
        for role in ("candidate", "incumbent"):
            entry = d.numbers.get(role) or {}
            if entry.get("release") and entry.get("success_rate") is not None:
                simulated[entry["release"]] = float(entry["success_rate"])
    fleet = fleet_summary(conn)
    points = [(name, sim, fleet[name].overall.success_rate) for name, sim in sorted(simulated.items())
              if name in fleet]
    return Correlation(_pearson([p[1] for p in points], [p[2] for p in points]) if len(points) >= 3 else None,
                       points)


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)
