"""A small fleet on loopback for the fleet tests: keys, robot stores with episodes, an ingest server in a
thread or in its own process (for kill -9), and the invariant every test checks: store == catalog."""
from __future__ import annotations

import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.fleet import keys
from robot_runtime.fleet.uploader import Uploader, UploaderConfig
from robot_runtime.improvement_loop.fleet.catalog import Catalog
from robot_runtime.improvement_loop.fleet.ingest import IngestConfig, IngestServer

LAYOUT = EpisodeLayout({"front": (24, 32)}, ("x", "y"), ("vx", "vy"))


@dataclass(frozen=True)
class Keys:
    server_secret: Path
    server_public: Path
    robots: Path  # the allowlist directory (public and secret files, as the CLI writes them)

    def robot(self, name: str) -> Path:
        if not (self.robots / f"{name}.key_secret").exists():
            keys.create_curve_certificate(self.robots, name)
        return self.robots / f"{name}.key_secret"


def make_keys(root: Path, robots=("r1",)) -> Keys:
    public, secret = keys.create_curve_certificate(root / "server", "ingest")
    made = Keys(secret, public, root / "robots")
    made.robots.mkdir(parents=True, exist_ok=True)
    for name in robots:
        made.robot(name)
    return made


def write_episode(store: EpisodeStore, episode_id: str, steps: int = 60, seed: int = 0, robot: str = "r1",
                  noise: bool = True) -> Path:
    """Random frames (they do not compress: ~2.3 kB a step) so a few steps make several chunks."""
    rng = np.random.default_rng(seed)
    meta = EpisodeMetadata(task="push the block", robot_id=robot, control_rate_hz=20.0, episode_id=episode_id,
                           policy_version="m@1")
    writer = store.writer(LAYOUT, meta, chunk_steps=20)
    for t in range(steps):
        image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) if noise else np.zeros((24, 32, 3), np.uint8)
        writer.append(Step(1000.0 + 0.05 * t, {"front": image}, rng.normal(size=2).astype(np.float32),
                           rng.normal(size=2).astype(np.float32), intervention=t % 5 == 0))
    return writer.commit("success")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uploader(store: EpisodeStore, made: Keys, robot: str, endpoint: str, **config) -> Uploader:
    """Robot `robot`'s uploader (its key made on first use), with test-sized chunks and timeouts."""
    config = {"chunk_size": 16 << 10, "reply_timeout_s": 5.0, "scan_interval_s": 0.1,
              "server_key_file": str(made.server_public), **config}
    return Uploader(store, UploaderConfig(endpoint, config.pop("key_file", None) or str(made.robot(robot)),
                                          **config))


class ServerThread:
    """An IngestServer serving in a thread of this process."""

    def __init__(self, store: Path, made: Keys, bind: str = "tcp://127.0.0.1:*", **config):
        self.server = IngestServer(IngestConfig(str(store), str(made.server_secret), str(made.robots), bind,
                                                **config))
        self.endpoint = self.server.endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.server.serve, args=(self._stop,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *_) -> None:
        self.close()


class ServerProcess:
    """`python -m ...ingest` as its own process, on a fixed port so robots find it again after a restart."""

    def __init__(self, store: Path, made: Keys, port: int, log: Path, *extra: str):
        self.command = [sys.executable, "-m", "robot_runtime.improvement_loop.fleet.ingest", "--store", str(store),
                        "--robots", str(made.robots), "--server-key", str(made.server_secret),
                        "--bind", f"tcp://127.0.0.1:{port}", *extra]
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log, text=True,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()
        if not line.startswith("listening on") or time.monotonic() > deadline:
            raise RuntimeError(f"ingest server did not start: {line!r}; see {self.log}")
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def census(store_root: Path, sent: dict[str, str]) -> dict:
    """Lost, duplicated and stray episodes of a fleet store against what robots sent (id -> content hash),
    and whether its catalog lists exactly the store's episodes with the same content."""
    store = EpisodeStore(store_root)
    stored = set(store.episode_ids())
    catalog = Catalog(store_root / "catalog.sqlite")
    rows = {row.episode_id: row for row in catalog.rows()}
    catalog.close()
    contents = [row.content_sha256 for row in rows.values()]
    return {"lost": len(set(sent) - stored), "stray": len(stored - set(sent)),
            "duplicated": len(contents) - len(set(contents)),
            "catalog_equals_store": set(rows) == stored and all(rows[i].content_sha256 == sent[i] for i in rows),
            "readable": all(store.open(i).verify() == [] for i in stored)}


class Relay:
    """A TCP relay on loopback between robots and the server that can cut every connection it carries
    (with a reset, as a dropped link does) once `cut_after` more robot-to-server bytes have gone through."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peers: dict[socket.socket, socket.socket] = {}
        self.upstream: set[socket.socket] = set()
        self.budget: int | None = None  # robot -> server bytes until the next cut
        self.cuts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut_after(self, nbytes: int) -> None:
        self.budget = nbytes

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.05):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj in self.peers:
                    self._pump(key.fileobj)

    def _accept(self) -> None:
        robot, _ = self.listener.accept()
        try:
            server = socket.create_connection(self.target, timeout=1)
        except OSError:
            robot.close()
            return
        self.peers[robot], self.peers[server] = server, robot
        self.upstream.add(server)
        for s in (robot, server):
            s.setblocking(True)
            self.selector.register(s, selectors.EVENT_READ)

    def _pump(self, source: socket.socket) -> None:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(source)
            return
        target = self.peers[source]
        if target in self.upstream and self.budget is not None:
            if len(data) >= self.budget:
                target.sendall(data[: self.budget])
                self.budget = None
                self.cuts += 1
                for s in list(self.peers):
                    self._close(s)
                return
            self.budget -= len(data)
        try:
            target.sendall(data)
        except OSError:
            self._close(source)

    def _close(self, s: socket.socket) -> None:
        other = self.peers.pop(s, None)
        for sock in (s, other):
            if sock is None:
                continue
            self.peers.pop(sock, None)
            self.upstream.discard(sock)
            if sock.fileno() == -1:
                continue
            self.selector.unregister(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in list(self.peers):
            self._close(s)
        self.listener.close()
