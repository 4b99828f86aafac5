"""The calibration a bundle was trained with, and the robot's check of its own cameras against it.

The manifest's `calibration` holds, per camera, the calibration's version, the
sha256 of its intrinsics, the intrinsics themselves and the `Preprocessing` the
policy was trained on. At load the robot compares its own calibration file with
it: the difference is measured as how far a pixel lands apart under the two
calibrations (the largest over the frame), a figure that folds focal length,
principal point and distortion into what the policy would notice. Beyond the
tolerance the robot refuses the bundle or warns, by its configuration; either way
the message names the camera and the difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from robot_runtime.calibration.cameras import CalibrationError, CameraCalibration
from robot_runtime.calibration.preprocess import Preprocessing, Preprocessor

MISMATCH_ACTIONS = ("refuse", "warn")
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)  # OpenCV's 5 steps leave 0.04 px
_INTRINSICS = ("width", "height", "camera_matrix", "distortion_model", "distortion_coefficients")


def record(camera: CameraCalibration, preprocessing: Preprocessing) -> dict:
    """A camera's entry of the manifest's `calibration`."""
    return {"version": camera.version, "intrinsics_sha256": camera.intrinsics_sha256,
            **{k: getattr(camera, k) for k in _INTRINSICS}, "preprocessing": preprocessing.to_json()}


def parse_record(name: str, data, source) -> tuple[CameraCalibration, Preprocessing]:
    """The trained-with calibration and preprocessing of `name` from a manifest's record."""
    where = f"{source}: calibration['{name}']"
    if not isinstance(data, dict):
        raise CalibrationError(f"{where} must be an object")
    try:
        camera = CameraCalibration(**{k: data[k] for k in _INTRINSICS}, version=data["version"])
    except (KeyError, TypeError) as err:
        raise CalibrationError(f"{where}: needs {['version', *_INTRINSICS]} ({type(err).__name__}: {err})") from None
    camera.validate(name, where)
    if data.get("intrinsics_sha256") != camera.intrinsics_sha256:
        raise CalibrationError(f"{where}: intrinsics_sha256 does not match its intrinsics; the manifest was edited")
    return camera, Preprocessing.from_json(data.get("preprocessing"), where)


def pixel_difference(a: CameraCalibration, b: CameraCalibration, grid: int = 9) -> float:
    """The farthest a pixel of `a`'s frame lands from itself when its ray is projected through `b`, over a
    grid x grid set of points spanning the frame. Frames of another size differ by the size itself."""
    if (a.width, a.height) != (b.width, b.height):
        return float("inf")
    xs, ys = np.meshgrid(np.linspace(0, a.width - 1, grid), np.linspace(0, a.height - 1, grid))
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    ka, kb = (np.array(c.camera_matrix, dtype=np.float64).reshape(3, 3) for c in (a, b))
    rays = cv2.undistortPoints(pixels, ka, np.array(a.distortion_coefficients, dtype=np.float64),
                               criteria=UNDISTORT_CRITERIA).reshape(-1, 2)
    rays3 = np.concatenate([rays, np.ones((len(rays), 1))], axis=1)
    moved, _ = cv2.projectPoints(rays3, np.zeros(3), np.zeros(3), kb, np.array(b.distortion_coefficients))
    return float(np.max(np.linalg.norm(moved.reshape(-1, 2) - pixels.reshape(-1, 2), axis=1)))


def describe(name: str, trained: CameraCalibration, robot: CameraCalibration, moved_px: float) -> str:
    if (trained.width, trained.height) != (robot.width, robot.height):
        return (f"camera {name}: the bundle was trained on {trained.width}x{trained.height} frames, this robot's "
                f"calibration is for {robot.width}x{robot.height}")
    (fx, _, cx, _, fy, cy), (rx, _, rcx, _, ry, rcy) = trained.camera_matrix[:6], robot.camera_matrix[:6]
    return (f"camera {name}: this robot's calibration (version {robot.version}, {robot.intrinsics_sha256[:12]}) "
            f"differs from the one the bundle was trained with (version {trained.version}, "
            f"{trained.intrinsics_sha256[:12]}) by up to {moved_px:.2f} px: fx {fx:.2f} -> {rx:.2f}, "
            f"fy {fy:.2f} -> {ry:.2f}, cx {cx:.2f} -> {rcx:.2f}, cy {cy:.2f} -> {rcy:.2f}")


@dataclass
class CameraCheck:
    """The outcome for one bundle on one robot: a preprocessor per camera, and what to say about it."""

    preprocessors: dict[str, Preprocessor] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def check_cameras(bundle_cameras: dict[str, tuple[int, int]], records: dict, robot: dict[str, CameraCalibration],
                  tolerance_px: float, action: str, source) -> CameraCheck:
    """Compare the robot's calibration with the bundle's record for every camera the bundle reads.

    `bundle_cameras`: name -> (height, width) of the policy's input; `records`: the manifest's `calibration`;
    `robot`: this robot's calibration file, or {} without one. Differences beyond `tolerance_px` become
    refusals (`action` 'refuse') or warnings ('warn'); the preprocessor maps the robot's own frames onto the
    trained geometry either way.
    """
    if action not in MISMATCH_ACTIONS:
        raise CalibrationError(f"calibration mismatch action '{action}' is not one of {MISMATCH_ACTIONS}")
    out = CameraCheck()
    if not records:
        out.warnings.append(f"{source}: the bundle records no camera calibration (exported before calibration "
                            "records): the cameras' geometry cannot be checked against what it was trained on")
    elif not robot:
        out.warnings.append("no calibration file on this robot: the cameras' geometry is not checked against the "
                            "calibration the bundle was trained with")
    for name, (height, width) in bundle_cameras.items():
        if not records:
            continue
        if name not in records:
            out.refusals.append(f"{source}: the bundle records no calibration for camera {name}")
            continue
        trained, preprocessing = parse_record(name, records[name], source)
        if (preprocessing.height, preprocessing.width) != (height, width):
            raise CalibrationError(f"{source}: calibration['{name}'] preprocesses to {preprocessing.width}x"
                                   f"{preprocessing.height}, the policy reads {width}x{height}")
        if not robot:
            continue
        if name not in robot:
            out.refusals.append(f"camera {name}: this robot's calibration file has no entry for it "
                                f"(it has {sorted(robot)})")
            continue
        moved = pixel_difference(trained, robot[name])
        if moved > tolerance_px:
            (out.refusals if action == "refuse" else out.warnings).append(
                describe(name, trained, robot[name], moved) + f", beyond the tolerance of {tolerance_px} px")
        if (robot[name].width, robot[name].height) == (trained.width, trained.height):
            out.preprocessors[name] = Preprocessor(robot[name], preprocessing)
    return out
