"""Pictures of a simulated ChArUco board from known poses, with the truth: for the calibration tests.

`intrinsic_views` moves the camera around a fixed board (distances 0.3-0.45 m, tilted up to 35 degrees each
way, the board put in every part of the image); `hand_eye_views` does the same through a robot whose camera
(eye-in-hand) or board (eye-to-hand) rides on the gripper at a known mounting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from robot_runtime.calibration.board import BoardSpec
from robot_runtime.sim.board_scene import BoardScene, look_at

WIDTH, HEIGHT, FOVY = 640, 480, 50.0
SPEC = BoardSpec()
# The truth of the hand-eye views: the camera 3 cm beside, 2 cm below and 4 cm ahead of the gripper, turned
# 10, -5 and 90 degrees; the board 10 cm off the base origin, face down, turned 20 degrees (eye-in-hand); for
# eye-to-hand the board is held 5 cm ahead of the gripper.
MOUNTING = np.eye(4)
MOUNTING[:3, :3] = cv2.Rodrigues(np.radians([10.0, -5.0, 90.0]))[0]
MOUNTING[:3, 3] = [0.03, -0.02, 0.04]
BOARD_IN_BASE = np.eye(4)
BOARD_IN_BASE[:3, :3] = cv2.Rodrigues(np.radians([180.0, 0.0, 20.0]))[0]
BOARD_IN_BASE[:3, 3] = [0.1, -0.05, 0.02]
BOARD_IN_GRIPPER = np.eye(4)
BOARD_IN_GRIPPER[:3, 3] = [0.0, 0.0, 0.05]


MODES = ("eye-in-hand", "eye-to-hand")


@dataclass
class Views:
    folder: Path
    camera_matrix: np.ndarray
    files: list[Path] = field(default_factory=list)
    robot_poses: dict[str, np.ndarray] = field(default_factory=dict)   # picture name -> gripper in base

    def write_poses(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({"poses": {n: p.tolist() for n, p in self.robot_poses.items()}}))
        return path


def camera_around_board(rng: np.random.Generator, index: int, focal_px: float) -> np.ndarray:
    """A camera pose in the board frame: on a sphere around the board's centre, then turned so the board
    lands in cell `index % 9` of a 3x3 split of the image."""
    centre = np.array([*np.array(SPEC.size_m) / 2, 0.0])
    yaw, pitch = np.radians(rng.uniform(-35, 35, size=2))
    direction = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), -np.cos(yaw) * np.cos(pitch)])
    pose = look_at(centre + direction * rng.uniform(0.3, 0.45), centre, up=np.array([rng.uniform(-0.3, 0.3), -1, 0]))
    ax = np.arctan(((index % 3) - 1) * 0.3 * WIDTH / focal_px)
    ay = np.arctan((((index // 3) % 3) - 1) * 0.3 * HEIGHT / focal_px)
    turn_y = np.array([[np.cos(ax), 0, -np.sin(ax)], [0, 1, 0], [np.sin(ax), 0, np.cos(ax)]])
    turn_x = np.array([[1, 0, 0], [0, np.cos(ay), np.sin(ay)], [0, -np.sin(ay), np.cos(ay)]])
    pose[:3, :3] = pose[:3, :3] @ turn_y @ turn_x
    return pose


def _save(folder: Path, index: int, image: np.ndarray) -> Path:
    path = folder / f"view_{index:03d}.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def lens_map(camera_matrix: np.ndarray, distortion, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """For each pixel of a picture through a lens with `distortion` (plumb_bob), where it is in the pinhole
    picture of the same camera matrix: float32 [H, W, 2], for `distort`."""
    from robot_runtime.calibration.records import UNDISTORT_CRITERIA

    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    points = np.stack([xs.ravel(), ys.ravel()], 1).reshape(-1, 1, 2)
    return cv2.undistortPoints(points, camera_matrix, np.asarray(distortion, dtype=np.float64), P=camera_matrix,
                               criteria=UNDISTORT_CRITERIA).reshape(height, width, 2)


def distort(pinhole: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """What the lens of `lens` (a lens_map) would have taken of the scene in a pinhole picture."""
    return cv2.remap(pinhole, lens[..., 0], lens[..., 1], cv2.INTER_LINEAR)


def intrinsic_views(folder: Path, count: int = 30, seed: int = 0, fovy: float = FOVY, distortion=None) -> Views:
    """`distortion`: plumb_bob coefficients of a lens the pictures are bent through (None: a pinhole)."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = BoardScene(SPEC, WIDTH, HEIGHT, fovy)
    rng = np.random.default_rng(seed)
    try:
        views = Views(folder, scene.camera_matrix)
        lens = lens_map(scene.camera_matrix, distortion) if distortion is not None else None
        for i in range(count):
            image = scene.render(camera_around_board(rng, i, scene.focal_px))
            if lens is not None:
                image = distort(image, lens)
            views.files.append(_save(folder, i, image))
        return views
    finally:
        scene.close()


def hand_eye_views(folder: Path, mode: str, count: int = 20, seed: int | None = None) -> Views:
    """Pictures and the gripper pose each was taken at; the truth is MOUNTING (camera in gripper for
    eye-in-hand, camera in base for eye-to-hand)."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = BoardScene(SPEC, WIDTH, HEIGHT, FOVY)
    rng = np.random.default_rng(seed if seed is not None else 1 + MODES.index(mode))
    try:
        views = Views(folder, scene.camera_matrix)
        for i in range(count):
            camera_in_board = camera_around_board(rng, i, scene.focal_px)
            if mode == "eye-in-hand":
                board, camera = BOARD_IN_BASE, BOARD_IN_BASE @ camera_in_board
                gripper = camera @ np.linalg.inv(MOUNTING)
            else:
                camera = MOUNTING
                board = camera @ np.linalg.inv(camera_in_board)
                gripper = board @ np.linalg.inv(BOARD_IN_GRIPPER)
            path = _save(folder, i, scene.render(camera, board))
            views.files.append(path)
            views.robot_poses[path.name] = gripper
        return views
    finally:
        scene.close()
