"""robot-runtime-calibrate refuses what cannot give a calibration with the reason and exit code 2, never a
traceback: unreadable pictures, too few views, unknown or hostile camera names, broken calibration and poses
files, impossible boards, and poses that cannot fix a mounting."""
import subprocess
import sys

import board_views
import numpy as np
import pytest

from robot_runtime.calibration import cli, hand_eye
from robot_runtime.calibration.cameras import CameraCalibration, write_calibration

CAL = "cameras:\n  wrist: {width: 640, height: 480, camera_matrix: [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1]}\n"


@pytest.fixture(scope="module")
def few_views(tmp_path_factory):
    return board_views.intrinsic_views(tmp_path_factory.mktemp("few") / "shots", count=4)


def run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_picture_that_does_not_decode_is_named(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, out = run(["intrinsics", "--camera", "wrist", "--images", str(tmp_path), "--file", str(tmp_path / "c.yaml")],
                    capsys)
    assert code == 2 and "broken.png: not a picture OpenCV can read" in out
    assert not (tmp_path / "c.yaml").exists()


def test_no_pictures_and_pictures_without_a_board_say_so(tmp_path, capsys):
    code, out = run(["intrinsics", "--camera", "wrist", "--images", str(tmp_path / "*.png"), "--file", "c.yaml"],
                    capsys)
    assert code == 2 and "no pictures" in out
    import cv2

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    code, out = run(["intrinsics", "--camera", "wrist", "--images", str(tmp_path), "--file", "c.yaml"], capsys)
    assert code == 2 and "wall.png: board not found" in out and "0 view(s) with the board found" in out


def test_too_few_views_ask_for_more(few_views, tmp_path, capsys):
    code, out = run(["intrinsics", "--camera", "wrist", "--images", str(few_views.folder),
                     "--file", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "4 view(s) with the board found; at least 8 are needed" in out


@pytest.mark.parametrize("name", ["../etc", "a b", "", "x" * 200, "wrist/../../x"])
def test_hostile_camera_names_are_refused_before_anything_is_read(name, tmp_path, capsys):
    code, out = run(["check", "--camera", name, "--images", str(tmp_path), "--file", str(tmp_path / "c.yaml")],
                    capsys)
    assert code == 2 and "camera name" in out and "is not allowed" in out


def test_an_unknown_camera_lists_the_known_ones(few_views, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CAL)
    code, out = run(["check", "--camera", "front", "--images", str(few_views.folder),
                     "--file", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "no camera 'front' (it has ['wrist'])" in out


@pytest.mark.parametrize("text, match", [
    ("cameras: [not, a, mapping", "not a calibration file"),
    ("cameras:\n  ../x: {width: 1, height: 1, camera_matrix: [1,0,0,0,1,0,0,0,1]}\n", "camera name '../x'"),
    ("cameras:\n  wrist: {width: 1, height: 1, camera_matrix: [1,0,0,0,1,0,0,0,1], lens: 3}\n", "unknown field"),
    ("cameras:\n  wrist: {width: '640', height: 480, camera_matrix: [1,0,0,0,1,0,0,0,1]}\n", "size"),
    ("cameras:\n  wrist: {width: 64, height: 48, camera_matrix: [a,0,0,0,1,0,0,0,1]}\n", "needs 9 numbers"),
])
def test_a_corrupt_calibration_file_is_refused_by_name(few_views, tmp_path, text, match, capsys):
    (tmp_path / "c.yaml").write_text(text)
    code, out = run(["check", "--camera", "wrist", "--images", str(few_views.folder),
                     "--file", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and match in out and "c.yaml" in out


def test_check_refuses_views_of_another_resolution(few_views, tmp_path, capsys):
    write_calibration(tmp_path / "c.yaml", {"wrist": CameraCalibration(320, 240, [250, 0, 160, 0, 250, 120, 0, 0, 1])})
    code, out = run(["check", "--camera", "wrist", "--images", str(few_views.folder),
                     "--file", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "calibration is for 320x240" in out


@pytest.mark.parametrize("poses, match", [
    ("poses: {view_000.png: [[1, 0], [0, 1]]}", "not a poses file"),
    ("poses: {elsewhere.png: [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1]}", "pictures not among"),
    ("poses: {view_000.png: {translation: [0, 0, 0], rotation_xyzw: [1, 1, 0, 0]}}", "not a unit quaternion"),
    ("[just, a, list]", "not a poses file"),
])
def test_broken_poses_files_are_refused(few_views, tmp_path, poses, match, capsys):
    (tmp_path / "c.yaml").write_text(CAL)
    (tmp_path / "poses.yaml").write_text(poses)
    code, out = run(["hand-eye", "--camera", "wrist", "--mode", "eye-in-hand", "--images", str(few_views.folder),
                     "--poses", str(tmp_path / "poses.yaml"), "--parent-frame", "tool0",
                     "--file", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and match in out


def test_an_impossible_board_and_live_collection_without_ros_are_explained(tmp_path, capsys):
    code, out = run(["intrinsics", "--camera", "wrist", "--images", str(tmp_path), "--file", "c.yaml",
                     "--marker-m", "0.04"], capsys)
    assert code == 2 and "below the square side" in out
    code, out = run(["intrinsics", "--camera", "wrist", "--topic", "camera/wrist/image_raw", "--file", "c.yaml"],
                    capsys)
    assert code == 2 and "live collection needs ROS 2" in out


def rigid(rvec, t) -> np.ndarray:
    import cv2

    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = cv2.Rodrigues(np.asarray(rvec, float))[0], t
    return pose


def test_park_martin_recovers_an_exact_mounting():
    rng = np.random.default_rng(0)
    mounting, board_in_base = rigid([0.2, -0.1, 1.4], [0.03, -0.02, 0.05]), rigid([3.0, 0.1, 0.2], [0.4, 0.1, 0.0])
    robot = [rigid(rng.normal(0, 0.5, 3), rng.normal(0, 0.2, 3)) for _ in range(6)]
    boards = [np.linalg.inv(g @ mounting) @ board_in_base for g in robot]
    result = hand_eye.solve(robot, boards, "eye-in-hand")
    assert np.allclose(result.mounting, mounting, atol=1e-9) and result.spread_m < 1e-9
    assert np.allclose(hand_eye.park_martin(robot, boards), mounting, atol=1e-9)


@pytest.mark.parametrize("robot, match", [
    ([rigid([0, 0, 0], [i * 0.1, 0, 0]) for i in range(5)], "only translate or turn about one axis"),
    ([rigid([0, 0, 0.3 * i], [0, 0, 0]) for i in range(5)], "only translate or turn about one axis"),
    ([np.eye(4), np.eye(4)], "at least 3"),
    ([np.eye(4) * 2] * 4, "not a rigid transform"),
])
def test_poses_that_cannot_fix_a_mounting_are_refused(robot, match):
    with pytest.raises(hand_eye.HandEyeError, match=match):
        hand_eye.solve(robot, [np.eye(4)] * len(robot), "eye-in-hand")


def test_the_console_script_runs_through_the_node_module_and_fails_cleanly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "robot_runtime.nodes.calibrate", "check", "--camera", "wrist",
                          "--images", str(tmp_path), "--file", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no such calibration file" in out.stderr and "Traceback" not in out.stderr


def test_views_that_do_not_constrain_a_camera_are_refused_not_raised():
    from robot_runtime.calibration.board import Detection
    from robot_runtime.calibration.intrinsics import IntrinsicsError, calibrate

    on_a_line = Detection(np.arange(6), np.array([[10.0 * i, 5.0] for i in range(6)]),
                          np.array([[0.03 * i, 0.03, 0.0] for i in range(1, 7)]), (640, 480))
    with pytest.raises(IntrinsicsError, match="OpenCV could not solve the calibration from these 8 views"):
        calibrate([on_a_line] * 8)
