"""`robot-runtime-ingest`: the workstation's ingest server. It binds; robots connect and upload episodes.

Who: ZeroMQ CURVE on a ROUTER socket. A robot's public key must be in the allowlist directory (made with
`robot-runtime-fleet keys robot NAME`), which is re-read whenever it changes, so a revoked key (moved to
revoked/) is refused at the handshake and, on a connection opened before, at its next message. A robot is
its key's name in the allowlist (the ZMQ User-Id), never a field of a message.

What: an upload is staged under <store>/incoming/<robot>/<id>.<content hash>/ (not staging/, which
`EpisodeStore.recover` salvages), chunk by chunk in order. After the last chunk the copy is flushed, opened
as an `Episode`, verified file by file against its commit record, the record checked against the robot's
offer, then renamed into episodes/ and cataloged; only then does the robot hear `stored`. A refused upload
is deleted and the reason sent back. An id already stored with the same content is acknowledged again; with
other content, refused.

How much: one upload in memory per robot, `window` chunks in flight, frames bounded by ZMQ_MAXMSGSIZE
before libzmq allocates them. One thread: robots are served in turn, the disk is the limit anyway.

Releases: the same socket answers a robot's release poll with the release assigned to it in the deployments
tables (`deployments.py`, in the catalog's database), serves that release's chunks to it and records its
install reports.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from robot_runtime.episode import COMMIT_MARKER, LABELS, UNRECORDED, Episode, EpisodeError, EpisodeStore
from robot_runtime.files import (
    UnsafeNameError,
    check_name,
    fsync_path,
    fsync_tree,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)
from robot_runtime.fleet.keys import FleetKeyError, list_keys, load_curve_keys
from robot_runtime.fleet.protocol import (
    MAX_HEADER_BYTES,
    Chunk,
    InstallReport,
    Labels,
    Offer,
    ProtocolError,
    ReleaseFetch,
    ReleasePoll,
    Reply,
    file_offsets,
    parse_request,
    segments,
)
from robot_runtime.improvement_loop.fleet.catalog import Catalog, repair, row_for
from robot_runtime.improvement_loop.fleet.deployments import Deployments, Distributor

log = logging.getLogger(__name__)
INCOMING = "incoming"
NOTE = ".received.json"  # written before an upload is renamed into the store: who sent it, for `repair`
DOMAIN = "fleet"
DEFAULT_BIND = "tcp://0.0.0.0:5870"


@dataclass(frozen=True)
class IngestConfig:
    store: str
    server_key_file: str           # the server's secret certificate
    robots_dir: str                # the allowlist: robot public certificates, <robot>.key
    bind: str = DEFAULT_BIND
    catalog: str = ""              # default <store>/catalog.sqlite
    max_chunk_bytes: int = 4 << 20
    window: int = 8
    max_uploads: int = 256         # uploads held in memory at once (one per robot)
    release_chunk_bytes: int = 1 << 20


class Allowlist:
    """Robot names by public key from a certificates directory, re-read when the directory changes."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FleetKeyError(f"{self.directory}: no robot allowlist here; make robot keys with "
                                f"`robot-runtime-fleet keys robot NAME --dir {self.directory}`")
        self.refused = 0
        self._lock = threading.Lock()
        self._names: dict[bytes, str] = {}
        self._stamp, self._read_at = -1, 0.0
        self._refresh()

    def _refresh(self) -> None:
        with self._lock:
            stamp = os.stat(self.directory).st_mtime_ns
            if stamp == self._stamp and self._read_at - stamp / 1e9 > 1.0:  # not changed since a safe read
                return
            names = {}
            for info in list_keys(self.directory):
                if info.kind == "curve" and not info.revoked:
                    try:
                        names[load_curve_keys(info.public_path)[0]] = check_name(info.name, "robot name")
                    except (FleetKeyError, UnsafeNameError) as err:
                        log.warning("allowlist: skipping %s: %s", info.public_path, err)
            self._names, self._stamp, self._read_at = names, stamp, time.time()

    def name_of(self, public_z85: bytes) -> str | None:
        self._refresh()
        return self._names.get(public_z85)

    def allows(self, name: str) -> bool:
        self._refresh()
        return bool(name) and name in self._names.values()

    def callback(self, domain: str, public_z85: bytes) -> bool:
        """ZAP: may this key connect? Runs in the authenticator's thread; a refusal is logged with the key."""
        if self.name_of(public_z85) is not None:
            return True
        self.refused += 1
        log.warning("refused a connection: CURVE key %s is not in %s (unknown or revoked)",
                    public_z85.decode(errors="replace"), self.directory)
        return False


class _Authenticator(ThreadAuthenticator):
    """ZAP in a thread, asking the allowlist; the User-Id it gives the connection is the key's name."""

    def __init__(self, context: zmq.Context, allowlist: Allowlist):
        super().__init__(context)
        self.allowlist = allowlist

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.allowlist.name_of(z85.encode(client_public_key)) or ""


@dataclass
class _Upload:
    robot: str
    offer: Offer
    staged: Path
    offsets: list[int]
    next: int = 0
    dirs: set[Path] = field(default_factory=set)


class IngestServer:
    def __init__(self, config: IngestConfig):
        self.config = config
        self.store = EpisodeStore(config.store)
        self.incoming = self.store.root / INCOMING
        self.incoming.mkdir(exist_ok=True)
        self.catalog = Catalog(config.catalog or self.store.root / "catalog.sqlite")
        self.deployments = Deployments(config.catalog or self.store.root / "catalog.sqlite")
        self.releases = Distributor(self.deployments, config.release_chunk_bytes)
        self.allowlist = Allowlist(config.robots_dir)
        public, secret = load_curve_keys(config.server_key_file)
        if secret is None:
            raise FleetKeyError(f"{config.server_key_file}: holds no secret key; give the server's .key_secret")
        self.uploads: dict[str, _Upload] = {}
        self.stats: collections.Counter = collections.Counter()
        self._warned: dict[str, float] = {}
        self.repaired = self._repair()
        self.context = zmq.Context()
        self.auth = _Authenticator(self.context, self.allowlist)
        self.auth.start()
        self.auth.configure_curve_callback(DOMAIN, credentials_provider=self.allowlist)
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.curve_server, self.socket.curve_publickey, self.socket.curve_secretkey = True, public, secret
        self.socket.zap_domain = DOMAIN.encode()
        self.socket.maxmsgsize = max(MAX_HEADER_BYTES, config.max_chunk_bytes) + (64 << 10)
        self.socket.rcvhwm = config.window + 4
        self.socket.heartbeat_ivl, self.socket.heartbeat_timeout = 2000, 6000
        self.socket.linger = 0
        self.socket.bind(config.bind)
        self.endpoint = self.socket.last_endpoint.decode()

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.socket.poll(200):
                self._handle(self.socket.recv_multipart(copy=False))

    def close(self) -> None:
        self.socket.close(linger=0)
        self.auth.stop()
        self.context.term()
        self.catalog.close()
        self.deployments.close()

    def _repair(self):
        notes = {p.name[: -len(NOTE)]: p for p in self.incoming.glob(f"*/*{NOTE}")}
        received = {}
        for episode_id, note in notes.items():
            try:
                received[episode_id] = (note.parent.name, note.stat().st_mtime)
            except OSError:
                pass
        done = repair(self.catalog, self.store, received)
        for note in notes.values():
            note.unlink(missing_ok=True)
        if done:
            log.warning("catalog repaired: cataloged %s, removed (episode gone) %s, relabeled %s, quarantined %s",
                        done.cataloged, done.removed, done.relabeled, done.quarantined)
        return done

    def _handle(self, frames: list[zmq.Frame]) -> None:
        route, body = frames[0], frames[1:]
        robot = ""
        try:
            robot = body[0].get("User-Id")
            if not self.allowlist.allows(robot):
                self.stats["denied"] += 1
                reply = Reply("denied", reason=f"this robot's key is not (or no longer) in {self.allowlist.directory}")
            else:
                request = parse_request([f.buffer for f in body])
                handler = {Offer: self._on_offer, Chunk: self._on_chunk, Labels: self._on_labels,
                           ReleasePoll: self.releases.on_poll, ReleaseFetch: self.releases.on_fetch,
                           InstallReport: self.releases.on_report}[type(request)]
                reply = handler(robot, request)
        except ProtocolError as err:
            self.stats["malformed"] += 1
            self._warn_malformed(robot, err)
            reply = Reply("refused", reason=f"malformed message: {err}")
        except Exception as err:  # a disk error, a bug: keep serving, the robot tries again
            log.exception("error handling a message from %r", robot)
            self.stats["errors"] += 1
            self.uploads.pop(robot, None)
            reply = Reply("busy", reason=f"server error ({type(err).__name__}: {err}); try again later")
        self.socket.send_multipart([route.bytes, *reply.frames()])

    def _warn_malformed(self, robot: str, err: ProtocolError) -> None:
        now = time.monotonic()
        if now - self._warned.get(robot, -1e9) > 10:
            self._warned[robot] = now
            log.warning("malformed message from %s (%d so far, logged at most every 10 s): %s",
                        robot, self.stats["malformed"], err)

    def _on_offer(self, robot: str, offer: Offer) -> Reply:
        self.stats["offers"] += 1
        if offer.chunk_size > self.config.max_chunk_bytes:
            return Reply("refused", offer.episode_id, reason=f"chunk_size {offer.chunk_size} is above this server's "
                         f"{self.config.max_chunk_bytes}: lower the robot's chunk_size")
        known = self._known(offer)
        if known:
            return known
        upload = self.uploads.get(robot)
        if upload is None or upload.offer != offer:
            if upload is None and len(self.uploads) >= self.config.max_uploads:
                return Reply("busy", offer.episode_id, reason=f"{len(self.uploads)} uploads in progress")
            staged = self.incoming / robot / f"{offer.episode_id}.{offer.content_sha256[:16]}"
            for other in (self.incoming / robot).glob(f"{offer.episode_id}.*"):
                if other != staged and other.is_dir():  # an earlier attempt with other content
                    shutil.rmtree(other)
            upload = self.uploads[robot] = _Upload(robot, offer, staged, file_offsets(offer.files))
            upload.next = self._staged_chunks(upload)
        if upload.next == offer.chunks:
            return self._finish(upload)
        return Reply("resume", offer.episode_id, next=upload.next, window=self.config.window)

    def _on_chunk(self, robot: str, chunk: Chunk) -> Reply:
        self.stats["chunks"] += 1
        upload = self.uploads.get(robot)
        if upload is None or upload.offer.episode_id != chunk.episode_id:
            return Reply("reoffer", chunk.episode_id)
        if chunk.index != upload.next:  # a duplicate from before a cut, or a gap: say where we are
            return Reply("ack" if chunk.index < upload.next else "resume", chunk.episode_id, next=upload.next,
                         window=self.config.window)
        start, length = upload.offer.chunk_range(chunk.index)
        if len(chunk.data) != length:
            del self.uploads[robot]
            return Reply("refused", chunk.episode_id,
                         reason=f"chunk {chunk.index} has {len(chunk.data)} bytes, the offer makes it {length}")
        self._write(upload, start, chunk.data)
        upload.next += 1
        if upload.next == upload.offer.chunks:
            return self._finish(upload)
        return Reply("ack", chunk.episode_id, next=upload.next)

    def _on_labels(self, robot: str, labels: Labels) -> Reply:
        episode_id = labels.episode_id
        row = self.catalog.get(episode_id)
        if row is None:
            return Reply("refused", episode_id, reason=f"no episode {episode_id} is stored here: upload it first")
        if row.robot != robot:
            return Reply("refused", episode_id, reason=f"{episode_id} came from {row.robot}; only it may relabel it")
        try:
            text = labels.data.decode()
        except UnicodeDecodeError:
            return Reply("refused", episode_id, reason=f"{LABELS}: not UTF-8 text")
        if text != row.labels:
            problem = self._label_problem(robot, self.store.episodes_dir / episode_id, labels.data)
            if problem:
                return Reply("refused", episode_id, reason=problem)
            write_bytes_atomic(self.store.episodes_dir / episode_id / LABELS, labels.data)
            self.catalog.set_labels(episode_id, text)
            self.stats["labels"] += 1
        return Reply("stored", episode_id)

    def _known(self, offer: Offer) -> Reply | None:
        """The answer for an id already stored (with this content: stored; other content: refused); else None."""
        row = self.catalog.get(offer.episode_id)
        if row is None and (self.store.episodes_dir / offer.episode_id / COMMIT_MARKER).is_file():
            self._repair()  # stored, but a crash came before the catalog
            row = self.catalog.get(offer.episode_id)
        if row is None:
            return None
        if row.content_sha256 == offer.content_sha256:
            self.stats["duplicates"] += 1
            return Reply("stored", offer.episode_id, content_sha256=row.content_sha256)
        return Reply("refused", offer.episode_id, reason=f"a different episode (content {row.content_sha256[:16]}, "
                     f"from {row.robot}) is already stored as {offer.episode_id}: record this one under a new id")

    def _staged_chunks(self, upload: _Upload) -> int:
        """How many leading chunks a previous attempt left staged (checked file by file against the offer)."""
        if not upload.staged.is_dir():
            return 0
        for f, start in zip(upload.offer.files, upload.offsets):
            path = upload.staged / f.path
            if not (path.is_file() and path.stat().st_size == f.size and sha256_file(path) == f.sha256):
                return start // upload.offer.chunk_size
        return upload.offer.chunks

    def _write(self, upload: _Upload, start: int, data: memoryview) -> None:
        at = 0
        for i, within, count in segments(upload.offer.files, upload.offsets, start, len(data)):
            path = upload.staged / upload.offer.files[i].path
            if path.parent not in upload.dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                upload.dirs.add(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.pwrite(fd, data[at:at + count], within) != count:
                    raise OSError(f"{path}: short write (disk full?)")
            finally:
                os.close(fd)
            at += count

    def _finish(self, upload: _Upload) -> Reply:
        """Validate the staged copy; if it is an episode, move it into the store and catalog it."""
        offer, staged = upload.offer, upload.staged
        del self.uploads[upload.robot]
        for f in offer.files:
            if f.size == 0:
                (staged / f.path).parent.mkdir(parents=True, exist_ok=True)
                (staged / f.path).touch()
        episode, problem = self._validate(staged, offer)
        if problem:
            shutil.rmtree(staged)
            self.stats["refused"] += 1
            log.warning("refused episode %s from %s: %s", offer.episode_id, upload.robot, problem)
            return Reply("refused", offer.episode_id, reason=problem)
        known = self._known(offer)  # another robot stored it meanwhile
        if known:
            shutil.rmtree(staged)
            return known
        row = row_for(episode, upload.robot, offer.content_sha256, time.time())
        note = self.incoming / upload.robot / f"{offer.episode_id}{NOTE}"
        write_json_atomic(note, {"robot": upload.robot, "received_at": row.received_at})
        os.rename(staged, self.store.episodes_dir / offer.episode_id)
        fsync_path(self.store.episodes_dir)
        fsync_path(staged.parent)
        self.catalog.add(row)
        note.unlink()
        self.stats["stored"] += 1
        log.info("stored episode %s from %s (%d bytes)", offer.episode_id, upload.robot, offer.total_bytes)
        return Reply("stored", offer.episode_id, content_sha256=offer.content_sha256)

    @staticmethod
    def _validate(staged: Path, offer: Offer) -> tuple[Episode | None, str]:
        """(the episode, '') if the staged copy satisfies the contract and is what was offered, else (None, why)."""
        fsync_tree(staged)
        try:
            episode = Episode(staged)
            problems = episode.verify()
        except EpisodeError as err:
            return None, str(err).replace(str(staged), offer.episode_id)
        if episode.episode_id != offer.episode_id:
            problems.append(f"attrs.episode_id: {episode.episode_id!r}, offered as {offer.episode_id!r}")
        if episode.record.files is not None:
            offered = {f.path: {"bytes": f.size, "sha256": f.sha256} for f in offer.files if f.path not in UNRECORDED}
            if offered != episode.record.files:
                problems.append(f"{COMMIT_MARKER}: its file table is not the one the robot offered")
        else:  # schema 1: no checksums in the record, so check against the offer
            problems += [f"{f.path}: differs from the offer" for f in offer.files
                         if sha256_file(staged / f.path) != f.sha256]
        return (None, f"{offer.episode_id}: " + "; ".join(problems)) if problems else (episode, "")

    def _label_problem(self, robot: str, episode: Path, data: bytes) -> str:
        """What the episode contract says about `data` as this episode's labels.json ('' if fine), checked on a
        probe of hard links to its metadata, so the stored episode never holds an unchecked label."""
        probe = self.incoming / robot / f".labels-check-{episode.name}"
        shutil.rmtree(probe, ignore_errors=True)
        try:
            for name in [COMMIT_MARKER, *(p.relative_to(episode).as_posix() for p in episode.rglob("zarr.json"))]:
                (probe / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(episode / name, probe / name)
            (probe / LABELS).write_bytes(data)
            Episode(probe)
            return ""
        except EpisodeError as err:
            return str(err).replace(str(probe), episode.name)
        finally:
            shutil.rmtree(probe, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="the fleet's episode store (training reads it)")
    parser.add_argument("--robots", required=True, help="allowlist: directory of robot public certificates")
    parser.add_argument("--server-key", required=True, help="this server's secret certificate (.key_secret)")
    parser.add_argument("--bind", default=DEFAULT_BIND, help=f"where robots connect (default {DEFAULT_BIND})")
    parser.add_argument("--catalog", default="", help="SQLite catalog file (default STORE/catalog.sqlite)")
    parser.add_argument("--max-chunk-mb", type=float, default=4.0, help="largest chunk a robot may send")
    parser.add_argument("--window", type=int, default=8, help="chunks a robot may have in flight")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = IngestConfig(args.store, args.server_key, args.robots, args.bind, args.catalog,
                          int(args.max_chunk_mb * (1 << 20)), args.window)
    try:
        server = IngestServer(config)
    except (FleetKeyError, EpisodeError, ValueError, OSError, zmq.ZMQError) as err:
        print(f"robot-runtime-ingest: {err}", file=sys.stderr)
        sys.exit(1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on {server.endpoint}", flush=True)
    try:
        server.serve(stop)
    finally:
        log.info("stopping: %s", dict(server.stats))
        server.close()


if __name__ == "__main__":
    main()
