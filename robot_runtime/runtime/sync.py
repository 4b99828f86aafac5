"""Pairing a state with the camera images taken at (about) the same time.

Robots publish joint states and camera frames on separate topics with their own
stamps, and they arrive in any order. A policy must act on a state together
with the frames taken within `tolerance_ns` of it: acting on the previous frame
because its callback ran first would feed it a stale picture.
"""
from __future__ import annotations

from collections import deque
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def nearest(items: dict[int, T] | deque, stamp: int, tolerance_ns: int) -> tuple[int, T] | None:
    """The (stamp, item) closest to `stamp` within the tolerance, from a dict or (stamp, item) deque."""
    pairs = items.items() if isinstance(items, dict) else items
    best = min(pairs, key=lambda p: abs(p[0] - stamp), default=None)
    if best is None or abs(best[0] - stamp) > tolerance_ns:
        return None
    return best


class ObservationSync:
    def __init__(self, cameras: list[str], tolerance_ns: int, history: int = 8):
        self.cameras = list(cameras)
        self.tolerance_ns = tolerance_ns
        self._images = {c: deque(maxlen=history) for c in self.cameras}
        self._pending: tuple[int, np.ndarray] | None = None

    def add_image(self, camera: str, stamp_ns: int, image: np.ndarray):
        if camera in self._images:
            self._images[camera].append((stamp_ns, image))
        return self._complete()

    def add_state(self, stamp_ns: int, state: np.ndarray):
        """Returns (stamp, state, images) if the frames are already here, else waits for them
        (a state still waiting is replaced: the caller answers it first, see `pending_stamp`)."""
        self._pending = (stamp_ns, state)
        return self._complete()

    def _complete(self):
        if self._pending is None:
            return None
        stamp, state = self._pending
        images = {}
        for camera in self.cameras:
            match = nearest(self._images[camera], stamp, self.tolerance_ns)
            if match is None:
                return None
            images[camera] = match[1]
        self._pending = None
        return stamp, state, images

    @property
    def pending_stamp(self) -> int | None:
        """The stamp of a state still waiting for its frames."""
        return None if self._pending is None else self._pending[0]

    def drop_pending(self) -> None:
        self._pending = None

    def stale_cameras(self, stamp_ns: int, max_age_ns: int) -> list[str]:
        """Cameras whose newest frame is older than `max_age_ns` before `stamp_ns` (or that sent none)."""
        return [c for c, q in self._images.items() if not q or stamp_ns - q[-1][0] > max_age_ns]

    def forget_before(self, stamp_ns: int) -> None:
        """A new episode began at `stamp_ns`: older frames must neither be used nor count as stale."""
        self._pending = None
        for camera, q in self._images.items():
            self._images[camera] = deque(((s, i) for s, i in q if s >= stamp_ns), maxlen=q.maxlen)

