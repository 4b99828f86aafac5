"""Frames at the edge, without DDS: every encoding and compressed format to RGB, refusals, CameraInfo."""
import numpy as np
import pytest

from robot_runtime.calibration.cameras import CalibrationError, load_calibration
from robot_runtime.nodes.images import (
    ImageError,
    calibration_from_camera_info,
    camera_info_msg,
    rgb_from_compressed,
    rgb_from_image,
)

from dds_feeder import compressed, raw

SIZE = (6, 8)
FRAME = np.stack([*np.meshgrid(np.arange(8) * 30, np.arange(6) * 40), np.full((6, 8), 7)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("encoding, pad", [("rgb8", 0), ("bgr8", 0), ("rgb8", 5), ("bgr8", 3)])
def test_colour_frames_become_rgb(encoding, pad):
    image = rgb_from_image(raw(encoding, pad).make(FRAME, 0, "cam"), SIZE)
    assert image.dtype == np.uint8 and image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image, FRAME)


def test_mono_frames_become_three_equal_channels():
    image = rgb_from_image(raw("mono8", 2).make(FRAME, 0, "cam"), SIZE)
    np.testing.assert_array_equal(image, np.repeat(FRAME[:, :, :1], 3, axis=2))


def test_png_is_lossless_and_jpeg_close():
    np.testing.assert_array_equal(rgb_from_compressed(compressed("png").make(FRAME, 0, "cam"), SIZE), FRAME)
    smooth = np.full((16, 16, 3), (200, 100, 30), np.uint8)  # jpeg is exact enough on flat colour
    image = rgb_from_compressed(compressed("jpeg").make(smooth, 0, "cam"), (16, 16))
    assert np.abs(image.astype(int) - smooth).max() <= 3  # RGB order kept: red stays red


@pytest.mark.parametrize("change, message", [
    (lambda m: setattr(m, "encoding", "32FC1"), "encoding '32FC1' is not one of"),
    (lambda m: setattr(m, "width", 9), "frame is 9x6, expected 8x6"),
    (lambda m: setattr(m, "data", bytes(m.data)[:50]), "holds only 50 bytes"),
])
def test_raw_frames_that_do_not_fit_are_refused(change, message):
    msg = raw("rgb8").make(FRAME, 0, "cam")
    change(msg)
    with pytest.raises(ImageError, match=message):
        rgb_from_image(msg, SIZE)


@pytest.mark.parametrize("change, message", [
    (lambda m: setattr(m, "format", "16UC1; compressedDepth png"), "is not one of"),
    (lambda m: setattr(m, "format", "tiff"), "'tiff' is not one of"),
    (lambda m: setattr(m, "data", b"\xff\xd8 not a jpeg"), "do not decode"),
])
def test_compressed_frames_that_do_not_fit_are_refused(change, message):
    msg = compressed("jpeg").make(FRAME, 0, "cam")
    change(msg)
    with pytest.raises(ImageError, match=message):
        rgb_from_compressed(msg, SIZE)
    with pytest.raises(ImageError, match="frame is 8x6, expected 4x4"):
        rgb_from_compressed(compressed("png").make(FRAME, 0, "cam"), (4, 4))


def test_camera_info_carries_the_calibration_and_reads_back():
    calibration = load_calibration("sim_cameras.yaml")["corner"]
    msg = camera_info_msg(calibration, 3_000_000_001)
    assert (msg.width, msg.height, msg.header.frame_id) == (96, 96, "corner")
    assert list(msg.k) == pytest.approx(calibration.camera_matrix) and msg.distortion_model == "plumb_bob"
    assert list(msg.p) == pytest.approx([*calibration.camera_matrix[:3], 0, *calibration.camera_matrix[3:6], 0,
                                         0, 0, 1, 0])
    back = calibration_from_camera_info(msg, "corner")
    assert (back.width, back.camera_matrix, back.frame_id, back.parent_frame) == (
        96, pytest.approx(calibration.camera_matrix), "corner", "")
    msg.k = [0.0] * 9  # an uncalibrated driver
    with pytest.raises(CalibrationError, match="camera 'corner': camera_matrix must be"):
        calibration_from_camera_info(msg, "corner")
