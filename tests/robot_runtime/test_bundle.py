"""Contract 2: a bundle loads only when manifest, files, hashes and graph agree."""
import json

import numpy as np
import onnx
import pytest

from robot_runtime.bundle import MANIFEST, BundleError, Manifest, load_bundle
from robot_runtime.runtime.policy import PolicyOutputError, PolicyRunner

from bundle_factory import make_reference_bundle

# A manifest.json as exporters write it today (schema_version 1): loading must keep accepting it as is.
TODAYS_MANIFEST = {
    "model_id": "vla-push", "version": "r1", "parent_version": "r0", "created_at": "2026-11-30T10:00:00+00:00",
    "cameras": [{"name": "corner", "height": 96, "width": 96}, {"name": "gripperPOV", "height": 64, "width": 80}],
    "state_names": ["hand_x", "hand_y", "hand_z"], "tasks": ["push the puck to the goal", "reach the goal"],
    "action_names": ["dx", "dy"], "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
    "chunk_length": 8, "control_rate_hz": 20.0, "denoising_steps": 10,
    "normalization": {"state_mean": [0.0, 0.6, 0.2], "state_std": [0.1, 0.1, 0.1],
                      "action_mean": [0.0, 0.0], "action_std": [0.5, 0.5]},
    "conditioning_mode": "advantage", "beta": 1.5, "realtime_chunking": True,
    "files": {"policy.onnx": "ab" * 32},
    "training": {"episodes": 26, "parity_max_abs_error": 1.2e-06, "parity_tolerance": 0.0001},
    "schema_version": 1,
}
# ... and the graph inputs such a bundle's policy.onnx has: (name, shape, ONNX element type), in graph order.
TODAYS_INPUTS = [("image_corner", ["B", 96, 96, 3], "uint8"), ("image_gripperPOV", ["B", 64, 80, 3], "uint8"),
                 ("state", ["B", 3], "float"), ("task", ["B"], "int64"), ("noise", ["B", 8, 2], "float"),
                 ("beta", [], "float"), ("prefix", ["B", 8, 2], "float"), ("prefix_weights", ["B", 8], "float")]


@pytest.fixture
def bundle(tmp_path):
    return make_reference_bundle(tmp_path / "b")


def edit_manifest(bundle, **changes):
    path = bundle.path / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_valid_bundle_loads_and_runs(bundle):
    runner = PolicyRunner.load(bundle.path)
    runner.select_task(bundle.manifest.tasks[0])
    images = {c.name: np.zeros((96, 96, 3), np.uint8) for c in bundle.manifest.cameras}
    chunk = runner.infer(images, np.ones(len(bundle.manifest.state_names), np.float32))
    assert chunk.shape == (8, 4) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)


def test_missing_bundle_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")


def test_bad_json_names_the_manifest_and_line(bundle):
    (bundle.path / MANIFEST).write_text('{"schema_version": 1,\n "model_id": }')
    with pytest.raises(BundleError) as err:
        load_bundle(bundle.path)
    assert err.value.file.endswith(MANIFEST) and "line 2" in str(err.value)


def test_wrong_sha256_names_the_file(bundle):
    with open(bundle.policy_path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256 mismatch") as err:
        load_bundle(bundle.path)
    assert err.value.file.endswith("policy.onnx")


def test_shapes_that_disagree_with_the_manifest(bundle):
    edit_manifest(bundle, chunk_length=16)
    with pytest.raises(BundleError, match="noise") as err:
        load_bundle(bundle.path)
    assert err.value.file.endswith("policy.onnx")


def test_camera_size_disagreement(bundle):
    data = json.loads((bundle.path / MANIFEST).read_text())
    data["cameras"][0]["height"] = 64
    (bundle.path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="image_corner"):
        load_bundle(bundle.path)


def test_missing_field_and_unknown_schema(bundle):
    data = json.loads((bundle.path / MANIFEST).read_text())
    del data["action_names"]
    (bundle.path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="missing field.*action_names"):
        load_bundle(bundle.path)
    edit_manifest(bundle, schema_version=99)
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(bundle.path)


def test_corrupt_onnx_with_matching_hash_is_refused(bundle):
    bundle.policy_path.write_bytes(b"not a protobuf at all")
    data = json.loads((bundle.path / MANIFEST).read_text())
    from robot_runtime.bundle import sha256_file
    data["files"]["policy.onnx"] = sha256_file(bundle.policy_path)
    (bundle.path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        load_bundle(bundle.path)


def test_nan_producing_bundle_is_refused_at_warmup(tmp_path):
    bundle = make_reference_bundle(tmp_path / "nan", nan=True)
    with pytest.raises(PolicyOutputError, match="NaN"):
        PolicyRunner.load(bundle.path)


def test_advantage_bundle_takes_beta(tmp_path):
    bundle = make_reference_bundle(tmp_path / "adv", conditioning="advantage", cameras=())
    assert "beta" in [t.name for t in bundle.manifest.graph_inputs()]
    runner = PolicyRunner.load(bundle.path, beta=2.0)
    runner.select_task(bundle.manifest.tasks[0])
    assert runner.infer({}, np.zeros(21, np.float32)).shape == (8, 4)


def test_bundles_are_immutable(bundle, tmp_path):
    with pytest.raises(BundleError, match="already exists"):
        make_reference_bundle(bundle.path)


def test_todays_manifest_round_trips_with_todays_graph_inputs():
    manifest = Manifest.from_json(json.loads(json.dumps(TODAYS_MANIFEST)))
    assert manifest.to_json() == {**TODAYS_MANIFEST, "calibration": {}}  # written before calibration records
    assert [(t.name, list(t.shape), t.elem) for t in manifest.graph_inputs()] == TODAYS_INPUTS
    plain = Manifest.from_json({**TODAYS_MANIFEST, "conditioning_mode": "none", "realtime_chunking": False})
    assert [t.name for t in plain.graph_inputs()] == [name for name, _, _ in TODAYS_INPUTS[:5]]


@pytest.mark.parametrize("conditioning", ["none", "advantage"])
@pytest.mark.parametrize("realtime_chunking", [False, True], ids=["plain", "rtc"])
def test_reference_bundle_loads_and_runs_with_todays_input_names(tmp_path, conditioning, realtime_chunking):
    bundle = load_bundle(make_reference_bundle(tmp_path / "b", conditioning=conditioning,
                                               realtime_chunking=realtime_chunking).path)
    names = ["image_corner", "image_gripperPOV", "state", "task", "noise"]
    names += ["beta"] * (conditioning == "advantage") + ["prefix", "prefix_weights"] * realtime_chunking
    assert [i.name for i in onnx.load(str(bundle.policy_path)).graph.input] == names
    runner = PolicyRunner.load(bundle)
    runner.select_task(bundle.manifest.tasks[0])
    images = {c.name: np.zeros((96, 96, 3), np.uint8) for c in bundle.manifest.cameras}
    prefix = np.full((2, 4), 0.5, np.float32)
    chunk = runner.infer(images, np.zeros(len(bundle.manifest.state_names), np.float32), prefix, np.ones(2))
    assert chunk.shape == (8, 4)
    assert np.allclose(chunk[:2], 0.5) == realtime_chunking  # only an RTC graph takes (and keeps) the prefix


@pytest.mark.parametrize("change, missing", [({"conditioning_mode": "advantage"}, "beta"),
                                             ({"realtime_chunking": True}, "prefix")])
def test_a_manifest_that_implies_another_input_is_refused(bundle, change, missing):
    edit_manifest(bundle, **change)
    with pytest.raises(BundleError, match=f"graph has no input '{missing}'") as err:
        load_bundle(bundle.path)
    assert err.value.file.endswith("policy.onnx")
