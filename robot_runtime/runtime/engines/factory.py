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

from robot_runtime.runtime.engines import tensorrt_engine
from robot_runtime.runtime.engines.base import ENGINE_KINDS, EngineError, InferenceEngine
from robot_runtime.runtime.engines.onnxruntime_engine import OnnxRuntimeEngine


def create_engine(kind: str, onnx_path: Path, threads: int = 1, *, fp16: bool = False,
                  cache_dir: Path | None = None, batch: int = 1) -> InferenceEngine:
    """Engine factory chosen by the `engine` parameter.

    `fp16`, `cache_dir` (default `tensorrt_engine.default_cache_dir()`) and `batch` (the rows
    of every call: K candidate chunks under value guidance) apply to the TensorRT engine, whose
    shapes are fixed at build; `threads` to ONNX Runtime, which takes any batch.
    """
    if kind not in ENGINE_KINDS:
        raise EngineError(f"engine '{kind}' is not one of {ENGINE_KINDS}")
    if kind == "onnxruntime":
        return OnnxRuntimeEngine(onnx_path, threads)
    try:
        return tensorrt_engine.TensorRTEngine(onnx_path, tensorrt_engine.probe(), fp16=fp16, cache_dir=cache_dir,
                                              batch=batch)
    except EngineError as err:
        if kind == "tensorrt":
            raise
        engine = OnnxRuntimeEngine(onnx_path, threads)
        reasons = [f"engine 'auto' chose {engine.name}: {err}", engine.fallback_reason]
        engine.fallback_reason = "; ".join(r for r in reasons if r)
        return engine
