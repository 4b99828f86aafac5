"""Which release each robot should run, and what each robot last said it runs: the fleet's deployments.

Three tables beside the episode catalog, in the same SQLite database (WAL, synchronous=FULL): `releases`
(every signed release directory handed out, by sequence), `targets` (robot -> the release it should run,
when and why) and `robots` (what each robot last reported: its current version, when it was last seen, the
last install result and its reason), plus an append-only `history`. The ingest server reads targets and
writes reports; a deployment daemon or an operator writes targets through `assign` and `rollback`. The
workstation does not verify signatures: robots do, against their own trust stores; here a release is only
parsed, so that its name and sequence are known and a rollback names what it says it names.
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.fleet.protocol import (
    NO_RELEASE,
    InstallReport,
    ProtocolError,
    ReleaseChunk,
    ReleaseFetch,
    ReleaseOffer,
    ReleasePoll,
    Reply,
    describe_release,
    file_offsets,
    segments,
)
from robot_runtime.fleet.releases import RELEASE_FILE, Release, ReleaseError, parse_release

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS releases (sequence BIGINT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL, "
    "rollback INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS targets (robot TEXT PRIMARY KEY, sequence BIGINT NOT NULL, "
    "assigned_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS robots (robot TEXT PRIMARY KEY, current TEXT NOT NULL, sequence BIGINT NOT NULL, "
    "last_seen DOUBLE PRECISION NOT NULL, last_release TEXT NOT NULL, last_installed INTEGER, "
    "last_cause TEXT NOT NULL, last_reason TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (at DOUBLE PRECISION NOT NULL, robot TEXT NOT NULL, event TEXT NOT NULL, "
    "release TEXT NOT NULL, sequence BIGINT NOT NULL, detail TEXT NOT NULL)",
)


class DeploymentError(ValueError):
    """An assignment that cannot be made; the message names the release or robot and what to do."""


@dataclass(frozen=True)
class Target:
    robot: str
    name: str
    sequence: int
    path: str
    rollback: bool
    assigned_at: float
    reason: str


@dataclass(frozen=True)
class RobotState:
    robot: str
    current: str            # the version its model store says is current ("" if none)
    sequence: int           # the highest release sequence its store accepted
    last_seen: float
    last_release: str       # the release its last install report was about
    last_installed: bool | None  # None: never reported an install
    last_cause: str         # "" when installed, else the refusal cause (releases.CAUSES, model_store.STORE_CAUSES)
    last_reason: str


@dataclass(frozen=True)
class Event:
    at: float
    robot: str
    event: str              # assign | rollback | installed | refused
    release: str
    sequence: int
    detail: str


class Deployments:
    """One connection; every write is one transaction. One thread at a time."""

    def __init__(self, db_path: str | Path):
        self.db = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False, timeout=30)
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise ValueError(f"deployments {db_path}: SQLite would not use WAL mode ({mode}); put it on a local disk")
        self.db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self.db.execute(statement)

    def assign(self, release_dir: str | Path, robots: list[str], reason: str) -> Release:
        """Make the signed bundle release in `release_dir` the target of `robots`."""
        release = read_release(release_dir)
        if release.rollback:
            raise DeploymentError(f"{release_dir}: is a rollback instruction; use rollback(), naming the version")
        self._target(release, release_dir, robots, reason, "assign")
        return release

    def rollback(self, robots: list[str], to_release_name: str, signed_instruction_dir: str | Path,
                 reason: str) -> Release:
        """Send `robots` back to `to_release_name` (installed on them) with a signed rollback instruction."""
        release = read_release(signed_instruction_dir)
        if not release.rollback or release.name != to_release_name:
            what = "a rollback to" if release.rollback else "a release of"
            raise DeploymentError(f"{signed_instruction_dir}: is {what} {release.name}, not a rollback instruction "
                                  f"to {to_release_name}: sign one with `robot-runtime-fleet release rollback`")
        released = self.db.execute("SELECT 1 FROM releases WHERE name = ? AND rollback = 0",
                                   (to_release_name,)).fetchone()
        if released is None:
            raise DeploymentError(f"{to_release_name} was never released to this fleet: no robot can have it installed")
        self._target(release, signed_instruction_dir, robots, reason, "rollback")
        return release

    def _target(self, release: Release, path, robots: list[str], reason: str, event: str) -> None:
        now = time.time()
        with self.db:
            known = self.db.execute("SELECT name, path FROM releases WHERE sequence = ?",
                                    (release.sequence,)).fetchone()
            if known and known != (release.name, str(Path(path).resolve())):
                raise DeploymentError(f"sequence {release.sequence} is already {known[0]} at {known[1]}: every "
                                      "release and rollback needs its own sequence number")
            if not known:
                self.db.execute("INSERT INTO releases VALUES (?, ?, ?, ?, ?)",
                                (release.sequence, release.name, str(Path(path).resolve()), int(release.rollback), now))
            for robot in robots:
                self.db.execute("INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?)",
                                (robot, release.sequence, now, reason))
                self.db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)",
                                (now, robot, event, release.name, release.sequence, reason))

    def target(self, robot: str) -> Target | None:
        found = self.db.execute(
            "SELECT t.robot, r.name, r.sequence, r.path, r.rollback, t.assigned_at, t.reason FROM targets t "
            "JOIN releases r ON r.sequence = t.sequence WHERE t.robot = ?", (robot,)).fetchone()
        return Target(*found[:4], bool(found[4]), *found[5:]) if found else None

    def seen(self, robot: str, current: str, sequence: int) -> None:
        """A poll: the robot is alive and says what its store holds."""
        with self.db:
            self.db.execute("INSERT INTO robots VALUES (?, ?, ?, ?, '', NULL, '', '') ON CONFLICT(robot) DO UPDATE "
                            "SET current = excluded.current, sequence = excluded.sequence, "
                            "last_seen = excluded.last_seen", (robot, current, sequence, time.time()))

    def report(self, robot: str, release: str, sequence: int, installed: bool, cause: str, reason: str,
               current: str) -> None:
        """An install report: what the robot's model store made of `release`."""
        now = time.time()
        with self.db:
            self.db.execute("INSERT INTO robots VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(robot) DO UPDATE SET "
                            "current = excluded.current, sequence = MAX(robots.sequence, excluded.sequence), "
                            "last_seen = excluded.last_seen, "
                            "last_release = excluded.last_release, last_installed = excluded.last_installed, "
                            "last_cause = excluded.last_cause, last_reason = excluded.last_reason",
                            (robot, current, sequence if installed else 0, now, release, int(installed), cause,
                             reason))
            self.db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)",
                            (now, robot, "installed" if installed else "refused", release, sequence,
                             reason if installed else f"{cause}: {reason}"))

    def robot_states(self) -> dict[str, RobotState]:
        rows = self.db.execute("SELECT * FROM robots ORDER BY robot").fetchall()
        return {r[0]: RobotState(*r[:5], None if r[5] is None else bool(r[5]), *r[6:]) for r in rows}

    def history(self, robot: str | None = None) -> list[Event]:
        query = "SELECT * FROM history" + (" WHERE robot = ?" if robot else "") + " ORDER BY rowid"
        return [Event(*r) for r in self.db.execute(query, (robot,) if robot else ())]

    def close(self) -> None:
        self.db.close()


def read_release(release_dir: str | Path) -> Release:
    """The release a signed directory holds (parsed, not verified: robots verify); DeploymentError names why not."""
    path = Path(release_dir) / RELEASE_FILE
    try:
        return parse_release(path.read_bytes(), path)[0]
    except FileNotFoundError:
        raise DeploymentError(f"{path}: missing; sign the bundle first (`robot-runtime-fleet release sign`)") from None
    except ReleaseError as err:
        raise DeploymentError(str(err)) from None


class Distributor:
    """The ingest server's release desk: answers a robot's poll with its target, serves that release's chunks
    (to that robot only) and records its install reports. `robot` is always the authenticated key's name."""

    def __init__(self, deployments: Deployments, chunk_size: int = 1 << 20):
        self.deployments, self.chunk_size = deployments, chunk_size
        self._offers: dict[int, tuple[tuple, ReleaseOffer]] = {}  # sequence -> (directory stamp, offer)

    def on_poll(self, robot: str, poll: ReleasePoll) -> ReleaseOffer | Reply:
        self.deployments.seen(robot, poll.current, poll.sequence)
        target = self.deployments.target(robot)
        if target is None:
            return NO_RELEASE
        try:
            return self._offer(target)
        except (OSError, ProtocolError) as err:
            return Reply("busy", reason=f"release {target.name} at {target.path} cannot be read here: {err}")

    def on_fetch(self, robot: str, fetch: ReleaseFetch) -> ReleaseChunk | Reply:
        target = self.deployments.target(robot)
        offer = self._offers.get(target.sequence, (None, None))[1] if target else None
        if offer is None or offer.content_sha256 != fetch.content_sha256:
            return Reply("refused", reason=f"release {fetch.content_sha256[:16]} is not assigned to {robot}: "
                         "poll again")
        if fetch.index >= offer.chunks:
            return Reply("refused", reason=f"chunk {fetch.index}: {offer.name} has {offer.chunks} chunks")
        start, length = offer.chunk_range(fetch.index)
        data, at = bytearray(length), 0
        for i, within, count in segments(offer.files, file_offsets(offer.files), start, length):
            with open(Path(target.path) / offer.files[i].path, "rb") as f:
                f.seek(within)
                at += f.readinto(memoryview(data)[at:at + count])
        if at != length:
            self._offers.pop(target.sequence, None)
            return Reply("busy", reason=f"{target.path}: changed while being served; poll again")
        return ReleaseChunk(offer.content_sha256, fetch.index, hashlib.sha256(data).hexdigest(), data)

    def on_report(self, robot: str, report: InstallReport) -> Reply:
        self.deployments.report(robot, report.name, report.sequence, report.installed, report.cause, report.reason,
                                report.current)
        return Reply("ack")

    def _offer(self, target: Target) -> ReleaseOffer:
        """The target's offer, its files hashed once while the directory stays as it was."""
        directory = Path(target.path)
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()))
        cached = self._offers.get(target.sequence)
        if cached is None or cached[0] != stamp:
            offer = ReleaseOffer.build(target.name, target.sequence, describe_release(directory), self.chunk_size)
            self._offers[target.sequence] = cached = (stamp, offer)
        return cached[1]
