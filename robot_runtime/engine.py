"""Inference engines behind one small interface, so the policy code never knows which runs.

ONNX Runtime (CPU here; it prefers the TensorRT, then CUDA, then CPU execution
providers where they exist). Engines warm up at load so the first control tick
does not pay for lazy initialisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

ENGINE_KINDS = ("auto", "onnxruntime")
_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class EngineError(Exception):
    pass


class InferenceEngine(Protocol):
    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named inputs; returns named outputs."""


class OnnxRuntimeEngine:
    def __init__(self, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in _PROVIDER_PREFERENCE if p in available]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it ({err})") from None
        self.provider = self._session.get_providers()[0]
        self.name = f"onnxruntime[{self.provider}]"
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds)))


def create_engine(kind: str, onnx_path: Path, threads: int = 1) -> InferenceEngine:
    """Engine factory chosen by the `engine` parameter."""
    if kind not in ENGINE_KINDS:
        raise EngineError(f"engine '{kind}' is not one of {ENGINE_KINDS}")
    return OnnxRuntimeEngine(onnx_path, threads)
