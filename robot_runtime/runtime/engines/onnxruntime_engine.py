"""ONNX Runtime on the best execution provider its build has: TensorRT, then CUDA, then CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_runtime.runtime.engines.base import EngineError

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


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
