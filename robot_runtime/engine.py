"""Inference engines behind one small interface, so the policy code never knows which runs.

`create_engine` picks one by the `engine` parameter:

- `tensorrt`: a TensorRT 10 engine built from the bundle's ONNX and cached on
  disk (see `tensorrt_engine`); refuses with the missing piece named when
  TensorRT, cuda-python or a GPU is absent.
- `onnxruntime`: ONNX Runtime on the best execution provider it has, TensorRT,
  then CUDA, then CPU.
- `auto`: TensorRT when it is present and builds the graph, else ONNX Runtime,
  with the reason kept in `engine.fallback_reason` so the node can say why it
  is not on TensorRT.

Warm-up at load happens once for every engine kind, through this interface, in
`PolicyRunner.load` (a blank observation), so the first control tick does not
pay for lazy initialisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

ENGINE_KINDS = ("auto", "tensorrt", "onnxruntime")
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class EngineError(Exception):
    """The engine cannot be created or run; the message names the cause and the fix."""


class InferenceEngine(Protocol):
    name: str  # what actually runs, e.g. "onnxruntime[CPUExecutionProvider]"
    fallback_reason: str  # why this is not the engine that was preferred; "" when it is

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named inputs; returns named outputs."""


def order_providers(available: list[str]) -> list[str]:
    """The ONNX Runtime providers to ask for, best first, among those this build has."""
    providers = [p for p in PROVIDER_PREFERENCE if p in available]
    if not providers:
        raise EngineError(f"ONNX Runtime offers none of {PROVIDER_PREFERENCE} (it has {available}); "
                          "reinstall onnxruntime")
    return providers


class OnnxRuntimeEngine:
    def __init__(self, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        requested = order_providers(ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle worker threads must sleep, not spin: they share the cores with the control thread.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=requested)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it ({err})") from None
        self.provider = self._session.get_providers()[0]
        self.name = f"onnxruntime[{self.provider}]"
        # ORT lists a provider its build has even when that provider's libraries fail to load at
        # session creation; it then runs on the next one, so report what it settled on.
        self.fallback_reason = "" if self.provider == requested[0] else (
            f"ONNX Runtime could not start {requested[0]} and runs on {self.provider}; its log says why")
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds)))


def create_engine(kind: str, onnx_path: Path, threads: int = 1, *, fp16: bool = False,
                  cache_dir: Path | None = None) -> InferenceEngine:
    """Engine factory chosen by the `engine` parameter.

    `fp16` and `cache_dir` (default `tensorrt_engine.default_cache_dir()`) apply to
    the TensorRT engine; `threads` to ONNX Runtime.
    """
    if kind not in ENGINE_KINDS:
        raise EngineError(f"engine '{kind}' is not one of {ENGINE_KINDS}")
    if kind == "onnxruntime":
        return OnnxRuntimeEngine(onnx_path, threads)
    from robot_runtime import tensorrt_engine  # here, not at the top: it imports EngineError from this module

    try:
        return tensorrt_engine.TensorRTEngine(onnx_path, tensorrt_engine.probe(), fp16=fp16, cache_dir=cache_dir)
    except EngineError as err:
        if kind == "tensorrt":
            raise
        engine = OnnxRuntimeEngine(onnx_path, threads)
        reasons = [f"engine 'auto' chose {engine.name}: {err}", engine.fallback_reason]
        engine.fallback_reason = "; ".join(r for r in reasons if r)
        return engine
