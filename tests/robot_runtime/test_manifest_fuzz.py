"""Manifests nobody here wrote: every mutation is either a valid manifest or a BundleError naming the field."""
import copy
import json
import random

import pytest

from robot_runtime.bundle import MANIFEST, BundleError, Manifest, ManifestLimits, load_bundle

from bundle_factory import make_reference_bundle

HOSTILE = [None, True, False, 0, -1, 3, 2.5, -1e308, 1e308, 10**9, 10**30, "", "x", "high", "../../etc", "a/b",
           [], [1], ["a", 2], {}, {"x": 1}, [[[[[]]]]], {"name": {"name": {}}}, "é" * 300]


@pytest.fixture(scope="module")
def manifest_json(tmp_path_factory):
    bundle = make_reference_bundle(tmp_path_factory.mktemp("fuzz") / "b", conditioning="advantage")
    return json.loads((bundle.path / MANIFEST).read_text())


def paths(value, prefix=()):
    """Every (path to a value) in a JSON tree, containers included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def mutate(data: dict, rng: random.Random) -> dict:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice([p for p in paths(data) if p])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        roll = rng.random()
        if roll < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif roll < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["extra", "Model_id", 7])] = rng.choice(HOSTILE)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
    return data


def test_ten_thousand_mutated_manifests_give_a_manifest_or_a_bundle_error(manifest_json):
    rng = random.Random(20261202)
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(10_000):
        data = mutate(manifest_json, rng)
        try:
            Manifest.from_json(data)
            outcomes["accepted"] += 1
        except BundleError as err:
            assert err.problem, data
            outcomes["refused"] += 1
    assert outcomes["refused"] > 9_000, outcomes  # nearly every mutation breaks a type, a size or a name


@pytest.mark.parametrize("field, value, named", [
    ("schema_version", True, "schema_version"), ("tasks", "push", "tasks must be a list"),
    ("beta", "high", "beta must be a finite number"), ("denoising_steps", -3, "denoising_steps must be >= 1"),
    ("chunk_length", 10**9, "chunk_length is 1000000000, above"), ("model_id", "../../x", "model_id"),
    ("realtime_chunking", 1, "realtime_chunking must be true or false"), ("files", [], "files must be an object"),
])
def test_named_refusals(manifest_json, field, value, named):
    with pytest.raises(BundleError, match=named.replace("(", r"\(")):
        Manifest.from_json({**manifest_json, field: value})


def test_a_huge_camera_is_refused_before_anything_is_allocated(manifest_json):
    data = copy.deepcopy(manifest_json)
    data["cameras"][0].update(height=100_000, width=100_000)
    with pytest.raises(BundleError, match="side is 100000, above"):
        Manifest.from_json(data)
    with pytest.raises(BundleError, match="graph inputs take .* bytes, above"):  # within each bound, too big together
        Manifest.from_json(manifest_json, limits=ManifestLimits(max_input_bytes=1000))


def test_a_manifest_file_that_is_not_json_a_manifest(tmp_path):
    bundle = make_reference_bundle(tmp_path / "b")
    manifest = bundle.path / MANIFEST
    for text, problem in [("[" * 100_000 + "]" * 100_000, "nested too deeply|not a manifest"),
                          ('{"beta": NaN}', "NaN is not JSON"), ("\xff\xfe", "not UTF-8|invalid JSON")]:
        manifest.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
        with pytest.raises(BundleError, match=problem):
            load_bundle(bundle.path)
