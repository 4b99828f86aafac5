"""TensorRT 10 engine for a bundle's ONNX graph, built once per model, GPU and TensorRT version.

Building a TensorRT engine takes seconds to minutes, so the serialized engine is
cached on disk under a key made of everything an engine depends on: the ONNX
file's sha256, the GPU's name, the TensorRT version, the precision and the
batch profile. A cached engine is loaded, never rebuilt; one that is corrupt or
that this TensorRT cannot deserialize is rebuilt and replaced, and
`TensorRTEngine.cache_report` says which of these happened.

Three parts: discovery (`probe`: are TensorRT 10, cuda-python and a GPU here?),
the cache (`EngineKey`, `EngineCache`: plain files, tested on any machine) and
the GPU part (`build_serialized_engine`, `TensorRTEngine`), written against the
TensorRT 10 Python API and tested only where TensorRT and a GPU are present.
Importing this module imports neither TensorRT nor CUDA.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from robot_runtime.files import sha256_file, write_bytes_atomic, write_json_atomic
from robot_runtime.runtime.engines.base import EngineError

_OR_ONNXRUNTIME = "or set the engine parameter to 'onnxruntime'"


# -- discovery ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorRTSetup:
    """The modules and facts a TensorRT engine needs, as found by `probe`."""
    trt: ModuleType
    cudart: ModuleType
    version: str
    gpu_name: str


def probe() -> TensorRTSetup:
    """Find TensorRT 10, cuda-python and a CUDA GPU; EngineError names the first one missing and the fix."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:  # OSError: the module is there but libnvinfer is not
        raise EngineError(
            f"TensorRT is not usable: the `tensorrt` Python module does not import ({err}). Install TensorRT 10 "
            f"(JetPack 6 on Jetson; `pip install tensorrt` on a machine with an NVIDIA driver), {_OR_ONNXRUNTIME}"
        ) from None
    if trt.__version__.split(".")[0] != "10":
        raise EngineError(f"TensorRT {trt.__version__} is installed; this engine is written against the "
                          f"TensorRT 10 Python API. Install TensorRT 10, {_OR_ONNXRUNTIME}")
    cudart = _import_cudart()
    return TensorRTSetup(trt, cudart, trt.__version__, gpu_name(cudart))


def _import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # the older spelling, removed in cuda-python 13
        except ImportError as err:
            raise EngineError(
                f"TensorRT needs cuda-python for GPU memory and streams, and it does not import ({err}). "
                f"`pip install cuda-python` matching the CUDA major version, {_OR_ONNXRUNTIME}") from None
    return cudart


def _check(cudart: ModuleType, result: tuple, call: str):
    """Unpack a cuda-python `(error, value)` or `(error,)` result; EngineError naming the call on failure."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"CUDA {call} failed: {err}")
    return values[0] if values else None


def gpu_name(cudart: ModuleType) -> str:
    """Name of the current CUDA device; EngineError when none is visible."""
    try:
        count = _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except (EngineError, RuntimeError, OSError) as err:  # cuda-python raises when libcuda is missing
        count, problem = 0, f" ({err})"
    else:
        problem = ""
    if not count:
        raise EngineError(f"no CUDA GPU is visible{problem}. Check the NVIDIA driver (`nvidia-smi`) and "
                          f"CUDA_VISIBLE_DEVICES, {_OR_ONNXRUNTIME}")
    device = _check(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    name = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties").name
    return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()


def _native_handle(cuda_object) -> int:
    """The raw handle TensorRT wants for a cuda-python object (`int(obj)` is deprecated since 12.9.1)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(cuda_object)
    return get_cuda_native_handle(cuda_object)


# -- cache --------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/robot_runtime/engines`, i.e. `~/.cache/robot_runtime/engines` by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robot_runtime" / "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on: equal keys mean interchangeable engines."""
    onnx_sha256: str
    gpu_name: str
    tensorrt_version: str
    fp16: bool
    batch: int  # the optimization profile: min = opt = max batch size

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


class CacheEntryError(EngineError):
    """A cache entry exists but must not be used; it is rebuilt and replaced."""


class EngineCache:
    """Serialized engines in one directory: `<key digest>.engine` and a `<key digest>.json` sidecar.

    The sidecar records the key's parts and the engine's sha256 and is written
    last, so it doubles as the commit marker: an engine without its sidecar is an
    interrupted write, and one whose bytes disagree with it is corrupt.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        stem = self.directory / key.digest()
        return stem.with_suffix(".engine"), stem.with_suffix(".json")

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for `key`, or None if there is none; CacheEntryError if it is unusable."""
        engine_path, sidecar_path = self.paths(key)
        if not sidecar_path.exists():
            if engine_path.exists():
                raise CacheEntryError(f"{engine_path}: has no {sidecar_path.name} (an interrupted write)")
            return None
        try:
            sidecar = json.loads(sidecar_path.read_text())
            recorded_key, recorded_sha = sidecar["key"], sidecar["engine_sha256"]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            raise CacheEntryError(f"{sidecar_path}: unreadable ({type(err).__name__}: {err})") from None
        if recorded_key != asdict(key):
            raise CacheEntryError(f"{sidecar_path}: records key {recorded_key}, expected {asdict(key)}")
        try:
            blob = engine_path.read_bytes()
        except FileNotFoundError:
            raise CacheEntryError(f"{engine_path}: missing, though {sidecar_path.name} records it") from None
        if hashlib.sha256(blob).hexdigest() != recorded_sha:
            raise CacheEntryError(f"{engine_path}: sha256 differs from the one in {sidecar_path.name}; "
                                  "the file is corrupt")
        return blob

    def store(self, key: EngineKey, blob: bytes) -> Path:
        """Write the entry for `key` (replacing any), engine first and sidecar last; returns the engine path."""
        engine_path, sidecar_path = self.paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        sidecar_path.unlink(missing_ok=True)
        write_bytes_atomic(engine_path, blob)
        sidecar = {"key": asdict(key), "engine_sha256": hashlib.sha256(blob).hexdigest(),
                   "engine_bytes": len(blob), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(sidecar_path, sidecar)
        return engine_path


# -- GPU ----------------------------------------------------------------------------------

def build_serialized_engine(trt: ModuleType, logger, onnx_path: Path, fp16: bool, batch: int) -> bytes:
    """Parse the ONNX graph and build a serialized engine whose dynamic batch dimension is fixed to `batch`."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details given"
        raise EngineError(f"{onnx_path}: TensorRT's ONNX parser rejects it: {errors}. Re-export with operators "
                          f"TensorRT supports, {_OR_ONNXRUNTIME}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape[1:]:
            raise EngineError(f"{onnx_path}: input '{tensor.name}' has shape {shape}; only the first (batch) "
                              "dimension may be dynamic")
        if shape and shape[0] == -1:
            fixed = (batch, *shape[1:])
            profile.set_shape(tensor.name, fixed, fixed, fixed)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build an engine; the TensorRT log above says why")
    return bytes(serialized)


@dataclass(frozen=True)
class _Binding:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    device: int  # device pointer, allocated once at load


class TensorRTEngine:
    """A TensorRT engine with its device buffers bound once, running on its own CUDA stream.

    Shapes are fixed at load (batch `batch`), so `run` only copies inputs in,
    enqueues, and copies outputs out.
    """

    def __init__(self, onnx_path: Path, setup: TensorRTSetup, fp16: bool = False, cache_dir: Path | None = None,
                 batch: int = 1):
        trt, self._cudart = setup.trt, setup.cudart
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        self._stream = None
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        key = EngineKey(sha256_file(onnx_path), setup.gpu_name, setup.version, fp16, batch)
        cache = EngineCache(cache_dir or default_cache_dir())
        self._engine, self.cache_report = self._load_or_build(trt, Path(onnx_path), key, cache)
        self._context = self._engine.create_execution_context()
        self._bind(trt, batch)
        self.name = f"tensorrt[{setup.gpu_name}, {'fp16' if fp16 else 'fp32'}]"
        self.fallback_reason = ""

    def _load_or_build(self, trt: ModuleType, onnx_path: Path, key: EngineKey, cache: EngineCache):
        """The deserialized engine and a one-line report of whether it came from the cache."""
        engine_path = cache.paths(key)[0]
        try:
            blob = cache.load(key)
            problem = ""
        except CacheEntryError as err:
            blob, problem = None, str(err)
        if blob is not None:
            engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is not None:
                return engine, f"loaded cached engine {engine_path}"
            problem = f"{engine_path}: TensorRT {key.tensorrt_version} cannot deserialize it"
        started = time.monotonic()
        blob = build_serialized_engine(trt, self._logger, onnx_path, key.fp16, key.batch)
        report = f"built engine in {time.monotonic() - started:.1f} s"
        if problem:
            report += f", replacing a bad cache entry ({problem})"
        try:
            report += f"; cached at {cache.store(key, blob)}"
        except OSError as err:
            report += f"; NOT cached ({err}), so the next start builds it again"
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise EngineError(f"{onnx_path}: TensorRT built an engine it then cannot deserialize; see its log")
        return engine, report

    def _bind(self, trt: ModuleType, batch: int) -> None:
        engine, context, cudart = self._engine, self._context, self._cudart
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        for name in inputs:
            shape = tuple(engine.get_tensor_shape(name))
            if shape and shape[0] == -1 and not context.set_input_shape(name, (batch, *shape[1:])):
                raise EngineError(f"TensorRT refuses batch {batch} for input '{name}' {shape}")
        for name in names:  # output shapes resolve once every input shape is set
            shape = tuple(context.get_tensor_shape(name))
            if -1 in shape:
                raise EngineError(f"tensor '{name}' has shape {shape} after all inputs are set; "
                                  "data-dependent shapes are not supported")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            device = _check(cudart, cudart.cudaMalloc(max(int(np.prod(shape)) * dtype.itemsize, 1)), "cudaMalloc")
            (self._inputs if name in inputs else self._outputs).append(_Binding(name, shape, dtype, device))
            if not context.set_tensor_address(name, device):
                raise EngineError(f"TensorRT refuses the device address for tensor '{name}'")
        self._stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        unknown = sorted(set(feeds) - {b.name for b in self._inputs})
        if unknown:
            raise EngineError(f"feeds {unknown} are not inputs of this engine ({[b.name for b in self._inputs]})")
        hosts = []  # kept alive until the stream is synchronized
        for b in self._inputs:
            if b.name not in feeds:
                raise EngineError(f"no feed for input '{b.name}'")
            host = np.ascontiguousarray(feeds[b.name])
            if host.shape != b.shape or host.dtype != b.dtype:
                raise EngineError(f"input '{b.name}' is {host.dtype}{host.shape}, the engine takes {b.dtype}{b.shape}")
            hosts.append(host)
            _check(cudart, cudart.cudaMemcpyAsync(b.device, host.ctypes.data, host.nbytes,
                                                  cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                   "cudaMemcpyAsync (host to device)")
        if not self._context.execute_async_v3(_native_handle(stream)):
            raise EngineError("TensorRT execute_async_v3 failed; the TensorRT log says why")
        outputs = {b.name: np.empty(b.shape, b.dtype) for b in self._outputs}
        for b in self._outputs:
            _check(cudart, cudart.cudaMemcpyAsync(outputs[b.name].ctypes.data, b.device, outputs[b.name].nbytes,
                                                  cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                   "cudaMemcpyAsync (device to host)")
        _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return outputs

    def close(self) -> None:
        """Free the device buffers and the stream; the engine cannot run afterwards."""
        for b in self._inputs + self._outputs:
            self._cudart.cudaFree(b.device)
        self._inputs, self._outputs = [], []
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        self.close()
