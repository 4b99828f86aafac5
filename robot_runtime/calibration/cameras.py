"""Camera calibration files: intrinsics and mounting of each camera, in one YAML per robot.

The format follows ROS camera_info conventions so a team can paste what their
calibration tool wrote:

    cameras:
      corner:
        width: 96
        height: 96
        camera_matrix: [fx, 0, cx, 0, fy, cy, 0, 0, 1]     # row-major 3x3, OpenCV pixel centres
        distortion_model: plumb_bob
        distortion_coefficients: [k1, k2, p1, p2, k3]
        frame_id: corner
        parent_frame: world
        translation: [x, y, z]                           # the optical frame in parent, metres
        rotation_xyzw: [x, y, z, w]
        version: 3                                       # bumped by each robot-runtime-calibrate intrinsics
        reprojection_error_px: 0.12                      # RMS of that calibration's board corners
        calibrated_at: '2026-12-03T06:00:00+00:00'

The mounting is the camera's optical frame (x right, y down, z forward: OpenCV's
and ROS's `*_optical_frame`) in `parent_frame`: the gripper for a camera on the
arm, the robot's base for a fixed one. `robot-runtime-calibrate` writes the
intrinsics and the mounting into a camera's entry and leaves the others alone.

The recorder copies the calibration of the cameras it records into each
episode's metadata (from this file, or without one the intrinsics of the drivers'
camera_info), so a training run knows the geometry its pixels came from.
`python -m robot_runtime.sim.calibration --sim push-v3 --out calibration/sim_cameras.yaml`
writes the simulated robot's file from MuJoCo's camera models.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from robot_runtime.files import UnsafeNameError, check_name, write_text_atomic
from robot_runtime.resources import find_data_file

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
MAX_FILE_BYTES = 1 << 20


class CalibrationError(ValueError):
    pass


@dataclass
class CameraCalibration:
    width: int
    height: int
    camera_matrix: list[float]
    distortion_model: str = "plumb_bob"
    distortion_coefficients: list[float] = field(default_factory=lambda: [0.0] * 5)
    frame_id: str = ""
    parent_frame: str = "world"
    translation: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    rotation_xyzw: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 1.0])
    version: int = 0
    reprojection_error_px: float | None = None
    calibrated_at: str = ""

    @classmethod
    def from_camera_info(cls, name: str, width: int, height: int, k: list[float], d: list[float],
                         distortion_model: str, frame_id: str) -> CameraCalibration:
        """The intrinsics of a sensor_msgs/CameraInfo's fields (a driver's live calibration). The mounting is not
        in a CameraInfo: `parent_frame` stays empty to say so."""
        camera = cls(width=int(width), height=int(height), camera_matrix=[float(v) for v in k],
                     distortion_model=distortion_model or "plumb_bob",
                     distortion_coefficients=[float(v) for v in d], frame_id=frame_id, parent_frame="")
        camera.validate(name, "camera_info")
        return camera

    @property
    def intrinsics_sha256(self) -> str:
        """The digest of what shapes the picture (size, matrix, distortion): equal digests, equal geometry."""
        text = json.dumps([self.width, self.height, [float(v) for v in self.camera_matrix], self.distortion_model,
                           [float(v) for v in self.distortion_coefficients]])
        return hashlib.sha256(text.encode()).hexdigest()

    def validate(self, name: str, source) -> None:
        problems = []
        if not _numbers(self.camera_matrix, 9) or not _numbers(self.distortion_coefficients) or \
                not _numbers(self.translation, 3) or not _numbers(self.rotation_xyzw, 4):
            problems.append("camera_matrix needs 9 numbers, distortion_coefficients numbers, translation 3 and "
                            "rotation_xyzw 4")
        elif self.camera_matrix[8] != 1 or min(self.camera_matrix[0], self.camera_matrix[4]) <= 0:
            problems.append("camera_matrix must be 9 numbers [fx,0,cx,0,fy,cy,0,0,1] with fx, fy > 0")
        elif abs(math.sqrt(sum(q * q for q in self.rotation_xyzw)) - 1) > 1e-3:
            problems.append("rotation_xyzw is not a unit quaternion")
        if type(self.width) is not int or type(self.height) is not int or self.width <= 0 or self.height <= 0:
            problems.append(f"size {self.width}x{self.height}")
        if self.distortion_model not in DISTORTION_MODELS:
            problems.append(f"distortion_model '{self.distortion_model}' is not one of {DISTORTION_MODELS}")
        if type(self.version) is not int or self.version < 0:
            problems.append(f"version {self.version!r} must be an integer >= 0")
        if not all(type(v) is str for v in (self.frame_id, self.parent_frame, self.calibrated_at)):
            problems.append("frame_id, parent_frame and calibrated_at must be text")
        if problems:
            raise CalibrationError(f"{source}: camera '{name}': " + "; ".join(problems))


def rotation_from_xyzw(q) -> np.ndarray:
    """The 3x3 rotation of a unit quaternion (x, y, z, w), the file's convention (and ROS's)."""
    x, y, z, w = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def xyzw_from_rotation(r) -> list[float]:
    """The unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation (Shepperd's method: stable for any angle)."""
    r = np.asarray(r, dtype=np.float64)
    trace = np.trace(r)
    i = int(np.argmax([trace, r[0, 0], r[1, 1], r[2, 2]]))
    if i == 0:
        s = 2 * math.sqrt(1 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    else:
        a, b, c = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][i - 1]
        s = 2 * math.sqrt(1 + r[a, a] - r[b, b] - r[c, c])
        q = [0.0] * 3 + [(r[c, b] - r[b, c]) / s]
        q[a], q[b], q[c] = s / 4, (r[a, b] + r[b, a]) / s, (r[a, c] + r[c, a]) / s
    q = np.array(q) * (1 if q[3] >= 0 else -1)
    return [float(v) for v in q / np.linalg.norm(q)]


def _numbers(values, count: int | None = None) -> bool:
    return isinstance(values, list) and (count is None or len(values) == count) and all(
        type(v) in (int, float) and math.isfinite(v) for v in values)


def load_calibration(path: str | Path) -> dict[str, CameraCalibration]:
    """Read a calibration file: a path, or a file name in the package's calibration/ (source tree or install)."""
    try:
        path = find_data_file("calibration", path)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CalibrationError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a calibration file")
        data = yaml.safe_load(path.read_text())
        known = {f.name for f in fields(CameraCalibration)}
        cameras = {}
        for name, entry in data["cameras"].items():
            unknown = sorted(set(entry) - known, key=str)
            if unknown:
                raise CalibrationError(f"{path}: camera '{name}': unknown field(s) {unknown}")
            cameras[check_name(name, "camera name")] = CameraCalibration(**entry)
    except (FileNotFoundError, IsADirectoryError) as err:
        raise CalibrationError(f"no such calibration file: {err}") from None
    except UnsafeNameError as err:
        raise CalibrationError(f"{path}: {err}") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise CalibrationError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from None
    for name, camera in cameras.items():
        camera.validate(name, path)
    return cameras


def write_calibration(path: Path, cameras: dict[str, CameraCalibration], comment: str = "") -> None:
    text = yaml.safe_dump({"cameras": {n: asdict(c) for n, c in cameras.items()}}, sort_keys=False)
    write_text_atomic(path, (f"# {comment}\n" if comment else "") + text)


def update_camera(path: Path, name: str, camera: CameraCalibration) -> None:
    """Write `camera` as `name`'s entry of the file at `path` (created if missing), keeping every other camera."""
    check_name(name, "camera name")
    camera.validate(name, path)
    cameras = load_calibration(path) if Path(path).exists() else {}
    cameras[name] = camera
    write_calibration(Path(path), cameras, "written by robot-runtime-calibrate")
