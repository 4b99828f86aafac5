"""Camera frames at the edge: sensor_msgs/Image or CompressedImage in, uint8 [H, W, 3] RGB out; CameraInfo.

Drivers publish raw frames (rgb8, bgr8, mono8; rgba8 and bgra8 too) on `camera/<name>/image_raw`, or
jpeg/png through image_transport's `compressed` plugin on `camera/<name>/image_raw/compressed`. Each
becomes RGB of the size the consumer expects, or is refused with an ImageError saying what arrived and
what to change: the node logs it (throttled) and drops the frame, so the policy holds for want of a
picture instead of acting on a wrong one. Frames are never resized: a camera at another resolution
than the bundle was trained on is a configuration to fix, not one to paper over.
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from robot_runtime.calibration.cameras import CameraCalibration
from robot_runtime.datatools.bag_import import ENCODINGS, image_to_rgb
from robot_runtime.nodes import ros_io

TRANSPORTS = ("raw", "compressed")  # the `image_transport` parameter: which message type to subscribe to
COMPRESSED_FORMATS = ("jpeg", "png")


class ImageError(ValueError):
    """A frame that cannot become what the consumer expects; the message says why."""


def _check_size(height: int, width: int, size: tuple[int, int]) -> None:
    if (height, width) != tuple(size):
        raise ImageError(f"frame is {width}x{height}, expected {size[1]}x{size[0]}: set the camera driver's "
                         f"resolution (or the bundle's / recorder's image size) to match")


def rgb_from_image(msg: Image, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] RGB of `size` (H, W) from a raw frame; rows may be padded (step > width * channels)."""
    channels = ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ImageError(f"encoding '{msg.encoding}' is not one of {sorted(ENCODINGS)}: publish one of those, "
                         f"or compressed jpeg/png with image_transport:=compressed")
    _check_size(msg.height, msg.width, size)
    if msg.step < msg.width * channels or len(msg.data) < msg.height * msg.step:
        raise ImageError(f"{msg.encoding} frame {msg.width}x{msg.height} with step {msg.step} holds only "
                         f"{len(msg.data)} bytes")
    return image_to_rgb(msg)


def rgb_from_compressed(msg: CompressedImage, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] RGB of `size` from a jpeg or png frame (image_transport's format, e.g. `rgb8; jpeg
    compressed bgr8`: OpenCV decodes it to BGR, grey frames to three equal channels)."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt or not any(f in fmt for f in ("jpeg", "jpg", "png")):
        raise ImageError(f"compressed format '{msg.format}' is not one of {COMPRESSED_FORMATS}")
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{len(msg.data)} bytes of '{msg.format}' do not decode")
    _check_size(*bgr.shape[:2], size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def subscribe_camera(node, camera: str, transport: str, size: tuple[int, int], on_frame, qos) -> object:
    """Subscribe to `camera` over `transport`; `on_frame(camera, stamp_ns, rgb)` gets every frame that converts.
    A frame that does not is logged (throttled) and dropped, never raised out of the callback."""
    return node.create_subscription(*camera_stream(node, camera, transport, size, on_frame), qos)


def camera_stream(node, camera: str, transport: str, size: tuple[int, int], on_frame) -> tuple:
    """(message type, topic, callback) of `camera` over `transport`, for `subscribe_camera` or another way
    of subscribing (the recorder's adaptive reliability)."""
    msg_type, topic, convert = {
        "raw": (Image, ros_io.camera_topic(camera), rgb_from_image),
        "compressed": (CompressedImage, ros_io.compressed_camera_topic(camera), rgb_from_compressed),
    }[transport]

    def callback(msg) -> None:
        try:
            image = convert(msg, size)
        except ImageError as err:
            node.get_logger().warning(f"camera {camera}: dropping frame: {err}", throttle_duration_sec=1.0)
            return
        on_frame(camera, ros_io.stamp_ns(msg.header), image)

    return msg_type, topic, callback


def camera_info_msg(calibration: CameraCalibration, ns: int) -> CameraInfo:
    """A CameraInfo of an unrectified camera (R = I, P = [K | 0]) from its calibration."""
    k = [float(v) for v in calibration.camera_matrix]
    msg = CameraInfo(width=calibration.width, height=calibration.height, k=k,
                     distortion_model=calibration.distortion_model,
                     d=[float(v) for v in calibration.distortion_coefficients],
                     r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                     p=[k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0])
    ros_io.set_stamp(msg.header, ns)
    msg.header.frame_id = calibration.frame_id
    return msg


def calibration_from_camera_info(msg: CameraInfo, camera: str) -> CameraCalibration:
    """The intrinsics a CameraInfo carries; raises CalibrationError for an uncalibrated one (K all zero)."""
    return CameraCalibration.from_camera_info(camera, msg.width, msg.height, list(msg.k), list(msg.d),
                                              msg.distortion_model, msg.header.frame_id)
