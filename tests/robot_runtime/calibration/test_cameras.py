"""Calibration files: the shipped simulated cameras load, broken files are refused by name, entries update one by
one, the rotation convention round-trips, the intrinsics digest follows the geometry."""
from dataclasses import replace

import numpy as np
import pytest

from robot_runtime.calibration.cameras import (
    CalibrationError,
    CameraCalibration,
    load_calibration,
    rotation_from_xyzw,
    update_camera,
    write_calibration,
    xyzw_from_rotation,
)
from robot_runtime.files import UnsafeNameError
from robot_runtime.sim.calibration import sim_calibration


def test_shipped_sim_calibration_matches_the_scene():
    shipped = load_calibration("sim_cameras.yaml")
    fresh = sim_calibration("push-v3", ["corner", "gripperPOV"], 96)
    assert set(shipped) == {"corner", "gripperPOV"}
    for name, camera in fresh.items():
        assert shipped[name].camera_matrix == pytest.approx(camera.camera_matrix)
        assert shipped[name].translation == pytest.approx(camera.translation, abs=1e-6)


@pytest.mark.parametrize("text, match", [
    ("cameras: {front: {width: 0, height: 96, camera_matrix: [1,0,0,0,1,0,0,0,1]}}", "size"),
    ("cameras: {front: {width: 96, height: 96, camera_matrix: [1,0,0]}}", "camera_matrix"),
    ("cameras: {front: {width: 96, height: 96, camera_matrix: [1,0,0,0,1,0,0,0,1], rotation_xyzw: [1,1,0,0]}}",
     "unit quaternion"),
    ("not: [a calibration", "not a calibration file"),
])
def test_broken_calibration_is_refused(tmp_path, text, match):
    path = tmp_path / "cal.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match):
        load_calibration(path)


def test_quaternions_round_trip_in_the_files_convention():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * np.sign(q[3])
        r = rotation_from_xyzw(q)
        assert np.allclose(r @ r.T, np.eye(3)) and np.allclose(xyzw_from_rotation(r), q)
    for half_turn in (np.diag([1.0, -1, -1]), np.diag([-1.0, -1, 1]), np.diag([-1.0, 1, -1])):
        assert np.allclose(rotation_from_xyzw(xyzw_from_rotation(half_turn)), half_turn)


def test_update_camera_rewrites_one_entry_and_keeps_the_others(tmp_path):
    path = tmp_path / "robot.yaml"
    shipped = load_calibration("sim_cameras.yaml")
    write_calibration(path, shipped)
    wrist = CameraCalibration(640, 480, [500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1], version=3)
    update_camera(path, "wrist", wrist)
    cameras = load_calibration(path)
    assert set(cameras) == {"corner", "gripperPOV", "wrist"} and cameras["wrist"] == wrist
    assert cameras["corner"] == shipped["corner"]
    with pytest.raises(UnsafeNameError):
        update_camera(path, "../wrist", wrist)


def test_the_intrinsics_digest_follows_the_geometry_only():
    a = CameraCalibration(640, 480, [500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1])
    assert a.intrinsics_sha256 == replace(a, version=9, translation=[1.0, 2.0, 3.0]).intrinsics_sha256
    assert a.intrinsics_sha256 != replace(a, distortion_coefficients=[0.01, 0, 0, 0, 0]).intrinsics_sha256
    assert a.intrinsics_sha256 == replace(a, camera_matrix=[500, 0, 319.5, 0, 500, 239.5, 0, 0, 1]).intrinsics_sha256
