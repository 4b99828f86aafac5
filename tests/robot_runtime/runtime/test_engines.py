"""Engines: chosen by parameter, same answers as ONNX Runtime itself, TensorRT engines cached by key.

The TensorRT tests at the bottom run only where TensorRT 10, cuda-python and a
CUDA GPU are present and skip elsewhere with the missing piece as the reason;
everything else runs on any machine.
"""
import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from robot_runtime.files import sha256_file
from robot_runtime.runtime.engines.base import EngineError
from robot_runtime.runtime.engines.factory import create_engine
from robot_runtime.runtime.engines.onnxruntime_engine import OnnxRuntimeEngine, order_providers
from robot_runtime.runtime.engines.tensorrt_engine import (
    CacheEntryError,
    EngineCache,
    EngineKey,
    TensorRTEngine,
    default_cache_dir,
    probe,
)
from robot_runtime.runtime.policy import PolicyRunner

from bundle_factory import make_reference_bundle


def _tensorrt_missing() -> str:
    try:
        probe()
    except EngineError as err:
        return str(err)
    return ""


TENSORRT_MISSING = _tensorrt_missing()
needs_tensorrt = pytest.mark.skipif(bool(TENSORRT_MISSING),
                                    reason=f"needs TensorRT 10, cuda-python and a CUDA GPU: {TENSORRT_MISSING}")
without_tensorrt = pytest.mark.skipif(not TENSORRT_MISSING,
                                      reason="TensorRT and a GPU are present, so there is no fallback to exercise")

KEY = EngineKey(onnx_sha256="ab" * 32, gpu_name="Orin", tensorrt_version="10.3.0", fp16=False, batch=1)


@pytest.fixture
def bundle(tmp_path):
    """Advantage conditioned, so the graph also has the scalar `beta` input."""
    return make_reference_bundle(tmp_path / "b", conditioning="advantage")


def random_feeds(bundle, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in bundle.manifest.graph_inputs():
        if t.elem == "uint8":
            feeds[t.name] = rng.integers(0, 256, t.shape_for(1), dtype=np.uint8)
        elif t.elem == "int64":
            feeds[t.name] = np.zeros(t.shape_for(1), np.int64)
        else:
            feeds[t.name] = rng.standard_normal(t.shape_for(1)).astype(t.dtype)
    return feeds


# -- selection and ONNX Runtime ---------------------------------------------------------------

def test_onnxruntime_engine_gives_what_a_plain_session_gives(bundle):
    engine = create_engine("onnxruntime", bundle.policy_path)
    session = ort.InferenceSession(str(bundle.policy_path),
                                   providers=order_providers(ort.get_available_providers()))
    feeds = random_feeds(bundle)
    np.testing.assert_array_equal(engine.run(feeds)["actions"], session.run(["actions"], feeds)[0])
    assert engine.name == f"onnxruntime[{session.get_providers()[0]}]"
    assert engine.fallback_reason == ""


@pytest.mark.parametrize("available, chosen", [
    (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    (["CPUExecutionProvider", "CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_providers_are_asked_for_tensorrt_then_cuda_then_cpu(available, chosen):
    assert order_providers(available) == chosen


def test_no_usable_provider_is_an_error():
    with pytest.raises(EngineError, match="none of"):
        order_providers(["AzureExecutionProvider"])


def test_onnxruntime_names_a_file_it_cannot_load(tmp_path):
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(EngineError, match="ONNX Runtime cannot load it") as err:
        OnnxRuntimeEngine(path)
    assert str(path) in str(err.value)


def test_unknown_engine_kind(bundle):
    with pytest.raises(EngineError, match=r"'tensorflow' is not one of \('auto', 'tensorrt', 'onnxruntime'\)"):
        create_engine("tensorflow", bundle.policy_path)


@without_tensorrt
def test_auto_falls_back_to_onnxruntime_and_says_why(bundle):
    engine = create_engine("auto", bundle.policy_path)
    assert engine.name.startswith("onnxruntime[")
    assert engine.fallback_reason == f"engine 'auto' chose {engine.name}: {TENSORRT_MISSING}"


@without_tensorrt
def test_explicit_tensorrt_names_the_missing_piece_and_the_fix(bundle):
    with pytest.raises(EngineError) as err:
        create_engine("tensorrt", bundle.policy_path)
    message = str(err.value)
    assert any(piece in message for piece in
               ("`tensorrt` Python module", "TensorRT 10 Python API", "cuda-python", "no CUDA GPU"))
    assert "set the engine parameter to 'onnxruntime'" in message


@without_tensorrt
def test_policy_runner_reports_the_fallback(bundle, tmp_path):
    runner = PolicyRunner.load(bundle.path, engine="auto", fp16=True, cache_dir=tmp_path / "engines")
    assert runner.engine.name.startswith("onnxruntime[") and TENSORRT_MISSING in runner.engine.fallback_reason
    assert not (tmp_path / "engines").exists()  # ONNX Runtime builds nothing to cache


# -- TensorRT engine cache --------------------------------------------------------------------

def test_cache_key_is_stable():
    same = EngineKey("ab" * 32, "Orin", "10.3.0", False, 1)
    assert same.digest() == KEY.digest()
    # A changed digest orphans every cached engine on every robot: change it only on purpose.
    assert KEY.digest() == hashlib.sha256(json.dumps(asdict(KEY), sort_keys=True).encode()).hexdigest()[:32]


@pytest.mark.parametrize("part, value", [("onnx_sha256", "cd" * 32), ("gpu_name", "NVIDIA GeForce RTX 4090"),
                                         ("tensorrt_version", "10.4.0"), ("fp16", True), ("batch", 2)])
def test_cache_key_changes_with_every_part(part, value):
    assert replace(KEY, **{part: value}).digest() != KEY.digest()


def test_cache_round_trip_with_sidecar(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    assert cache.load(KEY) is None
    blob = b"serialized engine \x00\x01"
    engine_path = cache.store(KEY, blob)
    assert cache.load(KEY) == blob
    assert cache.load(replace(KEY, fp16=True)) is None
    sidecar = json.loads(cache.paths(KEY)[1].read_text())
    assert sidecar["key"] == asdict(KEY) and sidecar["engine_sha256"] == hashlib.sha256(blob).hexdigest()
    assert engine_path == cache.paths(KEY)[0] and engine_path.read_bytes() == blob


def test_store_replaces_by_rename_and_leaves_no_temp_files(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"old engine")
    with open(path, "rb") as reader:  # a reader of the old entry ...
        cache.store(KEY, b"new engine")
        assert reader.read() == b"old engine"  # ... never sees it half overwritten
    assert cache.load(KEY) == b"new engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in cache.paths(KEY))


def test_a_write_that_fails_midway_leaves_nothing_behind(tmp_path):
    cache = EngineCache(tmp_path)
    with pytest.raises(TypeError):
        cache.store(KEY, "text is not bytes")
    assert list(tmp_path.iterdir()) == []
    assert cache.load(KEY) is None


def test_corrupt_engine_file_is_detected(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"serialized engine")
    path.write_bytes(b"serialized enginE")
    with pytest.raises(CacheEntryError, match="corrupt") as err:
        cache.load(KEY)
    assert str(path) in str(err.value)


def test_engine_without_sidecar_is_an_interrupted_write(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"serialized engine")
    cache.paths(KEY)[1].unlink()
    with pytest.raises(CacheEntryError, match="interrupted write"):
        cache.load(KEY)


def test_unreadable_sidecar_is_detected(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"serialized engine")
    cache.paths(KEY)[1].write_text("{")
    with pytest.raises(CacheEntryError, match="unreadable"):
        cache.load(KEY)


def test_entry_recorded_under_another_key_is_refused(tmp_path):
    cache, other = EngineCache(tmp_path), replace(KEY, tensorrt_version="10.0.1")
    cache.store(KEY, b"engine built by 10.3.0")
    for mine, theirs in zip(cache.paths(KEY), cache.paths(other)):
        os.replace(mine, theirs)
    with pytest.raises(CacheEntryError, match="records key"):
        cache.load(other)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "robot_runtime" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "robot_runtime" / "engines"


# -- TensorRT on a GPU ------------------------------------------------------------------------

@needs_tensorrt
@pytest.mark.parametrize("fp16, tolerance", [(False, 1e-4), (True, 2e-2)])
def test_tensorrt_agrees_with_onnxruntime(bundle, tmp_path, fp16, tolerance):
    engine = create_engine("tensorrt", bundle.policy_path, fp16=fp16, cache_dir=tmp_path / "engines")
    reference = create_engine("onnxruntime", bundle.policy_path)
    feeds = random_feeds(bundle)
    np.testing.assert_allclose(engine.run(feeds)["actions"], reference.run(feeds)["actions"], atol=tolerance)
    assert engine.name.endswith("fp16]" if fp16 else "fp32]")


@needs_tensorrt
def test_auto_picks_tensorrt(bundle, tmp_path):
    engine = create_engine("auto", bundle.policy_path, cache_dir=tmp_path)
    assert engine.name.startswith("tensorrt[") and engine.fallback_reason == ""


@needs_tensorrt
def test_cached_engine_is_loaded_not_rebuilt(bundle, tmp_path):
    first = TensorRTEngine(bundle.policy_path, probe(), cache_dir=tmp_path)
    assert first.cache_report.startswith("built engine")
    engine_file = next(tmp_path.glob("*.engine"))
    written = engine_file.stat().st_mtime_ns
    second = TensorRTEngine(bundle.policy_path, probe(), cache_dir=tmp_path)
    assert second.cache_report == f"loaded cached engine {engine_file}"
    assert engine_file.stat().st_mtime_ns == written


@needs_tensorrt
def test_cache_entry_tensorrt_cannot_deserialize_is_rebuilt_and_replaced(bundle, tmp_path):
    setup, cache = probe(), EngineCache(tmp_path)
    key = EngineKey(sha256_file(bundle.policy_path), setup.gpu_name, setup.version, False, 1)
    cache.store(key, b"not a TensorRT engine")
    engine = TensorRTEngine(bundle.policy_path, setup, cache_dir=tmp_path)
    assert "cannot deserialize it" in engine.cache_report
    assert cache.load(key) != b"not a TensorRT engine"


@needs_tensorrt
def test_parser_errors_are_reported(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "custom.onnx")
    with pytest.raises(EngineError, match="ONNX parser rejects it: .*Frobnicate"):
        TensorRTEngine(tmp_path / "custom.onnx", probe(), cache_dir=tmp_path)


@needs_tensorrt
def test_policy_runner_on_tensorrt(bundle, tmp_path):
    runner = PolicyRunner.load(bundle.path, engine="tensorrt", cache_dir=tmp_path)
    runner.select_task(bundle.manifest.tasks[0])
    images = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in bundle.manifest.cameras}
    assert runner.infer(images, np.ones(len(bundle.manifest.state_names), np.float32)).shape == (8, 4)
