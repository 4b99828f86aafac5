"""Contract 1, the episode: how one robot episode is stored in Zarr, for both halves.

A store is a directory. Each episode is a Zarr v3 group `episodes/<episode_id>/`
whose per-step arrays (`timestamp`, `state`, `action` as executed,
`policy_action` as proposed, `intervention` (the operator commanded), `held` (no
command came in time, the robot held), `images/<camera>`) all have one row per
control step, and whose
attributes hold the metadata (task, robot, policy version, outcome, ...).
It is written under `staging/`, then `commit.json` (schema version, step count) is
flushed last and the group is moved into `episodes/` by an atomic rename; readers
only look in `episodes/` and only trust groups with a valid `commit.json`, so a
crash can lose at most the episode in progress, never a committed one.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_runtime.files import UnsafeNameError, check_name, fsync_path, fsync_tree, write_json_atomic

SCHEMA_VERSION = 1
COMMIT_MARKER = "commit.json"
PROGRESS = "progress.json"  # rows safely in chunk files so far; lets a crashed episode be salvaged
LABELS = "labels.json"  # an operator's label, written after commit; overrides the recorded outcome
OUTCOMES = ("success", "failure", "unlabeled")
CHUNK_STEPS = 50


class EpisodeError(Exception):
    """An episode or store that does not satisfy the contract; the message names the file."""


@dataclass(frozen=True)
class EpisodeLayout:
    """Shapes of one step: which cameras (name -> (height, width)), state and action names."""

    cameras: dict[str, tuple[int, int]]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]

    def arrays(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-step array name -> (shape of one row, dtype)."""
        spec = {
            "timestamp": ((), np.dtype("float64")),
            "state": ((len(self.state_names),), np.dtype("float32")),
            "action": ((len(self.action_names),), np.dtype("float32")),
            "policy_action": ((len(self.action_names),), np.dtype("float32")),
            "intervention": ((), np.dtype("bool")),
            "held": ((), np.dtype("bool")),
        }
        for name, (height, width) in self.cameras.items():
            spec[f"images/{name}"] = ((height, width, 3), np.dtype("uint8"))
        return spec

    def to_json(self) -> dict:
        return {
            "cameras": {name: list(hw) for name, hw in self.cameras.items()},
            "state_names": list(self.state_names),
            "action_names": list(self.action_names),
        }

    @classmethod
    def from_json(cls, data: dict) -> "EpisodeLayout":
        return cls(
            cameras={name: (int(hw[0]), int(hw[1])) for name, hw in data["cameras"].items()},
            state_names=tuple(data["state_names"]),
            action_names=tuple(data["action_names"]),
        )


@dataclass
class Step:
    """One control step as the recorder saw it. `policy_action` is None when no policy ran;
    `intervention` marks operator commands, `held` steps where the robot got no command in time."""

    timestamp: float
    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    policy_action: np.ndarray | None = None
    intervention: bool = False
    held: bool = False


@dataclass
class EpisodeMetadata:
    """Who, what and how of an episode; stored as the group's attributes."""

    task: str
    robot_id: str
    control_rate_hz: float
    policy_version: str = ""
    operator: str = ""
    outcome: str = "unlabeled"
    episode_id: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    end_reason: str = ""
    truncated: bool = False
    extra: dict = field(default_factory=dict)


def checked_episode_id(episode_id: object) -> str:
    """`episode_id` if it may name an episode's directory; EpisodeError otherwise (it came from outside)."""
    try:
        return check_name(episode_id, "episode id")
    except UnsafeNameError as err:
        raise EpisodeError(str(err)) from None


def new_episode_id(robot_id: str) -> str:
    """Sortable by start time, unique across a fleet: <robot>-<UTC time>-<random>."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{robot_id}-{stamp}-{secrets.token_hex(3)}"


class EpisodeWriter:
    """Writes one episode into the store's staging area in whole chunks.

    Not thread-safe: one writer thread owns it (see `recording.AsyncRecorder`).
    Rows are buffered and written `chunk_steps` at a time because per-step Zarr
    appends are ~40x slower than whole-chunk writes.
    """

    def __init__(self, store: "EpisodeStore", layout: EpisodeLayout, metadata: EpisodeMetadata,
                 chunk_steps: int = CHUNK_STEPS):
        import zarr
        from zarr.codecs import BloscCodec

        self.layout = layout
        self.metadata = metadata
        if not metadata.episode_id:
            metadata.episode_id = new_episode_id(metadata.robot_id)
        if not metadata.start_time:
            metadata.start_time = time.time()
        self.path = store.staging_dir / checked_episode_id(metadata.episode_id)
        self._store = store
        self._chunk = chunk_steps
        self._spec = layout.arrays()
        self._buffers = {name: np.zeros((chunk_steps, *shape), dtype) for name, (shape, dtype) in self._spec.items()}
        self._fill = 0
        self.steps = 0
        self.segments: list[list[int]] = []  # [start, end) step ranges the operator commanded
        self._last_timestamp = -np.inf
        self._group = zarr.open_group(str(self.path), mode="w-")
        self._arrays = {}
        for name, (shape, dtype) in self._spec.items():
            # Images compress ~4.5x with zstd and no shuffle; small arrays use the default.
            codec = BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle") if name.startswith("images/") else "auto"
            # Every chunk gets a file, even an all-default one, so salvage can tell a missing
            # chunk (lost in a crash) from an empty one.
            self._arrays[name] = self._group.create_array(
                name, shape=(0, *shape), chunks=(chunk_steps, *shape), dtype=dtype, compressors=codec,
                config={"write_empty_chunks": True})
        self._group.attrs.update(self._attributes())

    def _attributes(self) -> dict:
        meta = self.metadata
        return {
            "schema_version": SCHEMA_VERSION,
            "episode_id": meta.episode_id,
            "task": meta.task,
            "robot_id": meta.robot_id,
            "control_rate_hz": meta.control_rate_hz,
            "policy_version": meta.policy_version,
            "operator": meta.operator,
            "outcome": meta.outcome,
            "start_time": meta.start_time,
            "end_time": meta.end_time,
            "end_reason": meta.end_reason,
            "truncated": meta.truncated,
            "intervention_segments": self.segments,
            "layout": self.layout.to_json(),
            "extra": meta.extra,
        }

    def append(self, step: Step) -> None:
        """Validate and buffer one step; raises EpisodeError on a shape, dtype or time error."""
        if not step.timestamp > self._last_timestamp:
            raise EpisodeError(
                f"{self.path}: step timestamp {step.timestamp} does not increase (last {self._last_timestamp})")
        row = {
            "timestamp": step.timestamp,
            "state": step.state,
            "action": step.action,
            "policy_action": (np.full(len(self.layout.action_names), np.nan, np.float32)
                              if step.policy_action is None else step.policy_action),
            "intervention": step.intervention,
            "held": step.held,
        }
        missing = set(self.layout.cameras) - set(step.images)
        if missing:
            raise EpisodeError(f"{self.path}: step has no image from camera(s) {sorted(missing)}")
        for name in self.layout.cameras:
            row[f"images/{name}"] = step.images[name]
        for name, value in row.items():
            shape, _ = self._spec[name]
            value = np.asarray(value)
            if value.shape != shape:
                raise EpisodeError(f"{self.path}: '{name}' has shape {value.shape}, the layout says {shape}")
        for name, value in row.items():
            self._buffers[name][self._fill] = value
        self._last_timestamp = step.timestamp
        if step.intervention and (not self.segments or self.segments[-1][1] != self.steps):
            self.segments.append([self.steps, self.steps + 1])  # a takeover starts
        elif step.intervention:
            self.segments[-1][1] = self.steps + 1
        self._fill += 1
        self.steps += 1
        if self._fill == self._chunk:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        if self._fill == 0:
            return
        for name, array in self._arrays.items():
            array.append(self._buffers[name][: self._fill])
        self._fill = 0
        # Atomic replace after the chunk files are written: a killed writer leaves a count
        # that never exceeds what is on disk.
        write_json_atomic(self.path / PROGRESS, {"rows": self.steps}, indent=None)

    def commit(self, outcome: str, end_reason: str = "", extra: dict | None = None, truncated: bool = False) -> Path:
        """Make the episode visible to readers. Returns its committed path. `truncated`: it was cut
        short (the recorder stopped mid-episode), so its end says nothing about the task."""
        if outcome not in OUTCOMES:
            raise EpisodeError(f"{self.path}: outcome '{outcome}' is not one of {OUTCOMES}")
        self._flush_buffer()
        self.metadata.outcome = outcome
        self.metadata.end_reason = end_reason
        self.metadata.truncated = truncated
        self.metadata.end_time = time.time()
        self.metadata.extra.update(extra or {})
        self._group.attrs.update(self._attributes())
        fsync_tree(self.path)
        write_json_atomic(self.path / COMMIT_MARKER, {
            "schema_version": SCHEMA_VERSION,
            "episode_id": self.metadata.episode_id,
            "steps": self.steps,
            "committed_at": time.time(),
        })
        final = self._store.episodes_dir / self.metadata.episode_id
        os.rename(self.path, final)
        fsync_path(self._store.episodes_dir)
        fsync_path(self._store.staging_dir)
        self.path = final
        return final

    def discard(self) -> None:
        """Drop an episode that should not be kept (e.g. aborted before its first step)."""
        shutil.rmtree(self.path, ignore_errors=True)


class Episode:
    """A committed episode, read back. Arrays load lazily from Zarr."""

    def __init__(self, path: Path):
        import zarr

        self.path = Path(path)
        marker_path = self.path / COMMIT_MARKER
        try:
            marker = json.loads(marker_path.read_text())
        except FileNotFoundError:
            raise EpisodeError(f"{marker_path}: missing; the episode was never committed") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise EpisodeError(f"{marker_path}: not valid JSON ({err})") from None
        if marker.get("schema_version") != SCHEMA_VERSION:
            raise EpisodeError(
                f"{marker_path}: schema_version {marker.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
        self.steps = int(marker["steps"])
        self._group = zarr.open_group(str(self.path), mode="r")
        self.meta = dict(self._group.attrs)
        labels = self.path / LABELS
        if labels.is_file():
            try:
                self.meta.update(json.loads(labels.read_text()))
            except json.JSONDecodeError as err:
                raise EpisodeError(f"{labels}: not valid JSON ({err})") from None
        self.layout = EpisodeLayout.from_json(self.meta["layout"])
        for name, (shape, dtype) in self.layout.arrays().items():
            try:
                array = self._group[name]
            except KeyError:
                raise EpisodeError(f"{self.path / name}: missing; the layout requires it") from None
            if array.shape != (self.steps, *shape) or array.dtype != dtype:
                raise EpisodeError(
                    f"{self.path / name}: shape {array.shape} dtype {array.dtype}, "
                    f"commit.json and the layout say {(self.steps, *shape)} {dtype}")

    @property
    def episode_id(self) -> str:
        return self.meta["episode_id"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def outcome(self) -> str:
        return self.meta["outcome"]

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self._group[name][:])

    def images(self, camera: str) -> np.ndarray:
        return self.array(f"images/{camera}")


class EpisodeStore:
    """A directory of episodes: `episodes/` (committed), `staging/` (in progress), `quarantine/`."""

    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root)
        self.episodes_dir = self.root / "episodes"
        self.staging_dir = self.root / "staging"
        self.quarantine_dir = self.root / "quarantine"
        if create:
            for d in (self.episodes_dir, self.staging_dir, self.quarantine_dir):
                d.mkdir(parents=True, exist_ok=True)
        elif not self.episodes_dir.is_dir():
            raise EpisodeError(f"{self.root}: not an episode store (no episodes/ directory)")

    def episode_ids(self) -> list[str]:
        """Committed episodes, oldest first."""
        if not self.episodes_dir.is_dir():
            return []
        return sorted(p.name for p in self.episodes_dir.iterdir() if (p / COMMIT_MARKER).is_file())

    def open(self, episode_id: str) -> Episode:
        return Episode(self.episodes_dir / checked_episode_id(episode_id))

    def episodes(self) -> list[Episode]:
        return [self.open(eid) for eid in self.episode_ids()]

    def label(self, episode_id: str, outcome: str, progress: int | None = None, note: str = "",
              operator: str = "") -> dict:
        """Attach an operator's judgement to a committed episode (atomically, in labels.json).

        The recorded arrays and the commit marker are never rewritten; the label overrides
        `outcome` and adds `progress` (1-5), `note`, `labeled_by` and `labeled_at`.
        """
        path = self.episodes_dir / checked_episode_id(episode_id)
        if not (path / COMMIT_MARKER).is_file():
            raise EpisodeError(f"{path}: no committed episode with this id")
        if outcome not in OUTCOMES:
            raise EpisodeError(f"{path}: outcome '{outcome}' is not one of {OUTCOMES}")
        if progress is not None and not 1 <= progress <= 5:
            raise EpisodeError(f"{path}: progress {progress} is not a 1-5 score")
        label = {"outcome": outcome, "progress": progress, "note": note, "labeled_by": operator,
                 "labeled_at": time.time()}
        write_json_atomic(path / LABELS, label)
        return label

    def writer(self, layout: EpisodeLayout, metadata: EpisodeMetadata, chunk_steps: int = CHUNK_STEPS) -> EpisodeWriter:
        return EpisodeWriter(self, layout, metadata, chunk_steps)

    def recover(self) -> "Recovery":
        """Deal with episodes a crash left in staging; call at start-up, before any writer runs.

        An episode whose chunk files hold at least one whole step is salvaged: cut to the
        rows its progress record vouches for (and that read back), committed as
        `truncated` with outcome `unlabeled`. Anything else is moved to quarantine/.
        Never touches committed episodes.
        """
        recovery = Recovery()
        for path in sorted(self.staging_dir.iterdir()):
            if _is_committed(path):  # the crash fell between commit.json and the rename
                os.rename(path, self.episodes_dir / path.name)
                recovery.completed.append(path.name)
                continue
            try:
                rows = _salvage(path)
            except Exception as err:  # unreadable metadata, corrupt chunks: keep it aside for a human
                rows, reason = 0, f"{type(err).__name__}: {err}"
            else:
                reason = "no complete chunk on disk"
            if rows > 0:
                final = self.episodes_dir / path.name
                os.rename(path, final)
                recovery.salvaged[path.name] = rows
            else:
                os.rename(path, self.quarantine_dir / path.name)
                recovery.quarantined[path.name] = reason
        for d in (self.episodes_dir, self.staging_dir, self.quarantine_dir):
            fsync_path(d)
        return recovery


@dataclass
class Recovery:
    completed: list[str] = field(default_factory=list)  # committed, only the final rename was missing
    salvaged: dict[str, int] = field(default_factory=dict)  # episode id -> rows kept
    quarantined: dict[str, str] = field(default_factory=dict)  # episode id -> why


def _is_committed(path: Path) -> bool:
    try:
        Episode(path)
        return True
    except Exception:
        return False


def _salvage(path: Path) -> int:
    """Cut a staging episode to its last whole, readable chunk and commit it in place; returns rows."""
    import zarr

    progress = path / PROGRESS
    rows = json.loads(progress.read_text())["rows"] if progress.is_file() else 0
    if rows == 0:
        return 0
    group = zarr.open_group(str(path), mode="r+")
    layout = EpisodeLayout.from_json(group.attrs["layout"])
    for name in layout.arrays():
        array = group[name]
        chunk = array.chunks[0]
        for start in range(0, rows, chunk):
            index = (start // chunk,) + (0,) * (array.ndim - 1)
            if not (path / name / "c" / "/".join(map(str, index))).is_file():
                rows = start  # the progress record outran the disk (power loss): stop before
                break
        array[:rows]  # decodes every kept chunk; a torn chunk file raises here
    if rows == 0:
        return 0
    for name in layout.arrays():
        group[name].resize((rows, *group[name].shape[1:]))
    attrs = dict(group.attrs)
    attrs.update(outcome="unlabeled", truncated=True, end_time=time.time(),
                 end_reason=f"salvaged {rows} steps after the recorder stopped mid-episode")
    group.attrs.update(attrs)
    fsync_tree(path)
    write_json_atomic(path / COMMIT_MARKER, {"schema_version": SCHEMA_VERSION, "episode_id": path.name,
                                             "steps": rows, "committed_at": time.time()})
    return rows
