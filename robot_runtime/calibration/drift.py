"""Has a camera moved on from its calibration? A check a team runs after maintenance, from a few board views.

Two figures: the reprojection error of the views under the stored calibration (a
bumped lens or a swapped camera shows up as corners far from where the stored model
puts them), and the focal length and principal point refitted on the views with
the stored distortion held (what changed, in the units a team thinks in).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robot_runtime.calibration.board import Detection
from robot_runtime.calibration.cameras import CameraCalibration
from robot_runtime.calibration.intrinsics import IntrinsicsError, board_pose, reprojection_errors

MIN_CHECK_VIEWS = 3


@dataclass(frozen=True)
class Tolerance:
    reprojection_px: float = 1.0     # RMS of the views' corners under the stored calibration
    focal_fraction: float = 0.01     # relative change of fx or fy
    center_px: float = 2.0           # shift of the principal point


@dataclass
class Drift:
    views: int
    reprojection_px: float
    focal_change: tuple[float, float]    # relative, (fx, fy)
    center_shift_px: tuple[float, float]

    def beyond(self, tolerance: Tolerance) -> list[str]:
        """What is out of tolerance, in words; empty when the stored calibration still holds."""
        out = []
        if self.reprojection_px > tolerance.reprojection_px:
            out.append(f"reprojection error {self.reprojection_px:.2f} px > {tolerance.reprojection_px} px")
        if max(map(abs, self.focal_change)) > tolerance.focal_fraction:
            out.append(f"focal length changed by {100 * self.focal_change[0]:+.2f}% / "
                       f"{100 * self.focal_change[1]:+.2f}% (fx / fy) > {100 * tolerance.focal_fraction:.2f}%")
        if float(np.hypot(*self.center_shift_px)) > tolerance.center_px:
            out.append(f"principal point moved by ({self.center_shift_px[0]:+.2f}, {self.center_shift_px[1]:+.2f}) "
                       f"px > {tolerance.center_px} px")
        return out

    def report(self) -> str:
        return (f"{self.views} views: reprojection error {self.reprojection_px:.3f} px under the stored calibration; "
                f"refitted focal {100 * self.focal_change[0]:+.2f}% / {100 * self.focal_change[1]:+.2f}% (fx / fy), "
                f"principal point ({self.center_shift_px[0]:+.2f}, {self.center_shift_px[1]:+.2f}) px")


def measure(camera: CameraCalibration, detections: list[Detection], min_views: int = MIN_CHECK_VIEWS) -> Drift:
    if len(detections) < min_views:
        raise IntrinsicsError(f"{len(detections)} view(s) with the board found; the check needs at least "
                              f"{min_views}, from different angles")
    sizes = {d.image_size for d in detections}
    if sizes != {(camera.width, camera.height)}:
        raise IntrinsicsError(f"the views are {sorted(sizes)} (width, height) but the stored calibration is for "
                              f"{camera.width}x{camera.height}: check the camera at its calibrated resolution")
    k = np.array(camera.camera_matrix, dtype=np.float64).reshape(3, 3)
    dist = np.array(camera.distortion_coefficients, dtype=np.float64)
    errors = np.concatenate([reprojection_errors(d, board_pose(d, k, dist), k, dist) for d in detections])
    held = cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | \
        cv2.CALIB_FIX_TANGENT_DIST
    try:
        _, refit, _, _, _ = cv2.calibrateCamera([d.object_points.astype(np.float32) for d in detections],
                                                [d.image_points.astype(np.float32) for d in detections],
                                                (camera.width, camera.height), k.copy(), dist.copy(), flags=held)
    except cv2.error as err:
        raise IntrinsicsError(f"OpenCV could not refit the camera from these views ({err.err}): "
                              "take views from more angles") from None
    return Drift(len(detections), float(np.sqrt(np.mean(errors ** 2))),
                 (float(refit[0, 0] / k[0, 0] - 1), float(refit[1, 1] / k[1, 1] - 1)),
                 (float(refit[0, 2] - k[0, 2]), float(refit[1, 2] - k[1, 2])))
