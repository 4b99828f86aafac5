"""Contract 2: a bundle loads only when manifest, files, hashes and graph agree."""
import json

import numpy as np
import pytest

from bundle_factory import make_reference_bundle
from robot_runtime.bundle import MANIFEST, BundleError, load_bundle
from robot_runtime.runtime.policy import PolicyOutputError, PolicyRunner


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
    assert "beta" in bundle.manifest.onnx_inputs()
    runner = PolicyRunner.load(bundle.path, beta=2.0)
    runner.select_task(bundle.manifest.tasks[0])
    assert runner.infer({}, np.zeros(21, np.float32)).shape == (8, 4)


def test_bundles_are_immutable(bundle, tmp_path):
    with pytest.raises(BundleError, match="already exists"):
        make_reference_bundle(bundle.path)
