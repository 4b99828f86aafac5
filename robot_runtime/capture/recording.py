"""Episode recording off the control path: a writer thread behind a bounded queue.

Callers (the recorder node's ROS callbacks) never block on disk. Steps that do
not fit in the queue are dropped and counted, never silently lost; begin/end
messages always get through. A write error ends the episode in progress without
committing it (it stays in staging for start-up recovery) and is reported.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.episode import (
    CHUNK_STEPS,
    EpisodeError,
    EpisodeLayout,
    EpisodeMetadata,
    EpisodeStore,
    EpisodeWriter,
    Step,
)
from robot_runtime.runtime.realtime import below_control


@dataclass
class RecorderStats:
    dropped_steps: int = 0
    written_steps: int = 0
    rejected_steps: int = 0
    committed: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class AsyncRecorder:
    def __init__(self, store: EpisodeStore, queue_size: int = 1000, chunk_steps: int = CHUNK_STEPS,
                 on_commit: Callable[[Path, EpisodeWriter], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.store = store
        self.stats = RecorderStats()
        self.chunk_steps = chunk_steps
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._on_commit = on_commit
        self._on_error = on_error
        self._writer: EpisodeWriter | None = None
        self._dropped_this_episode = 0
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    def begin(self, layout: EpisodeLayout, metadata: EpisodeMetadata,
              codecs: dict[str, CameraCodec] | None = None) -> None:
        self._queue.put(("begin", (layout, metadata, codecs)))

    def add(self, step: Step) -> bool:
        try:
            self._queue.put_nowait(("step", step))
            return True
        except queue.Full:
            self.stats.dropped_steps += 1
            self._dropped_this_episode += 1
            return False

    def end(self, outcome: str, end_reason: str = "", extra: dict | None = None, truncated: bool = False,
            policy_version: str | None = None) -> None:
        """Commit the episode; `policy_version`, when given, replaces the one it began with (the bundle
        that actually proposed its actions: a hot swap lands at the episode's first tick)."""
        self._queue.put(("end", (outcome, end_reason, dict(extra or {}), truncated, policy_version)))

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def flush(self) -> None:
        """Block until everything queued so far is on disk."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(("stop", None))
        self._thread.join()

    def _fail(self, message: str) -> None:
        self.stats.errors.append(message)
        self._writer = None
        if self._on_error:
            self._on_error(message)

    def _handle(self, kind: str, payload) -> None:
        if kind == "begin":
            if self._writer is not None:
                self._fail(f"episode {self._writer.metadata.episode_id} began again before it ended; "
                           "left uncommitted in staging")
            layout, metadata, codecs = payload
            self._dropped_this_episode = 0
            self._writer = self.store.writer(layout, metadata, self.chunk_steps, codecs)
        elif kind == "step" and self._writer is not None:
            try:
                self._writer.append(payload)
            except EpisodeError as err:  # a malformed step is rejected; the episode goes on
                self.stats.rejected_steps += 1
                self.stats.errors.append(str(err))
                return
            self.stats.written_steps += 1
        elif kind == "end" and self._writer is not None:
            outcome, reason, extra, truncated, policy_version = payload
            writer, self._writer = self._writer, None
            if writer.steps == 0:
                writer.discard()
                return
            if policy_version is not None:
                writer.metadata.policy_version = policy_version
            extra["dropped_steps"] = self._dropped_this_episode
            path = writer.commit(outcome, reason, extra, truncated)
            self.stats.committed.append(path)
            if self._on_commit:
                self._on_commit(path, writer)

    def _run(self) -> None:
        below_control()  # ahead of busy processes (a full queue drops frames); the subscribers stay ahead of it
        while True:
            kind, payload = self._queue.get()
            try:
                if kind == "stop":
                    return
                self._handle(kind, payload)
            except Exception as err:  # disk full, bad step: report, keep the thread alive
                self._fail(f"{kind}: {type(err).__name__}: {err}")
            finally:
                self._queue.task_done()
