"""The picture the policy sees: a distorted camera undistorted onto the trained geometry, crops and resizes that
keep points where the target camera puts them, and the robot's check of its calibration against a bundle's."""
import board_views
import numpy as np
import pytest

from robot_runtime.calibration.board import BoardDetector
from robot_runtime.calibration.cameras import CalibrationError, CameraCalibration, load_calibration
from robot_runtime.calibration.preprocess import Preprocessing, Preprocessor
from robot_runtime.calibration.records import check_cameras, parse_record, pixel_difference, record
from robot_runtime.sim.board_scene import BoardScene

W, H = 640, 480
K = [520.0, 0.0, 321.3, 0.0, 521.0, 238.6, 0.0, 0.0, 1.0]
LENS = [-0.25, 0.08, 0.001, -0.0005, 0.0]


def camera(k=K, dist=LENS, version=1) -> CameraCalibration:
    return CameraCalibration(W, H, list(k), distortion_coefficients=list(dist), version=version)


def test_the_sim_cameras_pass_through_untouched():
    for cam in load_calibration("sim_cameras.yaml").values():
        pre = Preprocessor(cam, Preprocessing.of(cam))
        frame = np.random.default_rng(0).integers(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
        assert pre.identity and pre(frame) is frame


def test_a_distorted_camera_is_undistorted_onto_the_pinhole_the_policy_trained_on():
    scene = BoardScene(board_views.SPEC, W, H, 50.0)
    try:
        pose = board_views.camera_around_board(np.random.default_rng(3), 0, scene.focal_px)  # top left
        pinhole = scene.render(pose)
    finally:
        scene.close()
    lens = camera(k=scene.camera_matrix.ravel())
    distorted = board_views.distort(pinhole, board_views.lens_map(scene.camera_matrix, lens.distortion_coefficients))
    trained = Preprocessing.of(camera(k=scene.camera_matrix.ravel(), dist=[0] * 5))
    restored = Preprocessor(lens, trained)(distorted)
    detector = BoardDetector(board_views.SPEC)
    truth, bent, fixed = (detector.detect(image) for image in (pinhole, distorted, restored))
    where = dict(zip(truth.ids, truth.image_points))
    moved = max(np.abs(p - where[i]).max() for i, p in zip(fixed.ids, fixed.image_points))
    bent_by = max(np.abs(p - where[i]).max() for i, p in zip(bent.ids, bent.image_points) if i in where)
    # the lens moved corners by pixels; the preprocessing puts them back
    assert len(fixed) >= len(truth) - 1 and moved < 0.3 < 3 < bent_by


def test_crop_and_resize_keep_points_where_the_target_camera_puts_them():
    cam = camera(dist=[0] * 5)
    view = Preprocessing.of(cam, size=(60, 80), crop=(100, 80, 400, 300))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[300:306, 250:256] = 255        # a bright square centred on (252.5, 302.5)
    out = Preprocessor(cam, view)(frame)
    assert out.shape == (60, 80, 3)
    ys, xs = np.nonzero(out[..., 0])
    weights = out[ys, xs, 0].astype(float)
    centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    expected = (np.array([252.5 - 100, 302.5 - 80]) + 0.5) * 80 / 400 - 0.5   # pixel centres scale about -0.5
    assert np.abs(centre - expected).max() < 0.1


@pytest.mark.parametrize("crop", [(-1, 0, 10, 10), (600, 0, 100, 10), (0, 0, 0, 10)])
def test_a_crop_outside_the_frame_is_refused(crop):
    with pytest.raises(CalibrationError, match="does not fit"):
        Preprocessing.of(camera(), crop=crop)


def test_a_frame_of_another_size_is_refused_with_both_sizes():
    with pytest.raises(CalibrationError, match="frames are 320x240, the camera's calibration is for 640x480"):
        Preprocessor(camera(), Preprocessing.of(camera()))(np.zeros((240, 320, 3), np.uint8))


def test_pixel_difference_folds_focal_centre_and_distortion_into_pixels():
    base = camera()
    assert pixel_difference(base, base) == pytest.approx(0, abs=1e-6)
    refocused = camera(k=[K[0] * 1.01, 0, K[2], 0, K[4] * 1.01, K[5], 0, 0, 1])
    assert 2.5 < pixel_difference(base, refocused) < 4.5           # 1% of ~400 px from the centre at the corners
    shifted = camera(k=[K[0], 0, K[2] + 1.5, 0, K[4], K[5], 0, 0, 1])
    assert pixel_difference(base, shifted) == pytest.approx(1.5, abs=0.01)
    assert pixel_difference(base, CameraCalibration(320, 240, K)) == float("inf")


def bundle_records(trained: CameraCalibration) -> dict:
    return {"wrist": record(trained, Preprocessing.of(trained))}


def test_the_robot_refuses_or_warns_naming_the_camera_and_the_difference():
    trained = camera(version=3)
    robot = {"wrist": camera(k=[K[0] * 1.01, 0, K[2], 0, K[4] * 1.01, K[5], 0, 0, 1], version=4)}
    refused = check_cameras({"wrist": (H, W)}, bundle_records(trained), robot, 1.0, "refuse", "b/manifest.json")
    assert len(refused.refusals) == 1 and not refused.warnings
    message = refused.refusals[0]
    assert message.startswith("camera wrist: this robot's calibration (version 4") and "(version 3" in message
    assert "fx 520.00 -> 525.20" in message and "beyond the tolerance of 1.0 px" in message
    warned = check_cameras({"wrist": (H, W)}, bundle_records(trained), robot, 1.0, "warn", "b")
    assert not warned.refusals and len(warned.warnings) == 1 and "wrist" in warned.warnings[0]
    assert not warned.preprocessors["wrist"].identity    # the robot's own frames are mapped onto the trained geometry
    within = check_cameras({"wrist": (H, W)}, bundle_records(trained), robot, 5.0, "refuse", "b")
    assert not within.refusals and not within.warnings


def test_missing_records_and_cameras_are_said():
    trained = camera()
    older = check_cameras({"wrist": (H, W)}, {}, {"wrist": trained}, 1.0, "refuse", "old/manifest.json")
    assert not older.refusals and "records no camera calibration" in older.warnings[0]
    unknown = check_cameras({"wrist": (H, W)}, bundle_records(trained), {"front": trained}, 1.0, "refuse", "b")
    assert unknown.refusals == ["camera wrist: this robot's calibration file has no entry for it (it has ['front'])"]
    no_file = check_cameras({"wrist": (H, W)}, bundle_records(trained), {}, 1.0, "refuse", "b")
    assert not no_file.refusals and "no calibration file on this robot" in no_file.warnings[0]
    with pytest.raises(CalibrationError, match="mismatch action 'ignore'"):
        check_cameras({"wrist": (H, W)}, {}, {}, 1.0, "ignore", "b")


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.update(camera_matrix=[1, 0, 0]), "camera_matrix"),
    (lambda r: r.update(intrinsics_sha256="0" * 64), "the manifest was edited"),
    (lambda r: r.pop("version"), "needs"),
    (lambda r: r.update(preprocessing={"crop_width": 3}), "not a preprocessing record"),
])
def test_a_tampered_record_is_refused_by_name(edit, match):
    data = bundle_records(camera())["wrist"]
    edit(data)
    with pytest.raises(CalibrationError, match=match):
        parse_record("wrist", data, "b/manifest.json")
