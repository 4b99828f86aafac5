"""Read rosbag2 bags, sqlite3 (`.db3`) and MCAP, as (topic, time, serialized bytes) in time order.

rosbag2_py is not on PyPI, so this reads the two storage formats directly: sqlite3 through
its documented tables (`topics`, `messages`), MCAP through the `mcap` reader. Payloads stay
CDR bytes; `deserialize` turns them into ROS messages with rclpy's own typesupport (no
hand-written CDR). A bag is a directory with `metadata.yaml` (what `ros2 bag record`
writes), a directory of storage files, or a single `.db3` / `.mcap` file.
"""
from __future__ import annotations

import heapq
import importlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

SQLITE_MAGIC = b"SQLite format 3\x00"
MCAP_MAGIC = b"\x89MCAP0\r\n"
STORAGE_SUFFIXES = {".db3": "sqlite3", ".mcap": "mcap"}


class BagError(Exception):
    """A bag that cannot be read as asked; the message names the file (and topic)."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    type: str  # normalized "pkg/msg/Name"
    serialization_format: str
    message_count: int


@dataclass(frozen=True)
class RawMessage:
    topic: str
    log_time: int  # ns, when the recorder received it
    data: bytes  # CDR


def normalize_type(type_name: str) -> str:
    """'sensor_msgs/Image' and 'sensor_msgs/msg/Image' both -> 'sensor_msgs/msg/Image'."""
    parts = type_name.split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return type_name


def message_class(type_name: str):
    """The rclpy message class of 'pkg/msg/Name'. Uses rosidl_runtime_py when installed; its
    wheel is not on PyPI, so otherwise the same lookup (import pkg.msg, take Name) is done here."""
    type_name = normalize_type(type_name)
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    if get_message is not None:
        return get_message(type_name)
    try:
        package, kind, name = type_name.split("/")
        if kind != "msg":
            raise ValueError
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise ValueError(f"message type '{type_name}' is not installed (no Python package '{type_name}')") from None


def deserialize(data: bytes, cls):
    from rclpy.serialization import deserialize_message

    return deserialize_message(data, cls)


class _Sqlite3File:
    """One `.db3` file of a bag: tables topics(id, name, type, serialization_format, ...) and
    messages(id, topic_id, timestamp, data)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = {"topics", "messages"} - tables
            if missing:
                raise BagError(f"{path}: not a rosbag2 sqlite3 file (no table(s) {sorted(missing)})")
            counts = dict(self._db.execute("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id"))
            self.topics = {}
            self._ids = {}
            for topic_id, name, type_name, fmt in self._db.execute(
                    "SELECT id, name, type, serialization_format FROM topics"):
                self._ids[name] = topic_id
                self.topics[name] = TopicInfo(name, normalize_type(type_name or ""), fmt or "",
                                              int(counts.get(topic_id, 0)))
        except sqlite3.DatabaseError as err:
            raise BagError(f"{path}: cannot read as a rosbag2 sqlite3 file ({err})") from None

    def messages(self, topics: Iterable[str], start: int | None, end: int | None) -> Iterator[RawMessage]:
        ids = {self._ids[t]: t for t in topics if t in self._ids}
        if not ids:
            return
        query = (f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({','.join('?' * len(ids))})"
                 " AND timestamp >= ? AND timestamp < ? ORDER BY timestamp, id")
        low = -(2 ** 63) if start is None else start
        high = 2 ** 63 - 1 if end is None else end
        try:
            for topic_id, stamp, data in self._db.execute(query, (*ids, low, high)):
                yield RawMessage(ids[topic_id], int(stamp), bytes(data))
        except sqlite3.DatabaseError as err:
            raise BagError(f"{self.path}: reading messages failed ({err})") from None

    def close(self) -> None:
        self._db.close()


class _McapFile:
    """One `.mcap` file of a bag: channels name topics, schemas (encoding ros2msg) name types."""

    def __init__(self, path: Path):
        from mcap.reader import make_reader

        self.path = path
        self._file = open(path, "rb")
        try:
            self._reader = make_reader(self._file)
            summary = self._reader.get_summary()
        except Exception as err:  # the mcap library raises many kinds for a torn or foreign file
            self._file.close()
            raise BagError(f"{path}: cannot read as MCAP ({type(err).__name__}: {err}); if the recording "
                           "was cut short, `mcap recover` may rebuild it") from None
        if summary is None:
            self._file.close()
            raise BagError(f"{path}: MCAP file has no summary section (recording cut short?); "
                           "`mcap recover` may rebuild it")
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        self.topics = {}
        for channel in summary.channels.values():
            schema = summary.schemas.get(channel.schema_id)
            self.topics[channel.topic] = TopicInfo(
                channel.topic, normalize_type(schema.name) if schema else "", channel.message_encoding,
                int(counts.get(channel.id, 0)))

    def messages(self, topics: Iterable[str], start: int | None, end: int | None) -> Iterator[RawMessage]:
        topics = [t for t in topics if t in self.topics]
        if not topics:
            return
        try:
            for _, channel, message in self._reader.iter_messages(
                    topics=topics, starting_at=start, ending_before=end, log_time_order=True):
                yield RawMessage(channel.topic, int(message.log_time), bytes(message.data))
        except Exception as err:
            raise BagError(f"{self.path}: reading messages failed ({type(err).__name__}: {err})") from None

    def close(self) -> None:
        self._file.close()


class Bag:
    """An open rosbag2 bag: `topics` (name -> TopicInfo) and time-ordered `messages`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.storage, paths = _resolve(self.path)
        opener = _Sqlite3File if self.storage == "sqlite3" else _McapFile
        self._files = []
        self.topics: dict[str, TopicInfo] = {}
        try:
            for p in paths:
                self._files.append(opener(p))
            for f in self._files:
                for name, info in f.topics.items():
                    known = self.topics.get(name)
                    if known and known.type != info.type:
                        raise BagError(f"{f.path}: topic {name} has type {info.type}, another file of the bag "
                                       f"says {known.type}")
                    self.topics[name] = TopicInfo(name, info.type, info.serialization_format,
                                                  info.message_count + (known.message_count if known else 0))
        except BaseException:
            self.close()
            raise

    def messages(self, topics: Iterable[str], start: int | None = None, end: int | None = None
                 ) -> Iterator[RawMessage]:
        """Messages of `topics` with start <= log_time < end, in log-time order (ties keep file order)."""
        topics = list(topics)
        streams = [f.messages(topics, start, end) for f in self._files]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda m: m.log_time)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _storage_of(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise BagError(f"{path}: cannot open ({err.strerror})") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite3"
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if path.suffix in STORAGE_SUFFIXES:
        return STORAGE_SUFFIXES[path.suffix]  # let the reader name what is wrong with it
    raise BagError(f"{path}: neither a sqlite3 nor an MCAP file (first bytes {head[:8]!r})")


def _resolve(path: Path) -> tuple[str, list[Path]]:
    """(storage id, storage files in order) for a bag directory or a single storage file."""
    if path.is_file():
        return _storage_of(path), [path]
    if not path.is_dir():
        raise BagError(f"{path}: no such bag (expected a directory with metadata.yaml, a .db3 or an .mcap file)")
    metadata_path = path / "metadata.yaml"
    if metadata_path.is_file():
        try:
            info = yaml.safe_load(metadata_path.read_text())["rosbag2_bagfile_information"]
        except (yaml.YAMLError, KeyError, TypeError) as err:
            raise BagError(f"{metadata_path}: not rosbag2 metadata ({err})") from None
        if info.get("compression_format") or info.get("compression_mode"):
            raise BagError(f"{metadata_path}: compressed bag ({info.get('compression_mode')} "
                           f"{info.get('compression_format')}); decompress it first with `ros2 bag convert`")
        files = [path / p for p in info.get("relative_file_paths") or []]
        if not files:
            raise BagError(f"{metadata_path}: lists no storage files (relative_file_paths)")
        for f in files:
            if not f.is_file():
                raise BagError(f"{f}: listed in {metadata_path} but missing")
        storage = info.get("storage_identifier") or _storage_of(files[0])
        if storage not in ("sqlite3", "mcap"):
            raise BagError(f"{metadata_path}: storage '{storage}' is not sqlite3 or mcap")
        return storage, files
    files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    kinds = {STORAGE_SUFFIXES[p.suffix] for p in files}
    if len(kinds) != 1:
        raise BagError(f"{path}: no metadata.yaml and {'no' if not kinds else 'mixed'} .db3/.mcap files")
    return kinds.pop(), files
