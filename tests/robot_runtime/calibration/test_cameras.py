"""Calibration files: the shipped simulated cameras load, broken files are refused by name."""
import pytest

from robot_runtime.calibration.cameras import CalibrationError, load_calibration
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
