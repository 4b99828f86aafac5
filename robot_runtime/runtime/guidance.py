"""Value-guided execution: K candidate chunks from one batched policy call, the critic's favourite executed.

The policy samples; a chunk critic Q(observation, action chunk), trained by the cycle on the same
episodes and shipped as the bundle's `value.onnx`, ranks the K samples and the robot executes the
best (the planning idea of Cosmos Policy and EXPO's on-the-fly argmax-Q, at our scale). The K rows
go through the engine as one batch, so the cost is one bigger call of each graph, not K calls.
Whether to guide, K, and what to do with a bundle that has no critic are the robot's settings
(policy_node parameters), not the bundle's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CANDIDATES = 64
FALLBACKS = ("policy", "refuse")    # a bundle without value.onnx: run the policy alone, or refuse the bundle


class GuidanceError(ValueError):
    """Value guidance cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class ValueGuidance:
    enabled: bool = False
    candidates: int = 8
    fallback: str = "policy"

    def __post_init__(self):
        if type(self.candidates) is not int or not 1 <= self.candidates <= MAX_CANDIDATES:
            raise GuidanceError(f"value guidance candidates must be a whole number from 1 to {MAX_CANDIDATES}, "
                                f"got {self.candidates!r}")
        if self.fallback not in FALLBACKS:
            raise GuidanceError(f"value guidance fallback must be one of {FALLBACKS}, got {self.fallback!r}")


def best_candidate(chunks: np.ndarray, scores: np.ndarray) -> int:
    """The row of `chunks` [K, chunk, A] with the highest finite score among finite chunks; -1 if no chunk
    is finite. A critic that gives no finite score leaves the policy's first sample (row 0 of the finite)."""
    finite = np.all(np.isfinite(chunks.reshape(len(chunks), -1)), axis=1)
    if not finite.any():
        return -1
    ranked = np.where(finite & np.isfinite(scores), scores, -np.inf)
    return int(np.argmax(ranked)) if np.isfinite(ranked).any() else int(np.argmax(finite))
