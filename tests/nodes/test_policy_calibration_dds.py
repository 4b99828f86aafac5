"""policy_node over DDS checks this robot's camera calibration against the one its bundle was trained with:
beyond the tolerance it refuses (or warns, by configuration) naming the camera and the difference, a bundle
without a record serves with a warning, and within tolerance frames go through the preprocessing and get
answered."""
import json
import time
from dataclasses import replace

import pytest

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.bundle import MANIFEST
from robot_runtime.calibration.cameras import load_calibration, write_calibration
from robot_runtime.calibration.preprocess import Preprocessing
from robot_runtime.calibration.records import record
from robot_runtime.nodes.graph_client import GraphClient

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder

SIM = load_calibration("sim_cameras.yaml")


def trained_bundle(path, cameras=SIM):
    bundle = make_reference_bundle(path)
    manifest = json.loads((bundle.path / MANIFEST).read_text())
    manifest["calibration"] = {name: record(c, Preprocessing.of(c)) for name, c in cameras.items()}
    (bundle.path / MANIFEST).write_text(json.dumps(manifest))
    return bundle


def robot_file(path, **changes):
    """The sim calibration with some cameras' matrices changed: {camera: (fx factor, cx shift)}."""
    cameras = dict(SIM)
    for name, (factor, shift) in changes.items():
        k = list(cameras[name].camera_matrix)
        k[0], k[4], k[2] = k[0] * factor, k[4] * factor, k[2] + shift
        cameras[name] = replace(cameras[name], camera_matrix=k, version=cameras[name].version + 1)
    write_calibration(path, cameras)
    return str(path)


def start(tmp_path, name, bundle, **parameters):
    graph = GraphProcesses("sim", {"policy_node": {"bundle_path": str(bundle.path), **parameters}},
                           log_dir=tmp_path / name, only=["policy_node"]).start()
    return graph, GraphClient(f"calibration_{name}")


def test_a_camera_beyond_tolerance_is_refused_or_warned_about_by_name(tmp_path):
    bundle = trained_bundle(tmp_path / "bundle")
    bumped = robot_file(tmp_path / "bumped.yaml", corner=(1.05, 0.0))
    graph, client = start(tmp_path, "refuse", bundle, calibration_file=bumped)
    try:
        status = client.wait_for(lambda: client.policy_status.get("state") == "error" and client.policy_status,
                                 20, "the policy to refuse its bundle")
        assert "refusing bundle: camera corner: this robot's calibration (version 1" in status["error"]
        assert "beyond the tolerance of 1.0 px" in status["error"] and "gripperPOV" not in status["error"]
    finally:
        client.close()
        graph.stop()
    graph, client = start(tmp_path, "warn", bundle, calibration_file=bumped, calibration_mismatch="warn")
    try:
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 20, "the policy to serve")
    finally:
        client.close()
        graph.stop()
    log = (tmp_path / "warn" / "policy_node.log").read_text()
    assert "camera corner: this robot's calibration" in log and "fx 115.88 -> 121.68" in log


def test_an_older_bundle_serves_with_a_warning(tmp_path):
    graph, client = start(tmp_path, "older", make_reference_bundle(tmp_path / "older"),
                          calibration_file="sim_cameras.yaml")
    try:
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 20, "the policy to serve")
    finally:
        client.close()
        graph.stop()
    assert "records no camera calibration" in (tmp_path / "older" / "policy_node.log").read_text()


def test_within_tolerance_frames_are_mapped_onto_the_trained_geometry_and_answered(tmp_path):
    shifted = robot_file(tmp_path / "robot.yaml", gripperPOV=(1.0, 0.4))  # refocused a little: 0.4 px
    graph, client = start(tmp_path, "within", trained_bundle(tmp_path / "bundle"), calibration_file=shifted)
    try:
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 20, "the policy to serve")
        feeder = Feeder(client)
        time.sleep(0.5)  # let the feeder's publishers match
        feeder.start()
        stamps = feeder.play(1.5)
        assert len(feeder.commands_for(stamps)) >= len(stamps) - 2
        # A hot swap keeps the subscriptions and their preprocessing: a bundle trained on another geometry is
        # refused at the parameter, naming the camera; the running bundle keeps serving.
        other = dict(SIM, corner=replace(SIM["corner"], camera_matrix=[116.1, 0, 47.5, 0, 116.1, 47.5, 0, 0, 1]))
        with pytest.raises(RuntimeError, match="camera corner: the new bundle was trained on another camera geometry"):
            client.set_parameters("policy_node", {"bundle_path": str(trained_bundle(tmp_path / "other", other).path)})
        assert client.policy_status["state"] == "serving"
    finally:
        client.close()
        graph.stop()
