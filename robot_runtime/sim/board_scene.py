"""A simulated calibration target: a ChArUco board in an empty MuJoCo world, seen by one pinhole camera.

It is how the calibration tools are checked against the truth: the board and the
camera are placed at known poses, the camera's intrinsics are known exactly, and
the pictures are rendered by MuJoCo as a real camera would take them.

Poses are 4x4 transforms in the world: the board's in OpenCV's board frame (see
`calibration.board`) and the camera's as its optical frame (x right, y down, z
forward), as OpenCV's solvers report them. MuJoCo's camera frame looks down -z
with y up, hence the flip of y and z when the pose is handed to MuJoCo; the
rendered rows come out top first, and the principal point is the image centre in
OpenCV's pixel-centre convention, ((W - 1) / 2, (H - 1) / 2).
"""
from __future__ import annotations

import math

import cv2
import mujoco
import numpy as np

from robot_runtime.calibration.board import BoardSpec

_MUJOCO_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0])


class BoardScene:
    def __init__(self, spec: BoardSpec, width: int, height: int, fovy_deg: float, pixels_per_square: int = 64):
        self.spec, self.width, self.height = spec, width, height
        margin = pixels_per_square // 2  # a white border: the outer squares stand out from any background
        texture = cv2.cvtColor(spec.image(pixels_per_square, margin), cv2.COLOR_GRAY2BGR)
        ok, png = cv2.imencode(".png", texture)
        w, h = spec.size_m
        border = spec.square_m * margin / pixels_per_square
        # The box's +z face carries the texture upright; turned half a turn about x, that face is the board's
        # printed side (board z = 0, facing -z) with the texture's rows along board y.
        xml = f"""
<mujoco>
  <visual>
    <global offwidth="{width}" offheight="{height}"/>
    <quality offsamples="0"/>
    <headlight ambient="1 1 1" diffuse="0 0 0" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="board" type="2d" file="board.png"/>
    <material name="board" texture="board" specular="0" shininess="0" reflectance="0"/>
  </asset>
  <worldbody>
    <body name="board" mocap="true">
      <geom type="box" size="{w / 2 + border} {h / 2 + border} 0.0005" pos="{w / 2} {h / 2} 0.0005" quat="0 1 0 0"
            material="board" contype="0" conaffinity="0"/>
    </body>
    <camera name="camera" fovy="{fovy_deg}"/>
  </worldbody>
</mujoco>"""
        self.model = mujoco.MjModel.from_xml_string(xml, {"board.png": png.tobytes()})
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, height, width)
        self.focal_px = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)

    @property
    def camera_matrix(self) -> np.ndarray:
        """The camera's true intrinsics, OpenCV conventions."""
        return np.array([[self.focal_px, 0, (self.width - 1) / 2], [0, self.focal_px, (self.height - 1) / 2],
                         [0, 0, 1]])

    def render(self, world_camera: np.ndarray, world_board: np.ndarray = np.eye(4)) -> np.ndarray:
        """uint8 RGB [H, W, 3] of the board at `world_board` seen from the camera at `world_camera` (optical)."""
        self.model.cam_pos[0] = world_camera[:3, 3]
        self.model.cam_quat[0] = _quaternion(world_camera[:3, :3] @ _MUJOCO_FROM_OPTICAL)
        self.data.mocap_pos[0] = world_board[:3, 3]
        self.data.mocap_quat[0] = _quaternion(world_board[:3, :3])
        mujoco.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera="camera")
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


def _quaternion(rotation: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rotation, dtype=np.float64).ravel())
    return quat


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, -1.0, 0.0])) -> np.ndarray:
    """The optical-frame pose (4x4) of a camera at `eye` looking at `target`, image-up as close to `up` as it gets."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(-up, z)
    x = x / np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    pose[:3, 3] = eye
    return pose
