"""The robot's link to the ingest server, shared by the uploader and the release client.

`Link` is one CURVE DEALER socket with a monitor that tells a drop or a refused key at once; `LinkWorker`
is the thread around it: keys loaded and checked, `start`/`stop`, a fresh socket after a cut, one pass per
interval that never lets the thread die, its status behind a lock. `Cut` means offer or ask again on a
fresh socket now; `Later` means the server cannot serve now (or the worker is stopping): the next pass.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from robot_runtime.fleet.keys import FleetKeyError, load_curve_keys
from robot_runtime.fleet.protocol import ProtocolError, Reply, parse_reply

log = logging.getLogger(__name__)
_MONITORED = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class Cut(Exception):
    """The connection dropped or went quiet: offer again on a fresh socket."""


class Later(Exception):
    """The server cannot take episodes now (busy, disk trouble), or the worker is stopping: next pass."""


class Denied(Later):
    """The server does not accept this robot's key (unknown or revoked): report it, try again next pass."""


def later(reply: Reply) -> Later:
    return (Denied if reply.status == "denied" else Later)(f"the server says {reply.status}: {reply.reason}")


class Link:
    """One CURVE DEALER socket to the server, with a monitor that tells a drop or a refused key at once."""

    def __init__(self, context: zmq.Context, config, keys: tuple[bytes, bytes, bytes],
                 stop: threading.Event):
        self.endpoint, self.timeout_ms, self.stop = config.endpoint, int(config.reply_timeout_s * 1000), stop
        self.socket = context.socket(zmq.DEALER)
        self.socket.curve_publickey, self.socket.curve_secretkey, self.socket.curve_serverkey = keys
        self.socket.linger = 0
        self.socket.heartbeat_ivl, self.socket.heartbeat_timeout = 2000, 6000
        self.monitor = self.socket.get_monitor_socket(_MONITORED)
        self.socket.connect(config.endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def send(self, frames: list) -> None:
        self.socket.send_multipart(frames, copy=False)

    def receive(self, episode_id: str) -> Reply:
        """The next reply about `episode_id` (or this robot); Cut on a drop or silence, Denied on a refused key."""
        return self.receive_with(parse_reply, lambda reply: reply.episode_id in (episode_id, ""))

    def receive_with(self, parse, accept):
        """The next message `parse` reads and `accept` takes (the release client's answers use their own parser)."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.is_set():
                raise Later("stopping")
            events = dict(self.poller.poll(min(left, 0.25) * 1000))
            if self.monitor in events:
                event = recv_monitor_message(self.monitor)["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    raise Cut(f"the connection to {self.endpoint} dropped")
                raise Denied(f"{self.endpoint} refused this robot's key in the handshake: put its public "
                             "certificate in the server's robot allowlist (or use the right server key)")
            if self.socket in events:
                try:
                    reply = parse(self.socket.recv_multipart())
                except ProtocolError as err:
                    raise Cut(f"{self.endpoint} sent a malformed reply ({err})") from None
                if accept(reply):
                    return reply
        raise Cut(f"no reply from {self.endpoint} in {self.timeout_ms / 1000:.0f} s")

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)



class LinkWorker:
    """A background thread that talks to the ingest server over one `Link`; subclasses give `pass_once` (one
    pass of work), `interval_s` and a status object with `last_error`. `config` carries endpoint, key_file,
    server_key_file, reply_timeout_s and nice."""

    thread_name = "fleet-link"

    def __init__(self, config, status):
        public, secret = load_curve_keys(config.key_file)
        if secret is None:
            raise FleetKeyError(f"{config.key_file}: holds no secret key; give the robot's .key_secret file")
        self._keys = (public, secret, load_curve_keys(config.server_key_file)[0])
        self.config = config
        self._context = zmq.Context()
        self._link: Link | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = status
        self._thread: threading.Thread | None = None

    def pass_once(self) -> None:
        raise NotImplementedError

    def interval_s(self) -> float:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end without waiting (a node stopping several workers asks them all first)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is not None and self._thread.is_alive():
            # A niced thread on a busy machine may not get the CPU in time; closing its sockets under it, or
            # term() waiting for them, would hang the shutdown. It is a daemon thread: it ends with the process.
            log.warning("%s: still busy %.0f s after the stop request; leaving it to end with the process",
                        self.thread_name, timeout)
            return
        self._drop_link()
        self._context.term()

    def _run(self) -> None:
        if self.config.nice:  # this thread only (Linux); ZeroMQ's I/O thread, started from here, inherits it
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.nice)
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception as err:  # never let the thread die: report, wait, try again
                log.exception("%s: pass failed", self.thread_name)
                self._update(last_error=f"{type(err).__name__}: {err}")
            self._stop.wait(self.interval_s())

    def _connect(self) -> Link:
        if self._link is None:
            self._link = Link(self._context, self.config, self._keys, self._stop)
        return self._link

    def _drop_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._status, key, value)
