"""The robot's upload agent: every committed episode reaches the workstation once, whatever the link does.

It runs in its own thread (`start`), in the fleet agent's own process at a lower CPU priority, so the control
loop never waits on it (hashing, file reads and ZeroMQ sends release the GIL besides). Each episode is offered
(id, content hash, file table); the server answers with the chunk to resume from, chunks go out under a window
of unacknowledged ones (and a token bucket on metered links), and the episode counts as uploaded only when the
server answers `stored`: durable in its store and catalog. A cut (disconnect, no reply in time) closes the
socket and offers again on a fresh one; the server resumes from the last chunk it acknowledged. What was
acknowledged is kept in a small JSON file, so a restarted robot asks only about the rest. Only acknowledged
episodes, labels included, may be deleted locally, and only when a retention policy says so (by default
everything is kept).
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from robot_runtime.capture.disk_guard import tree_bytes
from robot_runtime.episode import COMMIT_MARKER, LABELS, EpisodeError, EpisodeStore
from robot_runtime.files import fsync_path, write_json_atomic
from robot_runtime.fleet.link import Cut, Denied, Later, LinkWorker, later
from robot_runtime.fleet.protocol import (
    Chunk,
    Labels,
    Offer,
    Reply,
    describe_episode,
    file_offsets,
    segments,
)

log = logging.getLogger(__name__)
STATE_FILE = "upload_state.json"  # in the store's root, beside episodes/


@dataclass(frozen=True)
class Retention:
    """Which acknowledged episodes may be deleted on the robot; 0 turns a rule off (the default keeps all)."""

    max_age_hours: float = 0.0  # committed longer ago than this
    max_store_mb: float = 0.0   # oldest first, while the episodes take more than this

    def victims(self, episodes: list[tuple[str, float, int]], uploaded: set[str], now: float) -> list[str]:
        """Ids to delete among `episodes` (id, commit time, bytes); only ever ids in `uploaded`."""
        doomed, total = [], sum(size for _, _, size in episodes)
        for episode_id, committed, size in sorted(episodes, key=lambda e: e[1]):
            too_old = self.max_age_hours > 0 and now - committed > self.max_age_hours * 3600
            too_big = self.max_store_mb > 0 and total > self.max_store_mb * 1e6
            if episode_id in uploaded and (too_old or too_big):
                doomed.append(episode_id)
                total -= size
        return doomed


class TokenBucket:
    """A bandwidth cap for metered links: `take(n)` returns once n bytes fit the budget (`rate` bytes/s)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, n: int, stop: threading.Event) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            need = min(n, self.burst)  # a request above the burst waits for a full bucket, then goes into debt
            if self.tokens >= need or stop.wait((need - self.tokens) / self.rate):
                self.tokens -= n
                return


@dataclass(frozen=True)
class UploaderConfig:
    endpoint: str                 # the ingest server, e.g. tcp://workstation:5870 (robots connect, it binds)
    key_file: str                 # this robot's secret certificate (<robot>.key_secret)
    server_key_file: str          # the server's public certificate (<server>.key)
    chunk_size: int = 1 << 20
    window: int = 8               # chunks in flight before an acknowledgement (the server may lower it)
    bandwidth_bytes_per_s: float = 0.0  # 0: uncapped
    retention: Retention = Retention()
    scan_interval_s: float = 2.0
    reply_timeout_s: float = 30.0
    state_file: str = ""          # default: <store>/upload_state.json
    # CPU priority (Linux nice, 0-19) of the upload thread and ZeroMQ's I/O thread. Raise it where the uploader
    # has a process of its own (the fleet agent: 10); in a control loop's process a descheduled upload thread
    # holding the GIL would stall the loop instead.
    nice: int = 0


@dataclass
class UploadStatus:
    """A snapshot for /diagnostics and tests."""

    stored: int = 0
    pending: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # episode id -> the server's (or our) reason
    deleted: int = 0
    bytes_sent: int = 0
    cuts: int = 0
    current: str = ""
    denied: str = ""      # why the server does not accept this robot's key, while it does not
    last_error: str = ""
    uploads: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))  # (id, s, bytes)


class UploadState:
    """What the server acknowledged, {"stored": {episode id: {"content": hash, "labels": hash or ""}}}.

    Losing the file costs questions only: the server answers a re-offer of a stored episode with `stored`.
    Refusals are not kept: a restarted robot (perhaps with a fixed configuration) asks once more.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text())
            self.stored = dict(data["stored"])
        except FileNotFoundError:
            self.stored = {}
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s: unreadable (%s); asking the server again about every episode", self.path, err)
            self.stored = {}

    def save(self) -> None:
        write_json_atomic(self.path, {"version": 1, "stored": self.stored}, indent=None)


class Uploader(LinkWorker):
    """Uploads `store`'s committed episodes to the ingest server: `start()` a thread, or call `sync()`."""

    thread_name = "fleet-uploader"

    def __init__(self, store: EpisodeStore, config: UploaderConfig):
        self.state = UploadState(Path(config.state_file) if config.state_file else store.root / STATE_FILE)
        super().__init__(config, UploadStatus(stored=len(self.state.stored)))
        self.store = store
        self._bucket = TokenBucket(config.bandwidth_bytes_per_s, config.chunk_size) \
            if config.bandwidth_bytes_per_s > 0 else None
        self._sizes: dict[str, int] = {}
        self._refused: dict[str, tuple[str, str]] = {}  # episode id -> (content hash, why), until a restart
        self._labels_refused: dict[str, str] = {}  # episode id -> labels.json hash the server refused

    def status(self) -> UploadStatus:
        with self._lock:
            return replace(self._status, refused=dict(self._status.refused),
                           uploads=collections.deque(self._status.uploads, maxlen=1000))

    def sync(self) -> int:
        """Upload every pending episode and changed label, then apply retention; returns episodes newly stored."""
        stored = 0
        try:
            for episode_id in self.store.episode_ids():
                if self._stop.is_set():
                    break
                stored += self._sync_episode(episode_id)
            self._update(denied="")
            self._apply_retention()
        except Later as err:
            self._drop_link()
            if not self._stop.is_set():
                self._update(last_error=str(err), **({"denied": str(err)} if isinstance(err, Denied) else {}))
                log.warning("upload paused: %s", err)
        pending = len(set(self.store.episode_ids()) - set(self.state.stored) - set(self._refused))
        self._update(pending=pending, stored=len(self.state.stored), current="",
                     refused={k: reason for k, (_, reason) in self._refused.items()})
        return stored

    def pass_once(self) -> None:
        self.sync()

    def interval_s(self) -> float:
        return self.config.scan_interval_s

    def _sync_episode(self, episode_id: str) -> int:
        path = self.store.episodes_dir / episode_id
        stored = 0
        if episode_id not in self.state.stored:
            try:
                offer = Offer.build(episode_id, describe_episode(path), self.config.chunk_size)
            except EpisodeError as err:  # said once, not every pass
                return 0 if episode_id in self._refused else self._refuse(episode_id, "", f"cannot describe it: {err}")
            if self._refused.get(episode_id, ("",))[0] == offer.content_sha256:
                return 0
            self._update(current=episode_id)
            started = time.monotonic()
            try:
                reply = self._deliver(path, offer)
            except EpisodeError as err:
                return self._refuse(episode_id, offer.content_sha256, f"damaged here: {err}")
            if reply.status == "refused":
                return self._refuse(episode_id, offer.content_sha256, reply.reason)
            self.state.stored[episode_id] = {"content": offer.content_sha256, "labels": ""}
            self._refused.pop(episode_id, None)
            self.state.save()
            with self._lock:
                self._status.uploads.append((episode_id, time.monotonic() - started, offer.total_bytes))
            stored = 1
        self._sync_labels(episode_id, path)
        return stored

    def _sync_labels(self, episode_id: str, path: Path) -> None:
        try:
            data = (path / LABELS).read_bytes()
        except FileNotFoundError:
            return
        entry = self.state.stored[episode_id]
        digest = hashlib.sha256(data).hexdigest()
        if digest in (entry["labels"], self._labels_refused.get(episode_id)):
            return
        reply = self._call(Labels(episode_id, digest, data).frames(), episode_id)
        if reply.status == "stored":
            entry["labels"] = digest
            self.state.save()
        else:
            self._labels_refused[episode_id] = digest
            self._update(last_error=f"{episode_id}/{LABELS}: refused by the server: {reply.reason}")

    def _refuse(self, episode_id: str, content: str, reason: str) -> int:
        log.error("episode %s not uploaded: %s", episode_id, reason)
        self._refused[episode_id] = (content, reason)
        return 0

    def _deliver(self, path: Path, offer: Offer) -> Reply:
        """Offer, then send chunks from where the server resumes, until it answers stored or refused."""
        backoff = 0.1
        while True:
            try:
                return self._transfer(path, offer)
            except Cut as cut:
                self._drop_link()
                self._update(last_error=str(cut), cuts=self._status.cuts + 1)
                log.info("upload of %s interrupted: %s", offer.episode_id, cut)
            if self._stop.wait(backoff):
                raise Later("the uploader is stopping")
            backoff = min(backoff * 2, 5.0)

    def _transfer(self, path: Path, offer: Offer) -> Reply:
        link = self._connect()
        offsets = file_offsets(offer.files)
        link.send(offer.frames())
        sent = acked = window = 0
        while True:
            reply = link.receive(offer.episode_id)
            if reply.status in ("stored", "refused"):
                return reply
            if reply.status in ("busy", "denied"):
                raise later(reply)
            if reply.status == "reoffer":
                link.send(offer.frames())
                window = 0
            elif reply.status == "resume":
                sent = acked = reply.next
                window = max(1, min(self.config.window, reply.window))
            else:
                acked = max(acked, reply.next)
            while window and sent < offer.chunks and sent - acked < window:
                chunk = self._read_chunk(path, offer, offsets, sent)
                if self._bucket:
                    self._bucket.take(len(chunk.data), self._stop)
                if self._stop.is_set():
                    raise Later("the uploader is stopping")
                link.send(chunk.frames())
                sent += 1
                self._update(bytes_sent=self._status.bytes_sent + len(chunk.data))

    def _call(self, frames: list, episode_id: str) -> Reply:
        """One request and its answer, retried on a fresh socket after a cut."""
        while True:
            try:
                link = self._connect()
                link.send(frames)
                reply = link.receive(episode_id)
                if reply.status in ("busy", "denied", "reoffer"):
                    raise later(reply)
                return reply
            except Cut as cut:
                self._drop_link()
                self._update(last_error=str(cut), cuts=self._status.cuts + 1)
                if self._stop.wait(0.5):
                    raise Later("the uploader is stopping") from None

    @staticmethod
    def _read_chunk(path: Path, offer: Offer, offsets: list[int], index: int) -> Chunk:
        start, length = offer.chunk_range(index)
        buffer = bytearray(length)
        view, at = memoryview(buffer), 0
        for i, within, count in segments(offer.files, offsets, start, length):
            name = path / offer.files[i].path
            try:
                with open(name, "rb") as f:
                    f.seek(within)
                    got = f.readinto(view[at:at + count])
            except FileNotFoundError:
                raise EpisodeError(f"{name}: missing") from None
            if got != count:
                raise EpisodeError(f"{name}: shorter than its commit record says ({offer.files[i].size} bytes)")
            at += count
        return Chunk(offer.episode_id, index, hashlib.sha256(buffer).hexdigest(), buffer)

    def _apply_retention(self) -> None:
        """Delete what the policy allows among fully acknowledged episodes: commit marker first, so readers
        never see half an episode; a directory a crash left without its marker is finished next pass."""
        for episode_id in list(self.state.stored):
            path = self.store.episodes_dir / episode_id
            if not (path / COMMIT_MARKER).is_file():
                shutil.rmtree(path, ignore_errors=True)
                del self.state.stored[episode_id]
                self.state.save()
        policy = self.config.retention
        if not (policy.max_age_hours > 0 or policy.max_store_mb > 0):
            return
        episodes, uploaded = [], set()
        for episode_id in self.store.episode_ids():
            path = self.store.episodes_dir / episode_id
            if episode_id not in self._sizes:
                self._sizes[episode_id] = tree_bytes(path)
            episodes.append((episode_id, (path / COMMIT_MARKER).stat().st_mtime, self._sizes[episode_id]))
            entry = self.state.stored.get(episode_id)
            labels = path / LABELS
            current = hashlib.sha256(labels.read_bytes()).hexdigest() if labels.is_file() else ""
            if entry and entry["labels"] == current:
                uploaded.add(episode_id)
        for episode_id in policy.victims(episodes, uploaded, time.time()):
            path = self.store.episodes_dir / episode_id
            (path / COMMIT_MARKER).unlink()
            fsync_path(path)
            shutil.rmtree(path)
            del self.state.stored[episode_id]
            self._sizes.pop(episode_id, None)
            self.state.save()
            self._update(deleted=self._status.deleted + 1)
            log.info("deleted uploaded episode %s (retention)", episode_id)

