"""The picture a policy sees: a camera's frame undistorted, cropped and resized, the same way in training and
on the robot.

A policy learns on pictures of one geometry, `Preprocessing`: a pinhole camera
without distortion (`target_matrix`, at `crop_width` x `crop_height`), resized to
the network's input size. `Preprocessor` maps a camera, with its own calibration,
onto that geometry. Training maps every episode's frames with the calibration the
episode recorded, the robot maps its live frames with its own calibration file:
both feed the network the same geometry, so a camera recalibrated within tolerance
(refocused, or swapped for one of the same model) still shows the policy the scene
it learned on. numpy and OpenCV only: the robot half runs it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from robot_runtime.calibration.cameras import CalibrationError, CameraCalibration


@dataclass(frozen=True)
class Preprocessing:
    target_matrix: tuple[float, ...]  # 9 numbers, row-major: the undistorted, cropped picture's camera
    crop_width: int
    crop_height: int
    width: int                        # the policy's input size
    height: int

    @classmethod
    def of(cls, camera: CameraCalibration, size: tuple[int, int] | None = None,
           crop: tuple[int, int, int, int] | None = None) -> Preprocessing:
        """The geometry of `camera`'s frames undistorted in place, cut to `crop` (x, y, width, height in
        pixels; the whole frame by default) and resized to `size` (height, width; the crop's by default)."""
        x, y, w, h = crop or (0, 0, camera.width, camera.height)
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > camera.width or y + h > camera.height:
            raise CalibrationError(f"crop {crop} does not fit in the {camera.width}x{camera.height} frame")
        k = np.array(camera.camera_matrix, dtype=np.float64).reshape(3, 3)
        k[0, 2] -= x
        k[1, 2] -= y
        height, width = size or (h, w)
        return cls(tuple(float(v) for v in k.ravel()), w, h, int(width), int(height))

    def to_json(self) -> dict:
        return {**asdict(self), "target_matrix": list(self.target_matrix)}

    @classmethod
    def from_json(cls, data, where: str) -> Preprocessing:
        try:
            p = cls(tuple(float(v) for v in data["target_matrix"]), *(int(data[k]) for k in (
                "crop_width", "crop_height", "width", "height")))
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"{where}: not a preprocessing record ({type(err).__name__}: {err})") from None
        if len(p.target_matrix) != 9 or not np.all(np.isfinite(p.target_matrix)) or min(
                p.crop_width, p.crop_height, p.width, p.height) <= 0:
            raise CalibrationError(f"{where}: preprocessing needs a 9-number target_matrix and positive sizes")
        return p


class Preprocessor:
    """Maps one camera's frames onto a `Preprocessing`; the undistortion map is built once."""

    def __init__(self, camera: CameraCalibration, preprocessing: Preprocessing):
        self.camera, self.preprocessing = camera, preprocessing
        k = np.array(camera.camera_matrix, dtype=np.float64).reshape(3, 3)
        dist = np.array(camera.distortion_coefficients, dtype=np.float64)
        target = np.array(preprocessing.target_matrix).reshape(3, 3)
        crop = (preprocessing.crop_width, preprocessing.crop_height)
        self.remaps = not (np.allclose(k, target, rtol=0, atol=1e-9) and not dist.any()
                           and crop == (camera.width, camera.height))
        self.resizes = crop != (preprocessing.width, preprocessing.height)
        if self.remaps:
            self._maps = cv2.initUndistortRectifyMap(k, dist, None, target, crop, cv2.CV_16SC2)

    @property
    def identity(self) -> bool:
        return not (self.remaps or self.resizes)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] of the camera's size in, uint8 of the policy's input size out."""
        self._check(frame.shape[:2])
        if self.remaps:
            frame = cv2.remap(frame, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if self.resizes:
            p = self.preprocessing
            frame = cv2.resize(frame, (p.width, p.height), interpolation=cv2.INTER_AREA)
        return frame

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """A stack [N, H, W, 3] mapped frame by frame (training's path through the same code)."""
        self._check(frames.shape[1:3])
        if self.identity:
            return frames
        p = self.preprocessing
        out = np.empty((len(frames), p.height, p.width, frames.shape[-1]), dtype=frames.dtype)
        for i, frame in enumerate(frames):
            out[i] = self(frame)
        return out

    def _check(self, height_width: tuple[int, ...]) -> None:
        if tuple(height_width) != (self.camera.height, self.camera.width):
            raise CalibrationError(f"frames are {height_width[1]}x{height_width[0]}, the camera's calibration is "
                                   f"for {self.camera.width}x{self.camera.height}")
