"""The interface every inference engine offers, and the error they all raise.

The policy code talks to this interface only, so it never knows whether ONNX
Runtime or TensorRT runs the graph.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

ENGINE_KINDS = ("auto", "tensorrt", "onnxruntime")


class EngineError(Exception):
    """The engine cannot be created or run; the message names the cause and the fix."""


class InferenceEngine(Protocol):
    name: str  # what actually runs, e.g. "onnxruntime[CPUExecutionProvider]"
    fallback_reason: str  # why this is not the engine that was preferred; "" when it is

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named inputs; returns named outputs."""
