"""The wire between a robot's uploader and the workstation's ingest server: typed messages, parsed strictly.

A message is ZeroMQ frames: a JSON header (an object with the protocol version `v` and its `type`), then,
for a chunk or a label, one frame of raw bytes. Nothing is unpickled; each parse function checks every
field's type and range and bounds every size before anything is allocated, so a malformed or hostile
message costs a ProtocolError naming the field, nothing more.

An episode travels as one byte stream: its files sorted by path (labels.json apart: it changes after
commit and is sent as an update) concatenated and cut into `chunk_size` chunks, each with its sha256.
Its content hash is the sha256 of its file table (path, size, sha256 of each file): the same episode
has the same hash whatever the chunk size, and a robot describes a schema-2 episode from its commit
record without reading the frames (the server checks every byte against that record anyway).

Releases travel the other way on the same framing: a robot polls (`ReleasePoll`), the server answers with
the release assigned to it (`ReleaseOffer`: name, sequence, the file table of the signed release directory
and its content hash; an empty name when none), the robot fetches chunks of that directory's byte stream
(`ReleaseFetch` -> `ReleaseChunk`, each with its sha256) and reports what its model store made of it
(`InstallReport`). The server answers a report, or anything it refuses, with a `Reply`.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.episode import COMMIT_MARKER, LABELS, PROGRESS, CommitRecord, EpisodeError
from robot_runtime.files import UnsafeNameError, check_name, sha256_file

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 8 << 20  # an offer lists every file: ~100 bytes each
MAX_FILES = 1 << 16
MAX_PATH_DEPTH = 8
MAX_FILE_BYTES = 1 << 36
MAX_EPISODE_BYTES = 1 << 40
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 4 << 10, 16 << 20
MAX_CHUNK_INDEX = MAX_EPISODE_BYTES // MIN_CHUNK_BYTES
MAX_LABELS_BYTES = 64 << 10
MAX_REASON_CHARS = 4096
STATUSES = (
    "resume",   # offer accepted: send chunks from `next`, at most `window` unacknowledged
    "ack",      # chunks before `next` are staged
    "stored",   # durably in the store and cataloged (or was already, with this content)
    "refused",  # this episode (or label) is refused for good, `reason` says why
    "busy",     # try again later (server full, disk trouble)
    "reoffer",  # the server holds no upload for this episode (it restarted): offer it again
    "denied",   # this robot's key is not (or no longer) on the server's allowlist
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProtocolError(ValueError):
    """A message that is not one of ours; the text names the field and what was wrong with it."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the episode directory, '/'-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Offer:
    """A robot proposes an episode: its id, content hash, chunk size and file table."""

    episode_id: str
    content_sha256: str
    chunk_size: int
    files: tuple[FileEntry, ...]

    @classmethod
    def build(cls, episode_id: str, files: tuple[FileEntry, ...], chunk_size: int) -> Offer:
        return cls(episode_id, content_sha256(files), chunk_size, files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def chunks(self) -> int:
        return -(-self.total_bytes // self.chunk_size)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """(stream offset, length) of chunk `index`."""
        start = index * self.chunk_size
        return start, min(self.chunk_size, self.total_bytes - start)

    def frames(self) -> list[bytes]:
        return [_header("offer", episode_id=self.episode_id, content_sha256=self.content_sha256,
                        chunk_size=self.chunk_size, files=[[f.path, f.size, f.sha256] for f in self.files])]


@dataclass(frozen=True)
class Chunk:
    episode_id: str
    index: int
    sha256: str
    data: bytes | memoryview

    def frames(self) -> list[bytes | memoryview]:
        return [_header("chunk", episode_id=self.episode_id, index=self.index, sha256=self.sha256), self.data]


@dataclass(frozen=True)
class Labels:
    """labels.json of an episode already stored: written after commit, so it travels as an update."""

    episode_id: str
    sha256: str
    data: bytes

    def frames(self) -> list[bytes]:
        return [_header("labels", episode_id=self.episode_id, sha256=self.sha256), self.data]


@dataclass(frozen=True)
class Reply:
    status: str
    episode_id: str = ""
    next: int = 0
    window: int = 0
    reason: str = ""
    content_sha256: str = ""

    def frames(self) -> list[bytes]:
        return [_header("reply", status=self.status, episode_id=self.episode_id, next=self.next,
                        window=self.window, reason=self.reason[:MAX_REASON_CHARS],
                        content_sha256=self.content_sha256)]


@dataclass(frozen=True)
class ReleasePoll:
    """A robot asks for its release, saying what its model store holds (current version, last sequence)."""

    current: str
    sequence: int

    def frames(self) -> list[bytes]:
        return [_header("release_poll", current=self.current, sequence=self.sequence)]


@dataclass(frozen=True)
class ReleaseOffer:
    """The release a robot should run: a signed release directory's files (flat), as one byte stream cut into
    `chunk_size` chunks. `name` "" means no release is assigned to this robot."""

    name: str
    sequence: int
    content_sha256: str
    chunk_size: int
    files: tuple[FileEntry, ...]

    @classmethod
    def build(cls, name: str, sequence: int, files: tuple[FileEntry, ...], chunk_size: int) -> ReleaseOffer:
        return cls(name, sequence, content_sha256(files), chunk_size, files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def chunks(self) -> int:
        return -(-self.total_bytes // self.chunk_size)

    def chunk_range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(self.chunk_size, self.total_bytes - start)

    def frames(self) -> list[bytes]:
        return [_header("release_offer", name=self.name, sequence=self.sequence, content_sha256=self.content_sha256,
                        chunk_size=self.chunk_size, files=[[f.path, f.size, f.sha256] for f in self.files])]


NO_RELEASE = ReleaseOffer("", 0, "0" * 64, MIN_CHUNK_BYTES, ())


@dataclass(frozen=True)
class ReleaseFetch:
    content_sha256: str
    index: int

    def frames(self) -> list[bytes]:
        return [_header("release_fetch", content_sha256=self.content_sha256, index=self.index)]


@dataclass(frozen=True)
class ReleaseChunk:
    content_sha256: str
    index: int
    sha256: str
    data: bytes | memoryview

    def frames(self) -> list[bytes | memoryview]:
        return [_header("release_chunk", content_sha256=self.content_sha256, index=self.index, sha256=self.sha256),
                self.data]


@dataclass(frozen=True)
class InstallReport:
    """What the robot's model store made of a release (model_store.InstallResult) and what is current now."""

    name: str
    sequence: int
    installed: bool
    cause: str
    reason: str
    current: str

    def frames(self) -> list[bytes]:
        return [_header("install_report", name=self.name, sequence=self.sequence, installed=self.installed,
                        cause=self.cause, reason=self.reason[:MAX_REASON_CHARS], current=self.current)]


Request = Offer | Chunk | Labels | ReleasePoll | ReleaseFetch | InstallReport


def parse_request(frames: list) -> Request:
    """A robot's message, from raw frames (bytes, memoryviews or zmq.Frames' buffers)."""
    header = _parse_header(frames)
    kind = header.get("type")
    parsers = {"offer": parse_offer, "chunk": parse_chunk, "labels": parse_labels, "release_poll": _parse_poll,
               "release_fetch": _parse_fetch, "install_report": _parse_report}
    parse = parsers.get(kind if isinstance(kind, str) else "")
    if parse is None:
        raise ProtocolError(f"type {header.get('type')!r} is not a request ({', '.join(parsers)})")
    return parse(header, frames[1:])


def parse_release_answer(frames: list) -> ReleaseOffer | ReleaseChunk | Reply:
    """The server's answer to a poll or a fetch, or a Reply (a refusal, a denied key, an acknowledged report)."""
    header = _parse_header(frames)
    kind = header.get("type")
    if kind == "reply":
        return parse_reply(frames)
    if kind == "release_offer":
        _fields(header, kind, ("name", "sequence", "content_sha256", "chunk_size", "files"), frames[1:], 0)
        raw = header["files"]
        if not isinstance(raw, list) or len(raw) > MAX_FILES:
            raise ProtocolError(f"files: must be a list of at most {MAX_FILES} [path, size, sha256] entries")
        files = tuple(_file_entry(i, entry) for i, entry in enumerate(raw))
        if any("/" in f.path for f in files) or any(a.path >= b.path for a, b in zip(files, files[1:])):
            raise ProtocolError("files: a release is a flat directory: unique names, sorted, no '/'")
        name = _release_name(header["name"]) if header["name"] or files else ""
        offer = ReleaseOffer(name, _int(header, "sequence", 0, 2**63 - 1), _sha(header, "content_sha256"),
                             _int(header, "chunk_size", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES), files)
        if name and offer.content_sha256 != content_sha256(files):
            raise ProtocolError("content_sha256: does not match the file table")
        return offer
    if kind == "release_chunk":
        _fields(header, kind, ("content_sha256", "index", "sha256"), frames[1:], 1)
        data = _bytes(frames[1], "chunk data", MAX_CHUNK_BYTES)
        chunk = ReleaseChunk(_sha(header, "content_sha256"), _int(header, "index", 0, MAX_CHUNK_INDEX),
                             _sha(header, "sha256"), data)
        if not data or hashlib.sha256(data).hexdigest() != chunk.sha256:
            raise ProtocolError(f"release chunk {chunk.index}: its data is empty or does not match its sha256")
        return chunk
    raise ProtocolError(f"type {kind!r:.40} is not an answer to a release request")


def _parse_poll(header: dict, payload: list) -> ReleasePoll:
    _fields(header, "release_poll", ("current", "sequence"), payload, 0)
    current = _release_name(header["current"]) if header["current"] else ""
    return ReleasePoll(current, _int(header, "sequence", 0, 2**63 - 1))


def _parse_fetch(header: dict, payload: list) -> ReleaseFetch:
    _fields(header, "release_fetch", ("content_sha256", "index"), payload, 0)
    return ReleaseFetch(_sha(header, "content_sha256"), _int(header, "index", 0, MAX_CHUNK_INDEX))


def _parse_report(header: dict, payload: list) -> InstallReport:
    _fields(header, "install_report", ("name", "sequence", "installed", "cause", "reason", "current"), payload, 0)
    if type(header["installed"]) is not bool:
        raise ProtocolError("installed: must be true or false")
    for key, limit in (("cause", 64), ("reason", MAX_REASON_CHARS)):
        if not isinstance(header[key], str) or len(header[key]) > limit:
            raise ProtocolError(f"{key}: must be text of at most {limit} characters")
    return InstallReport(_release_name(header["name"]) if header["name"] else "",
                         _int(header, "sequence", 0, 2**63 - 1), header["installed"], header["cause"],
                         header["reason"], _release_name(header["current"]) if header["current"] else "")


def _release_name(value) -> str:
    try:
        return check_name(value, "release name")
    except UnsafeNameError as err:
        raise ProtocolError(str(err)[:200]) from None


def parse_offer(header: dict, payload: list) -> Offer:
    _fields(header, "offer", ("episode_id", "content_sha256", "chunk_size", "files"), payload, 0)
    chunk_size = _int(header, "chunk_size", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    raw = header["files"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FILES:
        raise ProtocolError(f"files: must be a list of 1 to {MAX_FILES} [path, size, sha256] entries")
    files = tuple(_file_entry(i, entry) for i, entry in enumerate(raw))
    if sum(f.size for f in files) > MAX_EPISODE_BYTES:
        raise ProtocolError(f"files: more than {MAX_EPISODE_BYTES} bytes in all")
    paths = [f.path for f in files]
    if any(a >= b for a, b in zip(paths, paths[1:])):
        raise ProtocolError("files: paths must be unique and sorted")
    directories = {"/".join(p.split("/")[:k]) for p in paths for k in range(1, p.count("/") + 1)}
    if COMMIT_MARKER not in paths or LABELS in paths or directories & set(paths):
        raise ProtocolError(f"files: must hold {COMMIT_MARKER}, not {LABELS} (sent apart), and no path that is "
                            "also a directory")
    offer = Offer(_episode_id(header), _sha(header, "content_sha256"), chunk_size, files)
    if offer.content_sha256 != content_sha256(files):
        raise ProtocolError("content_sha256: does not match the file table")
    return offer


def parse_chunk(header: dict, payload: list) -> Chunk:
    _fields(header, "chunk", ("episode_id", "index", "sha256"), payload, 1)
    data = _bytes(payload[0], "chunk data", MAX_CHUNK_BYTES)
    chunk = Chunk(_episode_id(header), _int(header, "index", 0, MAX_CHUNK_INDEX), _sha(header, "sha256"),
                  data)
    if not data or hashlib.sha256(data).hexdigest() != chunk.sha256:
        raise ProtocolError(f"chunk {chunk.index}: its data is empty or does not match its sha256")
    return chunk


def parse_labels(header: dict, payload: list) -> Labels:
    _fields(header, "labels", ("episode_id", "sha256"), payload, 1)
    data = bytes(_bytes(payload[0], "labels data", MAX_LABELS_BYTES))
    labels = Labels(_episode_id(header), _sha(header, "sha256"), data)
    if hashlib.sha256(data).hexdigest() != labels.sha256:
        raise ProtocolError("labels: data does not match its sha256")
    return labels


def parse_reply(frames: list) -> Reply:
    """The server's answer."""
    header = _parse_header(frames)
    _fields(header, "reply", ("status", "episode_id", "next", "window", "reason", "content_sha256"), frames[1:], 0)
    if header["status"] not in STATUSES:
        raise ProtocolError(f"status {header['status']!r} is not one of {STATUSES}")
    episode_id, reason, content = header["episode_id"], header["reason"], header["content_sha256"]
    if episode_id:
        _episode_id(header)
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ProtocolError(f"reason: must be text of at most {MAX_REASON_CHARS} characters")
    if content:
        _sha(header, "content_sha256")
    return Reply(header["status"], episode_id, _int(header, "next", 0, MAX_CHUNK_INDEX),
                 _int(header, "window", 0, 1 << 16), reason, content)


def content_sha256(files: tuple[FileEntry, ...]) -> str:
    table = json.dumps([[f.path, f.size, f.sha256] for f in files], separators=(",", ":"))
    return hashlib.sha256(table.encode()).hexdigest()


def describe_episode(path: Path) -> tuple[FileEntry, ...]:
    """The file table of a committed episode directory, sorted; EpisodeError if its commit record is bad.

    Schema 2: sizes and digests come from commit.json (only the unrecorded files are hashed here);
    schema 1 (no checksums): every file is hashed. Atomic writes' temporaries (dot files) are left out.
    """
    path = Path(path)
    record = CommitRecord.read(path)
    if record.files is not None:
        entries = [FileEntry(name, e["bytes"], e["sha256"]) for name, e in record.files.items()]
        extra = [path / name for name in (COMMIT_MARKER, PROGRESS) if (path / name).is_file()]
    else:
        entries, extra = [], [p for p in path.rglob("*") if p.is_file()]
    for file in extra:
        name = file.relative_to(path).as_posix()
        if name != LABELS and not any(part.startswith(".") for part in name.split("/")):
            entries.append(FileEntry(name, file.stat().st_size, sha256_file(file)))
    if not entries:
        raise EpisodeError(f"{path}: has no files to upload")
    return tuple(sorted(entries, key=lambda f: f.path))


def describe_release(path: Path) -> tuple[FileEntry, ...]:
    """The file table of a signed release directory (flat: the bundle's files and release.json), sorted."""
    entries = []
    for file in sorted(Path(path).iterdir()):
        if file.is_symlink() or not file.is_file():
            raise ProtocolError(f"{file}: a release directory holds only plain files")
        entries.append(FileEntry(check_name(file.name, "release file"), file.stat().st_size, sha256_file(file)))
    return tuple(entries)


def file_offsets(files: tuple[FileEntry, ...]) -> list[int]:
    """Stream offset where each file starts."""
    offsets, position = [], 0
    for f in files:
        offsets.append(position)
        position += f.size
    return offsets


def segments(files: tuple[FileEntry, ...], offsets: list[int], start: int,
             length: int) -> Iterator[tuple[int, int, int]]:
    """(file index, offset in that file, byte count) pieces of stream range [start, start + length)."""
    index = bisect.bisect_right(offsets, start) - 1
    end = start + length
    while start < end and index < len(files):
        within = start - offsets[index]
        count = min(files[index].size - within, end - start)
        if count > 0:
            yield index, within, count
            start += count
        index += 1


def _header(kind: str, **fields) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "type": kind, **fields}, separators=(",", ":")).encode()


def _parse_header(frames: list) -> dict:
    if not frames or len(frames) > 2:
        raise ProtocolError(f"a message has a header frame and at most one data frame, not {len(frames)} frames")
    raw = _bytes(frames[0], "header", MAX_HEADER_BYTES)
    try:
        header = json.loads(bytes(raw))
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"header: not JSON ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("header: not a JSON object")
    if header.get("v") != PROTOCOL_VERSION or isinstance(header.get("v"), bool):
        raise ProtocolError(f"v: protocol version {header.get('v')!r}, this side speaks {PROTOCOL_VERSION}: "
                            "run the same release on robot and workstation")
    return header


def _fields(header: dict, kind: str, names: tuple[str, ...], payload: list, data_frames: int) -> None:
    if header.get("type") != kind:
        raise ProtocolError(f"type: {header.get('type')!r}, expected {kind!r}")
    expected = {"v", "type", *names}
    if set(header) != expected:
        raise ProtocolError(f"{kind}: fields {sorted(set(header))}, expected exactly {sorted(expected)}")
    if len(payload) != data_frames:
        raise ProtocolError(f"{kind}: {len(payload)} data frames, expected {data_frames}")


def _bytes(frame, what: str, limit: int) -> bytes | memoryview:
    if not isinstance(frame, (bytes, memoryview)):
        raise ProtocolError(f"{what}: not a byte frame")
    if len(frame) > limit:
        raise ProtocolError(f"{what}: {len(frame)} bytes, at most {limit}")
    return frame


def _int(header: dict, key: str, low: int, high: int) -> int:
    value = header[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{key}: {repr(value)[:40]} is not an integer in [{low}, {high}]")
    return value


def _sha(header: dict, key: str) -> str:
    value = header[key]
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ProtocolError(f"{key}: not a sha256 hex digest")
    return value


def _episode_id(header: dict) -> str:
    try:
        return check_name(header["episode_id"], "episode_id")
    except UnsafeNameError as err:
        raise ProtocolError(str(err)[:200]) from None


def _file_entry(i: int, entry) -> FileEntry:
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and len(entry[0]) <= 1024):
        raise ProtocolError(f"files[{i}]: not a [path, size, sha256] entry")
    parts = entry[0].split("/")
    try:
        if len(parts) > MAX_PATH_DEPTH:
            raise UnsafeNameError(f"more than {MAX_PATH_DEPTH} levels deep")
        for part in parts:
            check_name(part, "path component")
    except UnsafeNameError as err:
        raise ProtocolError(f"files[{i}]: path {entry[0][:100]!r}: {str(err)[:200]}") from None
    fields = {"size": entry[1], "sha256": entry[2]}
    return FileEntry(entry[0], _int(fields, "size", 0, MAX_FILE_BYTES), _sha(fields, "sha256"))
