"""Camera intrinsics from board views: the solve, the board's pose in each view, and coverage feedback.

A calibration is only as good as its views: corners near every edge and corner of
the image pin the distortion down, and tilted views pin the focal length apart from
the distance. `Coverage` says which image regions and tilts are still missing, for a
team holding the board in front of a live camera or checking a folder of pictures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from robot_runtime.calibration.board import Detection

MIN_VIEWS = 8         # below this the distortion terms fit the noise
GRID = 3              # image regions per side for coverage
MIN_TILT_DEG = 15.0   # a view counts as tilted one way beyond this
TILTS = ("left", "right", "up", "down")


class IntrinsicsError(ValueError):
    """Views that cannot give a calibration, saying what to collect instead."""


@dataclass
class Intrinsics:
    camera_matrix: np.ndarray          # 3x3
    distortion: np.ndarray             # plumb_bob k1 k2 p1 p2 k3
    image_size: tuple[int, int]        # (width, height)
    reprojection_error: float          # RMS over every corner of every view, pixels
    view_errors: list[float]           # RMS per view, pixels
    board_poses: list[np.ndarray]      # per view, the board in the camera's optical frame (4x4)


def calibrate(detections: list[Detection], k_coefficients: int = 2, tangential: bool = True,
              min_views: int = MIN_VIEWS) -> Intrinsics:
    """Pinhole + plumb_bob intrinsics from `detections` of one camera (all the same image size).

    `k_coefficients` radial terms are solved (2: k1, k2 with k3 = 0, as ROS camera_calibration does by
    default: the third term of an ordinary lens mostly fits noise at the image edge; 3 for wide angles),
    the tangential p1, p2 unless `tangential` is False (they trade off against the principal point)."""
    if k_coefficients not in (0, 1, 2, 3):
        raise IntrinsicsError(f"k_coefficients {k_coefficients} must be 0, 1, 2 or 3 (plumb_bob has k1..k3)")
    if len(detections) < min_views:
        raise IntrinsicsError(f"{len(detections)} view(s) with the board found; at least {min_views} are needed: "
                              "take more pictures, the whole board in view, from different places and angles")
    sizes = {d.image_size for d in detections}
    if len(sizes) > 1:
        raise IntrinsicsError(f"the views have different image sizes {sorted(sizes)}: one camera, one resolution")
    size = sizes.pop()
    objects = [d.object_points.astype(np.float32) for d in detections]
    images = [d.image_points.astype(np.float32) for d in detections]
    flags = [cv2.CALIB_FIX_K1, cv2.CALIB_FIX_K2, cv2.CALIB_FIX_K3][k_coefficients:]
    flags = sum(flags) + (0 if tangential else cv2.CALIB_ZERO_TANGENT_DIST)
    try:
        rms, k, dist, rvecs, tvecs, _, _, per_view = cv2.calibrateCameraExtended(
            objects, images, size, None, None, flags=flags,
            criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12))[:8]
    except cv2.error as err:
        raise IntrinsicsError(f"OpenCV could not solve the calibration from these {len(detections)} views "
                              f"({err.err}): take views from more places and angles") from None
    poses = [pose_matrix(r, t) for r, t in zip(rvecs, tvecs)]
    return Intrinsics(k, dist.ravel()[:5], size, float(rms), [float(e) for e in np.ravel(per_view)], poses)


def board_pose(detection: Detection, camera_matrix: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """The board's pose in the camera's optical frame (4x4) from one view under known intrinsics."""
    try:
        ok, rvec, tvec = cv2.solvePnP(detection.object_points, detection.image_points, camera_matrix, distortion,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(detection.object_points, detection.image_points, camera_matrix,
                                              distortion, rvec, tvec)
    except cv2.error:
        ok = False
    if not ok:
        raise IntrinsicsError("the board's pose could not be solved from a view (its corners all on one line?)")
    return pose_matrix(rvec, tvec)


def reprojection_errors(detection: Detection, pose: np.ndarray, camera_matrix: np.ndarray,
                        distortion: np.ndarray) -> np.ndarray:
    """Pixel distance between each found corner and where the board pose and intrinsics put it."""
    rvec, _ = cv2.Rodrigues(pose[:3, :3])
    projected, _ = cv2.projectPoints(detection.object_points, rvec, pose[:3, 3], camera_matrix, distortion)
    return np.linalg.norm(projected.reshape(-1, 2) - detection.image_points, axis=1)


def pose_matrix(rvec, tvec) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))[0]
    pose[:3, 3] = np.ravel(tvec)
    return pose


@dataclass
class Coverage:
    """Which image regions (a GRID x GRID split) have had board corners, and which tilts have been seen."""

    image_size: tuple[int, int]
    cells: np.ndarray = field(default=None)          # [GRID, GRID] corner counts, row-major from the top left
    tilts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TILTS, 0))

    def __post_init__(self):
        if self.cells is None:
            self.cells = np.zeros((GRID, GRID), dtype=np.int64)

    def add(self, detection: Detection) -> None:
        width, height = self.image_size
        cols = np.clip((detection.image_points[:, 0] * GRID // width).astype(int), 0, GRID - 1)
        rows = np.clip((detection.image_points[:, 1] * GRID // height).astype(int), 0, GRID - 1)
        np.add.at(self.cells, (rows, cols), 1)
        for tilt in view_tilts(detection):
            self.tilts[tilt] += 1

    def missing(self) -> list[str]:
        """What still needs views, in words; empty when every region and every tilt has some."""
        names = [["top left", "top", "top right"], ["left", "centre", "right"],
                 ["bottom left", "bottom", "bottom right"]]
        todo = [f"board corners in the {names[r][c]} of the image" for r in range(GRID) for c in range(GRID)
                if self.cells[r, c] == 0]
        todo += [f"a view with the board turned {t} (by more than {MIN_TILT_DEG:.0f} degrees)"
                 for t, n in self.tilts.items() if n == 0]
        return todo

    def report(self) -> str:
        cells = " / ".join(" ".join(f"{n:3d}" for n in row) for row in self.cells)
        tilts = ", ".join(f"{t} {n}" for t, n in self.tilts.items())
        missing = self.missing()
        return f"corners per region [{cells}]; tilted views: {tilts}" + (
            f"; still needed: {'; '.join(missing)}" if missing else "; coverage complete")


def view_tilts(detection: Detection) -> list[str]:
    """Which ways the board is turned in a view, from a pose under a rough camera (focal = image width)."""
    width, height = detection.image_size
    rough = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    try:
        normal = board_pose(detection, rough, np.zeros(5))[:3, 2]  # the board's z axis in the camera frame
    except IntrinsicsError:
        return []
    about_y = math.degrees(math.atan2(normal[0], normal[2]))   # turned left/right
    about_x = math.degrees(math.atan2(normal[1], normal[2]))   # turned up/down
    found = []
    if about_y > MIN_TILT_DEG:
        found.append("right")
    if about_y < -MIN_TILT_DEG:
        found.append("left")
    if about_x > MIN_TILT_DEG:
        found.append("down")
    if about_x < -MIN_TILT_DEG:
        found.append("up")
    return found
