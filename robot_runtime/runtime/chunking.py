"""Turns action chunks into one command per control tick.

The policy predicts `chunk_length` actions; the robot executes the first
`execution_horizon` of them and then asks for a fresh chunk from the newest
observation (receding horizon), so it stays closed-loop without paying for an
inference every tick.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class ActionChunkQueue:
    def __init__(self, execution_horizon: int):
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be >= 1")
        self.execution_horizon = execution_horizon
        self._actions: deque[np.ndarray] = deque()

    def needs_chunk(self) -> bool:
        return not self._actions

    def push(self, chunk: np.ndarray) -> None:
        """Replace whatever is left with the first `execution_horizon` actions of a new chunk."""
        self._actions = deque(np.asarray(chunk)[: self.execution_horizon])

    def pop(self) -> np.ndarray:
        return self._actions.popleft()

    def clear(self) -> None:
        self._actions.clear()
