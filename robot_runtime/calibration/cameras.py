"""Camera calibration files: intrinsics and mounting of each camera, in one YAML per robot.

The format follows ROS camera_info conventions so a team can paste what their
calibration tool wrote:

    cameras:
      corner:
        width: 96
        height: 96
        camera_matrix: [fx, 0, cx, 0, fy, cy, 0, 0, 1]     # row-major 3x3
        distortion_model: plumb_bob
        distortion_coefficients: [k1, k2, p1, p2, k3]
        frame_id: corner
        parent_frame: world
        translation: [x, y, z]                           # camera in parent, metres
        rotation_xyzw: [x, y, z, w]

The recorder copies the calibration of the cameras it records into each
episode's metadata (from this file, or without one the intrinsics of the drivers'
camera_info), so a training run knows the geometry its pixels came from.
`python -m robot_runtime.sim.calibration --sim push-v3 --out calibration/sim_cameras.yaml`
writes the simulated robot's file from MuJoCo's camera models.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from robot_runtime.files import write_text_atomic
from robot_runtime.resources import find_data_file


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

    def validate(self, name: str, source) -> None:
        problems = []
        if self.width <= 0 or self.height <= 0:
            problems.append(f"size {self.width}x{self.height}")
        if len(self.camera_matrix) != 9 or self.camera_matrix[8] != 1 or min(self.camera_matrix[0],
                                                                              self.camera_matrix[4]) <= 0:
            problems.append("camera_matrix must be 9 numbers [fx,0,cx,0,fy,cy,0,0,1] with fx, fy > 0")
        if len(self.translation) != 3 or len(self.rotation_xyzw) != 4:
            problems.append("translation needs 3 numbers and rotation_xyzw 4")
        elif abs(math.sqrt(sum(q * q for q in self.rotation_xyzw)) - 1) > 1e-3:
            problems.append("rotation_xyzw is not a unit quaternion")
        if problems:
            raise CalibrationError(f"{source}: camera '{name}': " + "; ".join(problems))


def load_calibration(path: str | Path) -> dict[str, CameraCalibration]:
    """Read a calibration file: a path, or a file name in the package's calibration/ (source tree or install)."""
    try:
        path = find_data_file("calibration", path)
        data = yaml.safe_load(path.read_text())
        cameras = {name: CameraCalibration(**entry) for name, entry in data["cameras"].items()}
    except FileNotFoundError as err:
        raise CalibrationError(f"no such calibration file: {err}") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise CalibrationError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from None
    for name, camera in cameras.items():
        camera.validate(name, path)
    return cameras


def write_calibration(path: Path, cameras: dict[str, CameraCalibration], comment: str = "") -> None:
    text = yaml.safe_dump({"cameras": {n: asdict(c) for n, c in cameras.items()}}, sort_keys=False)
    write_text_atomic(path, (f"# {comment}\n" if comment else "") + text)
