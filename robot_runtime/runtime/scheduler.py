"""Which action the robot executes at each control tick, across overlapping chunks.

Ticks count observations. A chunk computed from the observation of tick `j`
holds the actions for ticks j, j+1, ...; when it arrives at tick `k >= j`
(inference took k - j ticks) its first k - j actions are already due and are
skipped, so the robot never replays the past (latency compensation). From
there the new chunk is blended with what the previous chunk had planned for
the same ticks, its weight rising over `blend_steps`, so the executed
trajectory is continuous at the handover instead of jumping to a fresh plan
(the runtime half of real-time chunking; a graph that can inpaint a committed
prefix makes the two agree even before blending).
"""
from __future__ import annotations

import numpy as np


class ChunkScheduler:
    def __init__(self, execution_horizon: int, blend_steps: int = 0):
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be >= 1")
        self.execution_horizon = execution_horizon
        self.blend_steps = blend_steps
        self.reset()

    def reset(self) -> None:
        self._chunk: np.ndarray | None = None
        self._start = 0  # tick of the observation the current chunk was computed from

    def remaining(self, tick: int) -> int:
        """Actions left in the current chunk from `tick` on (0 when there is none)."""
        if self._chunk is None:
            return 0
        return max(0, len(self._chunk) - (tick - self._start))

    def executed(self, tick: int) -> int:
        return 0 if self._chunk is None else tick - self._start

    def wants_chunk(self, tick: int, lead_ticks: int = 0) -> bool:
        """Time to start inference so that a new chunk lands once `execution_horizon` actions ran."""
        return self._chunk is None or self.executed(tick) + lead_ticks >= self.execution_horizon

    def committed(self, tick: int, count: int) -> np.ndarray:
        """The actions the current chunk plans for ticks tick .. tick+count-1 (fewer if it runs out)."""
        if self._chunk is None:
            return np.zeros((0, 0), np.float32)
        offset = tick - self._start
        return self._chunk[max(0, offset): max(0, offset + count)]

    def accept(self, chunk: np.ndarray, obs_tick: int, now_tick: int) -> int:
        """Adopt a chunk computed at `obs_tick`, arriving at `now_tick`; returns actions skipped."""
        chunk = np.asarray(chunk, np.float32)
        skipped = now_tick - obs_tick
        if skipped >= len(chunk):
            return skipped  # arrived too late to be of any use; keep the current plan
        fresh = chunk[skipped:].copy()
        old = self.committed(now_tick, min(self.blend_steps, len(fresh)))
        for m in range(len(old)):  # weight of the old plan falls from ~1 to 0 over blend_steps
            w = (len(old) - m) / (len(old) + 1)
            fresh[m] = w * old[m] + (1 - w) * fresh[m]
        self._chunk, self._start = fresh, now_tick
        return skipped

    def action(self, tick: int) -> np.ndarray | None:
        """The action for `tick`, or None if the plan has run out (inference missed its deadline)."""
        if self._chunk is None:
            return None
        offset = tick - self._start
        return self._chunk[offset] if 0 <= offset < len(self._chunk) else None
