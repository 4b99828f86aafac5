"""The robot's release client: the release the workstation assigns to this robot reaches its model store.

Every `poll_interval_s` it asks the ingest server (the same CURVE link as uploads, its own socket) which
release this robot should run. A release it has not tried yet is downloaded chunk by chunk, each chunk's
sha256 checked, into `<model root>.incoming/<content hash>/` beside the store (a cut resumes after the files
already complete), every file checked against the offer's table, and handed to `ModelStore.install`,
which verifies the signature, hashes and fit to this robot before anything becomes current. The
`InstallResult` (installed, or the refusal's cause and reason) goes back to the server; one the server
did not acknowledge is sent again on the next poll. What was tried is remembered until a restart only,
so a restarted robot (perhaps with a fixed trust store) tries a refused release once more.

`BundleSwitch` decides when policy_node may be pointed at the new current version: between episodes only.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from robot_runtime.files import sha256_file
from robot_runtime.fleet.link import Cut, Later, LinkWorker, later
from robot_runtime.fleet.model_store import InstallResult, ModelStore
from robot_runtime.fleet.protocol import (
    InstallReport,
    ReleaseChunk,
    ReleaseFetch,
    ReleaseOffer,
    ReleasePoll,
    Reply,
    file_offsets,
    parse_release_answer,
    segments,
)
from robot_runtime.messages import EpisodeEnd, EpisodeStart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseClientConfig:
    endpoint: str                 # the ingest server, tcp://HOST:PORT
    key_file: str                 # this robot's secret certificate
    server_key_file: str          # the server's public certificate
    poll_interval_s: float = 30.0
    reply_timeout_s: float = 30.0
    window: int = 4               # chunk requests in flight
    nice: int = 0                 # CPU priority of the polling thread (Linux, 0-19): the node's to choose, as
                                  # for the uploader (a descheduled thread holding the GIL stalls its process)


@dataclass
class ReleaseStatus:
    """A snapshot for /diagnostics and tests."""

    current: str = ""             # the model store's current version
    sequence: int = 0             # the highest sequence it accepted
    target: str = ""              # what the server says this robot should run ("" none)
    last: InstallResult | None = None
    refused: str = ""             # the last refusal, "<release>: <cause>: <reason>", until a later install
    last_error: str = ""
    downloading: str = ""


class ReleaseClient(LinkWorker):
    """Polls for this robot's release and installs it: `start()` a thread, or call `poll_once()`."""

    thread_name = "fleet-releases"

    def __init__(self, store: ModelStore, config: ReleaseClientConfig):
        state = store.state()
        super().__init__(config, ReleaseStatus(current=state.current or "", sequence=state.sequence))
        self.store = store
        self.incoming = Path(f"{store.root}.incoming")
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._tried: dict[str, InstallResult] = {}  # content hash -> what the store made of it
        self._unreported: InstallReport | None = None

    def status(self) -> ReleaseStatus:
        with self._lock:
            return replace(self._status)

    def poll_once(self) -> InstallResult | None:
        """Ask for this robot's release; download, install and report it if it is new here. None: nothing done."""
        try:
            if self._unreported is not None:
                self._report(self._unreported)
            state = self.store.state()
            offer = self._ask(ReleasePoll(state.current or "", state.sequence).frames(), ReleaseOffer)
            self._update(target=offer.name, last_error="")
            if not offer.name or offer.content_sha256 in self._tried or (
                    offer.name == state.current and offer.sequence <= state.sequence):
                return None
            self._update(downloading=offer.name)
            result = self.store.install(self._download(offer))
            shutil.rmtree(self.incoming / offer.content_sha256[:16], ignore_errors=True)
            self._tried[offer.content_sha256] = result
            state = self.store.state()
            self._update(current=state.current or "", sequence=state.sequence, last=result, downloading="",
                         refused="" if result.installed else f"{offer.name}: {result.cause}: {result.reason}")
            (log.info if result.installed else log.error)("release %s: %s", offer.name, result.reason)
            self._unreported = InstallReport(offer.name, offer.sequence, result.installed, result.cause,
                                             result.reason, state.current or "")
            self._report(self._unreported)
            return result
        except (Later, Cut) as err:
            self._drop_link()
            self._update(last_error=str(err), downloading="")
            if not self._stop.is_set():
                log.warning("release poll: %s", err)
            return None

    def pass_once(self) -> None:
        try:
            self.poll_once()
        except Exception:
            self._update(downloading="")
            raise

    def interval_s(self) -> float:
        return self.config.poll_interval_s

    def _report(self, report: InstallReport) -> None:
        self._ask(report.frames(), Reply)
        self._unreported = None

    def _ask(self, frames: list, kind: type):
        """One request and its answer of type `kind`; a refusal, busy or denied Reply instead is Later."""
        link = self._connect()
        link.send(frames)
        answer = link.receive_with(parse_release_answer, lambda a: isinstance(a, (kind, Reply)))
        if isinstance(answer, Reply) and not (kind is Reply and answer.status == "ack"):
            raise later(answer)
        return answer

    def _download(self, offer: ReleaseOffer) -> Path:
        """The offered release, complete and checked file by file, in the incoming directory."""
        target = self.incoming / offer.content_sha256[:16]
        for other in self.incoming.iterdir():
            if other != target:  # an earlier release's leftovers
                shutil.rmtree(other) if other.is_dir() else other.unlink()
        target.mkdir(exist_ok=True)
        offsets = file_offsets(offer.files)
        link, sent = self._connect(), self._complete_chunks(target, offer, offsets)
        received = sent
        while received < offer.chunks:
            while sent < offer.chunks and sent - received < self.config.window:
                link.send(ReleaseFetch(offer.content_sha256, sent).frames())
                sent += 1
            answer = link.receive_with(parse_release_answer, lambda a: isinstance(a, (ReleaseChunk, Reply)))
            if isinstance(answer, Reply):
                raise later(answer)
            if answer.content_sha256 != offer.content_sha256 or answer.index != received:
                continue  # a late answer from before a cut
            if len(answer.data) != offer.chunk_range(received)[1]:
                raise Cut(f"chunk {received} of {offer.name} has {len(answer.data)} bytes, not the offer's")
            self._write(target, offer, offsets, received, answer.data)
            received += 1
            if self._stop.is_set():
                raise Later("the release client is stopping")
        for f in offer.files:
            path = target / f.path
            path.touch()  # an empty file gets no chunk
            if path.stat().st_size != f.size or sha256_file(path) != f.sha256:
                shutil.rmtree(target)
                raise Later(f"{offer.name}/{f.path}: does not match the offer's table (changed while served?)")
        return target

    @staticmethod
    def _complete_chunks(target: Path, offer: ReleaseOffer, offsets: list[int]) -> int:
        """Chunks a cut download already holds: those before the first file that is not yet complete."""
        for f, start in zip(offer.files, offsets):
            path = target / f.path
            if not (path.is_file() and path.stat().st_size == f.size and sha256_file(path) == f.sha256):
                return start // offer.chunk_size
        return offer.chunks

    @staticmethod
    def _write(target: Path, offer: ReleaseOffer, offsets: list[int], index: int, data) -> None:
        at = 0
        for i, within, count in segments(offer.files, offsets, index * offer.chunk_size, len(data)):
            fd = os.open(target / offer.files[i].path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.pwrite(fd, data[at:at + count], within) != count:
                    raise OSError(f"{target / offer.files[i].path}: short write (disk full?)")
            finally:
                os.close(fd)
            at += count


class BundleSwitch:
    """When policy_node may be given a new `bundle_path`: only between episodes, never during one.

    Fed the episode events (`on_event`); `due(current)` says which path to set now, if any. A path is set once:
    `sent` marks a request in flight, `done` records the node's answer (a refused path is not asked again)."""

    def __init__(self):
        self.in_episode = False
        self.applied = ""      # the path policy_node last accepted or refused from us
        self.pending = ""      # a request in flight
        self.refusal = ""      # policy_node's reason, when it refused `applied`

    def on_event(self, event: EpisodeStart | EpisodeEnd) -> None:
        self.in_episode = isinstance(event, EpisodeStart)

    def due(self, current: Path | None) -> str | None:
        if current is None or self.in_episode or self.pending or str(current) == self.applied:
            return None
        return str(current)

    def sent(self, path: str) -> None:
        self.pending = path

    def done(self, path: str, accepted: bool | None, reason: str = "") -> None:
        """accepted None: no answer (no service yet): ask again later."""
        self.pending = ""
        if accepted is not None:
            self.applied, self.refusal = path, "" if accepted else reason
