"""The fleet's episode catalog: one SQLite row per stored episode, so "what do we have" needs no Zarr reads.

WAL mode, so readers (training, a fleet page) never block the ingest server, and synchronous=FULL, so a
row the server acknowledged survives a power cut. The episode store is the truth: `repair`, run at
start-up, makes the catalog agree with it after a crash at any point (an episode stored but not cataloged
is cataloged; a row whose episode is gone is removed and reported; a label written but not cataloged is
copied in). The SQL is plain DB-API with portable types, so a server database for many writers is a new
`connect` for its URL scheme, not a new catalog.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

from robot_runtime.capture.disk_guard import tree_bytes
from robot_runtime.episode import COMMIT_MARKER, LABELS, Episode, EpisodeError, EpisodeStore
from robot_runtime.fleet.protocol import content_sha256, describe_episode


@dataclass(frozen=True)
class CatalogRow:
    episode_id: str
    robot: str             # the uploader's authenticated key name, not what the episode says
    task: str
    policy_version: str
    outcome: str           # the label's when labeled, else the recorded one
    labels: str | None     # labels.json as stored, or None
    steps: int
    intervention_steps: int
    bytes: int
    recorded_at: float     # the episode's start time (robot clock)
    received_at: float     # when the server stored it
    content_sha256: str    # protocol.content_sha256 of its file table


COLUMNS = tuple(f.name for f in fields(CatalogRow))
_TYPES = {"str": "TEXT NOT NULL", "str | None": "TEXT", "int": "BIGINT NOT NULL", "float": "DOUBLE PRECISION NOT NULL"}
_SCHEMA = "CREATE TABLE IF NOT EXISTS episodes ({})".format(", ".join(
    f"{f.name} {_TYPES[f.type]}" + (" PRIMARY KEY" if f.name == "episode_id" else "") for f in fields(CatalogRow)))


def row_for(episode: Episode, robot: str, content: str, received_at: float) -> CatalogRow:
    """The catalog row of a validated episode (reads its intervention flags and labels)."""
    labels = episode.path / LABELS
    return CatalogRow(episode.episode_id, robot, episode.task, episode.meta["policy_version"], episode.outcome,
                      labels.read_text() if labels.is_file() else None, episode.steps,
                      int(episode.array("intervention").sum()), tree_bytes(episode.path),
                      float(episode.meta["start_time"]), received_at, content)


class Catalog:
    """Rows by episode id; every write is one transaction. One thread at a time (not always the opener's)."""

    def __init__(self, path: str | Path):
        if "://" in str(path):
            raise ValueError(f"catalog {path}: only SQLite (a file path) is built in; a server database needs "
                             "its DB-API driver and a connect for its URL scheme here")
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise ValueError(f"catalog {path}: SQLite would not use WAL mode ({mode}); put it on a local disk")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(_SCHEMA)

    def add(self, row: CatalogRow) -> None:
        with self.db:
            self.db.execute(f"INSERT INTO episodes ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            astuple(row))

    def get(self, episode_id: str) -> CatalogRow | None:
        found = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM episodes WHERE episode_id = ?",
                                (episode_id,)).fetchone()
        return CatalogRow(*found) if found else None

    def rows(self) -> list[CatalogRow]:
        return [CatalogRow(*r) for r in self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM episodes "
                                                        "ORDER BY episode_id")]

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT episode_id FROM episodes")}

    def remove(self, episode_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM episodes WHERE episode_id = ?", (episode_id,))

    def set_labels(self, episode_id: str, labels: str) -> None:
        with self.db:
            self.db.execute("UPDATE episodes SET labels = ?, outcome = ? WHERE episode_id = ?",
                            (labels, json.loads(labels)["outcome"], episode_id))

    def close(self) -> None:
        self.db.close()


@dataclass
class Repair:
    cataloged: list[str] = field(default_factory=list)    # stored, row was missing: added
    removed: list[str] = field(default_factory=list)      # row without an episode: removed
    relabeled: list[str] = field(default_factory=list)    # labels.json newer than the row: copied in
    quarantined: dict[str, str] = field(default_factory=dict)  # stored but unreadable: moved aside, why

    def __bool__(self) -> bool:
        return bool(self.cataloged or self.removed or self.relabeled or self.quarantined)


def repair(catalog: Catalog, store: EpisodeStore, received: dict[str, tuple[str, float]]) -> Repair:
    """Make `catalog` agree with `store`. `received`: episode id -> (robot, time) the ingest server noted
    before moving an episode into the store; an episode without a note is credited to its recorded robot."""
    done = Repair()
    stored, cataloged = set(store.episode_ids()), catalog.ids()
    for episode_id in sorted(cataloged - stored):
        catalog.remove(episode_id)
        done.removed.append(episode_id)
    for episode_id in sorted(stored - cataloged):
        try:
            episode = store.open(episode_id)
            robot, at = received.get(episode_id) or (
                episode.meta["robot_id"], (episode.path / COMMIT_MARKER).stat().st_mtime)
            catalog.add(row_for(episode, robot, content_sha256(describe_episode(episode.path)), at))
            done.cataloged.append(episode_id)
        except EpisodeError as err:
            store.quarantine(episode_id)
            done.quarantined[episode_id] = str(err)
    for row in catalog.rows():
        labels = store.episodes_dir / row.episode_id / LABELS
        text = labels.read_text() if labels.is_file() else None
        if text is not None and text != row.labels:
            catalog.set_labels(row.episode_id, text)
            done.relabeled.append(row.episode_id)
    return done
