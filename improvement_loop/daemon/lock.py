"""One cycle at a time: an fcntl lock on WORK/daemon.lock, with its owner recorded for `status`.

The kernel drops an flock when its process dies, however it dies (kill -9 included), so a crashed daemon
never blocks the next one; the owner row in daemon_state is only informative and is overwritten by the
next holder. On one host this is exact; a work directory shared over NFS needs a lock of the shared
database instead (the catalog is local by design, see catalog.py).
"""
from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from pathlib import Path

from robot_runtime.improvement_loop.daemon.records import daemon_state, set_lock_owner

LOCK_FILE = "daemon.lock"


class LockBusy(RuntimeError):
    """Another process runs a cycle; the message names it."""


class CycleLock:
    def __init__(self, work: str | Path, conn: sqlite3.Connection):
        self.path = Path(work) / LOCK_FILE
        self.conn = conn
        self._fd: int | None = None

    def acquire(self) -> CycleLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            s = daemon_state(self.conn)
            raise LockBusy(f"{self.path}: a cycle is running in pid {s.lock_pid} on {s.lock_host}; wait for it "
                           "(robot-runtime-daemon status)") from None
        self._fd = fd
        set_lock_owner(self.conn, os.getpid(), socket.gethostname())
        return self

    def release(self) -> None:
        if self._fd is not None:
            set_lock_owner(self.conn, None, None)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CycleLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
