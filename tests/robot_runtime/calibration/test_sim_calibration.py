"""The calibration tools against the truth: a ChArUco board rendered by MuJoCo from known poses, with known
intrinsics (640x480, 50 degrees vertical field of view) and known mountings, through the command line a team runs.

Measured here (printed with -s): 30 views, reprojection error ~0.06 px, focal length within ~0.1%, principal
point within ~0.6 px; hand-eye within ~0.3 mm and ~0.1 degrees, both modes.
"""
import math

import board_views
import cv2
import numpy as np
import pytest

from robot_runtime.calibration import cli
from robot_runtime.calibration.cameras import load_calibration, rotation_from_xyzw

CAMERA = "wrist"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The camera calibrated from 30 rendered views: (views, calibration file)."""
    root = tmp_path_factory.mktemp("calibration")
    views = board_views.intrinsic_views(root / "intrinsics")
    path = root / "robot.yaml"
    assert cli.main(["intrinsics", "--camera", CAMERA, "--images", str(views.folder), "--file", str(path)]) == 0
    return views, path


def test_intrinsics_match_the_truth(calibrated, capsys):
    views, path = calibrated
    camera = load_calibration(path)[CAMERA]
    k, truth = np.array(camera.camera_matrix).reshape(3, 3), views.camera_matrix
    focal_error = max(abs(k[0, 0] / truth[0, 0] - 1), abs(k[1, 1] / truth[1, 1] - 1))
    centre_error = max(abs(k[0, 2] - truth[0, 2]), abs(k[1, 2] - truth[1, 2]))
    with capsys.disabled():
        print(f"\nintrinsics from {len(views.files)} views: reprojection {camera.reprojection_error_px:.3f} px, "
              f"focal {100 * focal_error:.3f}%, principal point {centre_error:.3f} px from the truth")
    assert camera.reprojection_error_px < 0.5
    assert focal_error < 0.01
    assert centre_error < 1.0
    assert (camera.width, camera.height, camera.version, camera.frame_id) == (640, 480, 1, CAMERA)
    assert camera.calibrated_at


def test_recalibrating_bumps_the_version_and_keeps_the_other_cameras(calibrated, tmp_path):
    views, path = calibrated
    copy = tmp_path / "robot.yaml"
    other = "  other:\n    width: 96\n    height: 96\n    camera_matrix: [1,0,0,0,1,0,0,0,1]\n"
    copy.write_text(path.read_text() + other)
    assert cli.main(["intrinsics", "--camera", CAMERA, "--images", str(views.folder / "*.png"),
                     "--file", str(copy)]) == 0
    cameras = load_calibration(copy)
    assert cameras[CAMERA].version == 2 and cameras["other"].width == 96


@pytest.mark.parametrize("mode", ["eye-in-hand", "eye-to-hand"])
def test_hand_eye_matches_the_truth(calibrated, tmp_path, mode, capsys):
    _, path = calibrated
    file = tmp_path / "robot.yaml"
    file.write_text(path.read_text())
    views = board_views.hand_eye_views(tmp_path / "shots", mode)
    poses = views.write_poses(tmp_path / "poses.yaml")
    parent = "tool0" if mode == "eye-in-hand" else "base_link"
    assert cli.main(["hand-eye", "--camera", CAMERA, "--mode", mode, "--images", str(views.folder),
                     "--poses", str(poses), "--parent-frame", parent, "--file", str(file)]) == 0
    camera = load_calibration(file)[CAMERA]
    mounting = np.eye(4)
    mounting[:3, :3], mounting[:3, 3] = rotation_from_xyzw(camera.rotation_xyzw), camera.translation
    error = np.linalg.inv(board_views.MOUNTING) @ mounting
    translation_mm = 1000 * float(np.linalg.norm(error[:3, 3]))
    rotation_deg = math.degrees(float(np.linalg.norm(cv2.Rodrigues(error[:3, :3])[0])))
    with capsys.disabled():
        print(f"\nhand-eye {mode} from {len(views.files)} views: {translation_mm:.3f} mm, {rotation_deg:.4f} degrees "
              "from the truth")
    assert translation_mm < 2.0 and rotation_deg < 0.5
    assert camera.parent_frame == parent and camera.version == 1  # the intrinsics are untouched


def test_check_passes_the_same_camera_and_flags_a_refocused_one(calibrated, tmp_path, capsys):
    views, path = calibrated
    same = board_views.intrinsic_views(tmp_path / "same", count=5, seed=7)
    assert cli.main(["check", "--camera", CAMERA, "--images", str(same.folder), "--file", str(path)]) == 0
    assert "within tolerance" in capsys.readouterr().out
    zoomed = board_views.intrinsic_views(tmp_path / "zoomed", count=5, seed=7, fovy=48.5)  # focal +3.3%
    assert cli.main(["check", "--camera", CAMERA, "--images", str(zoomed.folder), "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DRIFT: wrist" in out and "focal length changed by +3." in out
