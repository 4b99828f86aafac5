"""Contract 1, the episode: how one robot episode is stored in Zarr, for both halves.

A store is a directory. Each episode is a Zarr v3 group `episodes/<episode_id>/`
whose per-step arrays (`timestamp`, `state`, `action` as executed,
`policy_action` as proposed, `intervention` (the operator commanded), `held` (no
command came in time, the robot held), `images/<camera>`) all have one row per
control step, and whose
attributes hold the metadata (task, robot, policy version, outcome, ...).
It is written under `staging/`, then `commit.json` (schema version, step count, and
the size and sha256 of every other file of the episode) is flushed last and the group
is moved into `episodes/` by an atomic rename; readers only look in `episodes/`, only
trust groups with a valid `commit.json`, and check each file against it before using
it, so a crash can lose at most the episode in progress, and a damaged file is
refused by name instead of read as wrong rows. Each camera has a codec (lossless, JPEG per
frame, H.264/AV1 per chunk: `capture.codecs`), named in `camera_codecs` with its quality.
Schema 2 episodes (all lossless) are read as such, schema 1 (no checksums) unverified.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_runtime.capture.codecs import CameraCodec, CodecError
from robot_runtime.files import UnsafeNameError, check_name, fsync_path, fsync_tree, sha256_file, write_json_atomic

SCHEMA_VERSION = 3  # 3: a codec per camera (attrs camera_codecs); 2: commit.json holds every file's sha256
READABLE_VERSIONS = (1, 2, 3)  # 1: no checksums, read unverified; 1 and 2: every camera lossless
COMMIT_MARKER = "commit.json"
PROGRESS = "progress.json"  # rows safely in chunk files so far; lets a crashed episode be salvaged
LABELS = "labels.json"  # an operator's label, written after commit; overrides the recorded outcome
UNRECORDED = (COMMIT_MARKER, PROGRESS, LABELS)  # the files commit.json holds no checksum of
LABEL_KEYS = ("outcome", "progress", "note", "labeled_by", "labeled_at")
OUTCOMES = ("success", "failure", "unlabeled")
REQUIRED_ATTRS = ("schema_version", "episode_id", "task", "robot_id", "control_rate_hz", "policy_version",
                  "operator", "outcome", "start_time", "end_time", "end_reason", "truncated", "layout", "extra")
CODEC_ATTR = "camera_codecs"  # schema 3: camera -> {"codec", "quality"}
CHUNK_STEPS = 50
DAMAGED = ("the episode is damaged: restore it from a copy, or move it aside with "
           "`robot-runtime-episodes validate STORE --quarantine`")
_ENCODERS = ThreadPoolExecutor(4, thread_name_prefix="episode-chunks")  # the arrays of a chunk, in parallel
# What Zarr, numcodecs and json raise on damaged input; readers turn them into EpisodeError.
_READ_ERRORS = (OSError, ValueError, LookupError, TypeError, RuntimeError, AttributeError)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class EpisodeError(Exception):
    """An episode or store that does not satisfy the contract; the message names the file.

    `problems`, when a committed episode is refused: everything found wrong with it, each
    `<file or attrs.key, relative to the episode>: what`, so that `validate` can list them.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


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
    def from_json(cls, data: dict) -> EpisodeLayout:
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

    def __init__(self, store: EpisodeStore, layout: EpisodeLayout, metadata: EpisodeMetadata,
                 chunk_steps: int = CHUNK_STEPS, codecs: dict[str, CameraCodec] | None = None):
        import zarr

        unknown = set(codecs or ()) - set(layout.cameras)
        if unknown:
            raise EpisodeError(f"codecs for camera(s) {sorted(unknown)} the layout does not have")
        self.codecs = {camera: (codecs or {}).get(camera, CameraCodec()) for camera in layout.cameras}
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
            camera = name.removeprefix("images/")
            codec = self.codecs[camera].zarr_codecs() if camera in self.codecs else {"compressors": "auto"}
            # Every chunk gets a file, even an all-default one, so salvage can tell a missing
            # chunk (lost in a crash) from an empty one.
            self._arrays[name] = self._group.create_array(
                name, shape=(0, *shape), chunks=(chunk_steps, *shape), dtype=dtype, **codec,
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
            CODEC_ATTR: {camera: codec.to_json() for camera, codec in self.codecs.items()},
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
        fill = self._fill
        list(_ENCODERS.map(lambda name: self._arrays[name].append(self._buffers[name][:fill]), self._arrays))
        self._fill = 0
        # Atomic replace after the chunk files are written: a killed writer leaves a count
        # that never exceeds what is on disk.
        write_json_atomic(self.path / PROGRESS, {"rows": self.steps}, indent=None)

    def commit(self, outcome: str, end_reason: str = "", extra: dict | None = None, truncated: bool = False,
               end_time: float | None = None) -> Path:
        """Make the episode visible to readers. Returns its committed path. `truncated`: it was cut
        short (the recorder stopped mid-episode), so its end says nothing about the task; `end_time`
        (default: now) is given when the episode ended earlier (a transcoded copy)."""
        if outcome not in OUTCOMES:
            raise EpisodeError(f"{self.path}: outcome '{outcome}' is not one of {OUTCOMES}")
        self._flush_buffer()
        self.metadata.outcome = outcome
        self.metadata.end_reason = end_reason
        self.metadata.truncated = truncated
        self.metadata.end_time = time.time() if end_time is None else end_time
        self.metadata.extra.update(extra or {})
        self._group.attrs.update(self._attributes())
        _seal(self.path, self.metadata.episode_id, self.steps)
        final = self._store.episodes_dir / self.metadata.episode_id
        os.rename(self.path, final)
        fsync_path(self._store.episodes_dir)
        fsync_path(self._store.staging_dir)
        self.path = final
        return final

    def discard(self) -> None:
        """Drop an episode that should not be kept (e.g. aborted before its first step)."""
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class CommitRecord:
    """commit.json, written last: the episode is complete with `steps` rows and (schema 2) each
    other file had this size and sha256 when it was committed, so a reader can tell a damaged file."""

    schema_version: int
    steps: int
    files: dict[str, dict] | None  # path relative to the episode -> {"bytes", "sha256"}; None in schema 1

    @classmethod
    def read(cls, episode: Path) -> CommitRecord:
        """The record of a committed episode directory; EpisodeError naming what is wrong with it otherwise."""
        try:
            raw = (episode / COMMIT_MARKER).read_bytes()
            data = json.loads(raw)
        except FileNotFoundError:
            raise _refused(episode, [f"{COMMIT_MARKER}: missing; the episode was never committed"]) from None
        except OSError as err:
            raise _refused(episode, [f"{COMMIT_MARKER}: cannot read ({err.strerror or err})"], DAMAGED) from None
        except ValueError as err:  # not UTF-8, not JSON
            raise _refused(episode, [f"{COMMIT_MARKER}: not valid JSON ({err})"], DAMAGED) from None
        if not isinstance(data, dict):
            raise _refused(episode, [f"{COMMIT_MARKER}: {type(data).__name__}, not a JSON object"], DAMAGED)
        version, steps, files = data.get("schema_version"), data.get("steps"), data.get("files")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise _refused(episode, [f"{COMMIT_MARKER}: schema_version {version!r}, this code reads "
                                     f"{' and '.join(map(str, READABLE_VERSIONS))}"])
        if version >= 2 and (data.get("record_sha256") != _record_digest(data) or raw != json.dumps(data).encode()):
            raise _refused(episode, [f"{COMMIT_MARKER}: checksum mismatch (the record changed after commit)"], DAMAGED)
        problems = []
        if not _is_count(steps):
            problems.append(f"{COMMIT_MARKER}: steps {steps!r} is not a step count")
        if not isinstance(data.get("episode_id"), str) or not _is_number(data.get("committed_at")):
            problems.append(f"{COMMIT_MARKER}: episode_id must be text and committed_at a time")
        if version >= 2 and not _is_file_table(files):
            problems.append(f"{COMMIT_MARKER}: files is not a table of relative path -> "
                            "{\"bytes\": size, \"sha256\": hex digest}")
        if problems:
            raise _refused(episode, problems, DAMAGED)
        return cls(version, steps, files if version >= 2 else None)

    def problem(self, episode: Path, name: str) -> str | None:
        """What is wrong with file `name` of `episode` against this record, `<name>: what`; None if it matches
        (always, in schema 1)."""
        if self.files is None:
            return None
        entry = self.files.get(name)
        if entry is None:
            return f"{name}: has no checksum in {COMMIT_MARKER} (the record is incomplete)"
        try:
            size = (episode / name).stat().st_size
            if size != entry["bytes"]:
                return f"{name}: {'truncated to' if size < entry['bytes'] else 'grew to'} {size} bytes, " \
                       f"{COMMIT_MARKER} says {entry['bytes']}"
            if sha256_file(episode / name) != entry["sha256"]:
                return f"{name}: checksum mismatch (its sha256 differs from {COMMIT_MARKER}'s)"
        except FileNotFoundError:
            return f"{name}: missing"
        except OSError as err:
            return f"{name}: cannot read ({err.strerror or err})"
        return None


class Episode:
    """A committed episode, read back. Arrays load lazily from Zarr.

    Opening checks the metadata files against commit.json, and `array` the chunk files of
    that array before decoding them, each file once per Episode object (hashing is the cost
    of a read; the page cache makes the second read of the bytes cheap). Anything wrong,
    a damaged file or what Zarr makes of one, raises EpisodeError naming the file.
    """

    def __init__(self, path: Path):
        import zarr

        self.path = Path(path)
        self.record = CommitRecord.read(self.path)
        self.steps = self.record.steps
        self._verified: set[str] = set()
        problems = self._check(["zarr.json"])  # before Zarr reads it: the attributes and layout come from it
        if problems:
            raise _refused(self.path, problems, DAMAGED)
        try:
            self._group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            attrs = dict(self._group.attrs)
        except _READ_ERRORS as err:
            raise _refused(self.path, [f"zarr.json: not a Zarr group ({_describe(err)})"], DAMAGED) from None
        label, problems = _read_label(self.path)
        problems = _attribute_problems(attrs, self.record.schema_version) + problems
        if problems:
            raise _refused(self.path, problems)
        self.attributes = attrs  # as recorded; `meta` is them with the operator's label over them
        self.meta = {**attrs, **label}
        self.layout = EpisodeLayout.from_json(attrs["layout"])
        self.codecs = {camera: CameraCodec.from_json(attrs[CODEC_ATTR][camera]) if CODEC_ATTR in attrs
                       else CameraCodec() for camera in self.layout.cameras}
        problems = self._check(self._metadata_files())
        if problems:
            raise _refused(self.path, problems, DAMAGED)
        self._arrays = {}
        for name, (shape, dtype) in self.layout.arrays().items():
            try:
                array = self._group[name]
            except KeyError:
                problems.append(f"{name}: missing; the layout requires it")
                continue
            except _READ_ERRORS as err:
                problems.append(f"{name}/zarr.json: not a Zarr array ({_describe(err)})")
                continue
            if not isinstance(array, zarr.Array) or array.shape != (self.steps, *shape) or array.dtype != dtype:
                problems.append(f"{name}: shape {getattr(array, 'shape', None)} dtype {getattr(array, 'dtype', None)}, "
                                f"commit.json and the layout say {(self.steps, *shape)} {dtype}")
            self._arrays[name] = array
        if problems:
            raise _refused(self.path, problems, DAMAGED)

    @property
    def episode_id(self) -> str:
        return self.meta["episode_id"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def outcome(self) -> str:
        return self.meta["outcome"]

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) (default: all) of per-step array `name`, once the chunk files holding them match
        commit.json; only those chunks are read and decoded (a video chunk starts with a keyframe)."""
        if name not in self._arrays:
            raise EpisodeError(f"{self.path}: no array '{name}'; the layout has {sorted(self._arrays)}")
        stop = self.steps if stop is None else stop
        if not 0 <= start <= stop <= self.steps:
            raise EpisodeError(f"{self.path}: rows [{start}, {stop}) of '{name}' are not within its {self.steps}")
        problems = self._check(self._chunk_files(name, start, stop))
        if problems:
            raise _refused(self.path, problems, DAMAGED)
        try:
            return np.asarray(self._arrays[name][start:stop])
        except _READ_ERRORS as err:
            raise _refused(self.path, [f"{name}: does not decode ({_describe(err)})"], DAMAGED) from None

    def images(self, camera: str) -> np.ndarray:
        return self.array(f"images/{camera}")

    @property
    def chunk_steps(self) -> int:
        """Rows per chunk file (the writer's `chunk_steps`): the unit a reader decodes."""
        return self._arrays["timestamp"].chunks[0]

    def verify(self) -> list[str]:
        """Every problem of the episode's files, `<file>: what`: all that commit.json lists, and every chunk
        file an array needs (an incomplete record is a problem too). Empty when all match, or in schema 1."""
        needed = {file for name in self._arrays for file in self._chunk_files(name)} | set(self._metadata_files())
        return self._check(sorted(needed | set(self.record.files or ())))

    def _metadata_files(self) -> list[str]:
        """The zarr.json of the group, of each array and of each group between (images/)."""
        arrays = set(self.layout.arrays())
        groups = {name.rsplit("/", 1)[0] for name in arrays if "/" in name}
        return ["zarr.json"] + sorted(f"{name}/zarr.json" for name in arrays | groups)

    def _chunk_files(self, name: str, start: int = 0, stop: int | None = None) -> list[str]:
        """The chunk files of `name` that hold rows [start, stop) (default: all)."""
        array = self._arrays[name]
        stop = array.shape[0] if stop is None else stop
        rows = range(start // array.chunks[0], -(-stop // array.chunks[0]))
        return [f"{name}/{array.metadata.encode_chunk_key(coords)}"
                for coords in itertools.product(rows, *map(range, array.cdata_shape[1:]))]

    def _check(self, names: list[str]) -> list[str]:
        """Problems of files `names` against the record; a file that matched is not hashed again."""
        problems = []
        for name in names:
            if name not in self._verified:
                problem = self.record.problem(self.path, name)
                if problem:
                    problems.append(problem)
                else:
                    self._verified.add(name)
        return problems


def _refused(episode: Path, problems: list[str], hint: str = "") -> EpisodeError:
    """An EpisodeError listing every problem as `<episode>/<file>: what`, then what to do."""
    message = "; ".join(f"{episode}/{problem}" for problem in problems)
    return EpisodeError(f"{message}; {hint}" if hint else message, problems)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_file_table(files) -> bool:
    """A commit record's `files`: safe relative paths (no '..', nothing absolute) -> size and sha256."""
    if not isinstance(files, dict):
        return False
    for name, entry in files.items():
        try:  # JSON keys are text
            for part in name.split("/"):
                check_name(part)
        except UnsafeNameError:
            return False
        if name in UNRECORDED or not isinstance(entry, dict) or not _is_count(entry.get("bytes")) \
                or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            return False
    return True


def _file_table(episode: Path) -> dict[str, dict]:
    """Size and sha256 of every file of the episode but the unrecorded ones and atomic writes' temporaries."""
    table = {}
    for dirpath, dirnames, filenames in os.walk(episode):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            name = path.relative_to(episode).as_posix()
            if name not in UNRECORDED and not filename.startswith("."):
                table[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def _seal(episode: Path, episode_id: str, steps: int) -> None:
    """Flush every file of a staged episode, then write commit.json last, with their checksums and its own."""
    fsync_tree(episode)
    record = {"schema_version": SCHEMA_VERSION, "episode_id": episode_id, "steps": steps,
              "committed_at": time.time(), "files": _file_table(episode)}
    record["record_sha256"] = _record_digest(record)
    write_json_atomic(episode / COMMIT_MARKER, record, indent=None)


def _record_digest(record: dict) -> str:
    """sha256 of a commit record's JSON without this digest, so that commit.json, which no other file vouches
    for, is checked too."""
    body = json.dumps({key: value for key, value in record.items() if key != "record_sha256"})
    return hashlib.sha256(body.encode()).hexdigest()


def _read_label(episode: Path) -> tuple[dict, list[str]]:
    """labels.json (none: {}) and its problems; it is written after commit, so it has its own checks."""
    try:
        label = json.loads((episode / LABELS).read_bytes())
    except FileNotFoundError:
        return {}, []
    except OSError as err:
        return {}, [f"{LABELS}: cannot read ({err.strerror or err})"]
    except ValueError as err:
        return {}, [f"{LABELS}: not valid JSON ({err}); label the episode again"]
    if not isinstance(label, dict) or set(label) != set(LABEL_KEYS):
        return {}, [f"{LABELS}: not a label (an object with exactly {list(LABEL_KEYS)}); label the episode again"]
    problems = []
    if label["outcome"] not in OUTCOMES:
        problems.append(f"{LABELS}: outcome {label['outcome']!r} is not one of {OUTCOMES}")
    if label["progress"] is not None and not (_is_count(label["progress"]) and 1 <= label["progress"] <= 5):
        problems.append(f"{LABELS}: progress {label['progress']!r} is not a 1-5 score")
    if not isinstance(label["note"], str) or not isinstance(label["labeled_by"], str):
        problems.append(f"{LABELS}: note and labeled_by must be text")
    if not _is_number(label["labeled_at"]):
        problems.append(f"{LABELS}: labeled_at {label['labeled_at']!r} is not a time")
    return label, problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _attribute_problems(attrs: dict, schema_version: int) -> list[str]:
    """What is wrong with an episode's attributes, each `attrs.<key>: what`; empty when they satisfy the contract."""
    problems = [f"attrs.{key}: missing" for key in REQUIRED_ATTRS if key not in attrs]
    if problems:
        return problems
    if attrs["schema_version"] != schema_version:
        problems.append(f"attrs.schema_version: {attrs['schema_version']!r}, commit.json says {schema_version}")
    for key in ("episode_id", "task", "robot_id", "policy_version", "operator", "end_reason"):
        if not isinstance(attrs[key], str):
            problems.append(f"attrs.{key}: {attrs[key]!r} is not text")
    if attrs["outcome"] not in OUTCOMES:
        problems.append(f"attrs.outcome: {attrs['outcome']!r} is not one of {OUTCOMES}")
    if not isinstance(attrs["truncated"], bool):
        problems.append(f"attrs.truncated: {attrs['truncated']!r} is not a boolean")
    if not _is_number(attrs["control_rate_hz"]) or not attrs["control_rate_hz"] > 0:
        problems.append(f"attrs.control_rate_hz: {attrs['control_rate_hz']!r} is not a positive rate")
    for key in ("start_time", "end_time"):
        if not _is_number(attrs[key]):
            problems.append(f"attrs.{key}: {attrs[key]!r} is not a time")
    if not isinstance(attrs["extra"], dict):
        problems.append(f"attrs.extra: {type(attrs['extra']).__name__}, not an object")
    try:
        layout = EpisodeLayout.from_json(attrs["layout"])
        if not all(h > 0 and w > 0 for h, w in layout.cameras.values()) \
                or not all(isinstance(n, str) for n in layout.state_names + layout.action_names):
            raise ValueError("camera sizes must be positive, names text")
        for camera in layout.cameras:  # it becomes a path: images/<camera>
            check_name(camera, "camera")
    except _READ_ERRORS as err:  # UnsafeNameError is a ValueError
        problems.append(f"attrs.layout: malformed ({_describe(err)})")
        return problems
    if schema_version >= 3:
        problems += _codec_problems(attrs.get(CODEC_ATTR), layout)
    return problems


def _codec_problems(codecs, layout: EpisodeLayout) -> list[str]:
    """What is wrong with schema 3's `camera_codecs`: one valid codec for each camera of the layout."""
    if not isinstance(codecs, dict) or set(codecs) != set(layout.cameras):
        return [f"attrs.{CODEC_ATTR}: {codecs!r} is not a codec for each camera {sorted(layout.cameras)}"]
    problems = []
    for camera, codec in codecs.items():
        try:
            CameraCodec.from_json(codec)
        except CodecError as err:
            problems.append(f"attrs.{CODEC_ATTR}.{camera}: {err}")
    return problems


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

    def quarantine(self, episode_id: str) -> Path:
        """Move a committed episode out of readers' sight into quarantine/, for a human (atomic, durable)."""
        source = self.episodes_dir / checked_episode_id(episode_id)
        target = self.quarantine_dir / source.name
        if target.exists():
            raise EpisodeError(f"{target}: already exists; move it away, then quarantine {source} again")
        self.quarantine_dir.mkdir(exist_ok=True)
        os.rename(source, target)
        fsync_path(self.quarantine_dir)
        fsync_path(self.episodes_dir)
        return target

    def writer(self, layout: EpisodeLayout, metadata: EpisodeMetadata, chunk_steps: int = CHUNK_STEPS,
               codecs: dict[str, CameraCodec] | None = None) -> EpisodeWriter:
        return EpisodeWriter(self, layout, metadata, chunk_steps, codecs)

    def recover(self) -> Recovery:
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
    _seal(path, path.name, rows)
    return rows
