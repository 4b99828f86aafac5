"""Where a camera is mounted, from robot poses and board views (hand-eye calibration).

Eye-in-hand: the camera rides on the gripper and the board stays put; the mounting
is the camera in the gripper frame. Eye-to-hand: the camera stands still and the
board rides on the gripper; the mounting is the camera in the robot's base frame.
Either way, a chain through every view must close on one constant transform (the
board in the base, or the board in the gripper), which is the AX = XB problem
`cv2.calibrateHandEye` solves. opencv-python 5.0.0.93 does not bind that function
(opencv#29565, fixed upstream in #29584), so where it is missing the same method
(Park & Martin's, OpenCV's CALIB_HAND_EYE_PARK) runs here.

Poses are 4x4 transforms: robot poses are the gripper in the base (what tf's
base -> gripper lookup or forward kinematics give), board poses the board in the
camera's optical frame, the mounting the camera's optical frame in its parent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np

MODES = ("eye-in-hand", "eye-to-hand")
MIN_POSES = 3             # two motions with different rotation axes: the least that fixes the mounting
MIN_MOTION_DEG = 5.0      # a pair of poses that turns the gripper less than this says little about rotation


class HandEyeError(ValueError):
    """Poses that cannot give a mounting, saying which and why."""


@dataclass
class HandEyeResult:
    mode: str
    mounting: np.ndarray            # 4x4: the camera (optical frame) in the gripper or in the base
    fixed: np.ndarray               # 4x4: the constant of the chain: the board in the base or in the gripper
    spread_m: float                 # how far the per-view board positions stray from `fixed` (max), metres
    spread_deg: float               # and their orientations (max), degrees
    solver: str


def solve(robot_poses: list[np.ndarray], board_poses: list[np.ndarray], mode: str) -> HandEyeResult:
    """The camera's mounting from paired robot poses (gripper in base) and board poses (board in camera)."""
    if mode not in MODES:
        raise HandEyeError(f"mode '{mode}' is not one of {MODES}")
    if len(robot_poses) != len(board_poses):
        raise HandEyeError(f"{len(robot_poses)} robot poses for {len(board_poses)} board views: they go in pairs")
    if len(robot_poses) < MIN_POSES:
        raise HandEyeError(f"{len(robot_poses)} pose(s); at least {MIN_POSES} are needed (10-20 in practice), "
                           "turning the gripper about different axes between them")
    robot = [np.asarray(p, dtype=np.float64) for p in robot_poses]
    for i, pose in enumerate(robot):
        _check_rigid(pose, f"robot pose {i}")
    if mode == "eye-to-hand":  # the board rides on the gripper: the chain runs through base -> gripper
        robot = [np.linalg.inv(p) for p in robot]
    _check_rotation_spread(robot)
    board = [np.asarray(p, dtype=np.float64) for p in board_poses]
    calibrate = getattr(cv2, "calibrateHandEye", None)
    if calibrate is not None:
        rotation, translation = calibrate([p[:3, :3] for p in robot], [p[:3, 3] for p in robot],
                                          [p[:3, :3] for p in board], [p[:3, 3] for p in board],
                                          method=cv2.CALIB_HAND_EYE_PARK)
        mounting, solver = _rigid(rotation, np.ravel(translation)), "cv2.calibrateHandEye (Park)"
    else:
        mounting, solver = park_martin(robot, board), "Park & Martin (robot_runtime; cv2 lacks calibrateHandEye)"
    chain = [a @ mounting @ b for a, b in zip(robot, board)]
    fixed = _mean_pose(chain)
    spread_m = max(float(np.linalg.norm(c[:3, 3] - fixed[:3, 3])) for c in chain)
    spread_deg = max(_angle_deg(c[:3, :3].T @ fixed[:3, :3]) for c in chain)
    return HandEyeResult(mode, mounting, fixed, spread_m, spread_deg, solver)


def park_martin(robot: list[np.ndarray], board: list[np.ndarray]) -> np.ndarray:
    """X with A_i X B_i constant, from every pair of views: (A_j^-1 A_i) X = X (B_j B_i^-1), rotation by
    fitting the motions' rotation vectors (Park & Martin 1994), then translation by least squares."""
    motions = [(np.linalg.inv(robot[j]) @ robot[i], board[j] @ np.linalg.inv(board[i]))
               for i, j in combinations(range(len(robot)), 2)]
    alphas = np.array([cv2.Rodrigues(a[:3, :3])[0].ravel() for a, _ in motions])
    betas = np.array([cv2.Rodrigues(b[:3, :3])[0].ravel() for _, b in motions])
    u, _, vt = np.linalg.svd(betas.T @ alphas)        # rotation taking each beta onto its alpha
    rotation = vt.T @ np.diag([1.0, 1.0, np.linalg.det(vt.T @ u.T)]) @ u.T
    lhs = np.concatenate([a[:3, :3] - np.eye(3) for a, _ in motions])
    rhs = np.concatenate([rotation @ b[:3, 3] - a[:3, 3] for a, b in motions])
    translation = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return _rigid(rotation, translation)


def _check_rigid(pose: np.ndarray, what: str) -> None:
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise HandEyeError(f"{what} must be a 4x4 matrix of finite numbers, got shape {list(pose.shape)}")
    r = pose[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or abs(np.linalg.det(r) - 1) > 1e-4 or \
            not np.allclose(pose[3], [0, 0, 0, 1]):
        raise HandEyeError(f"{what} is not a rigid transform (rotation part not orthonormal, or last row not "
                           "0 0 0 1): poses are 4x4 homogeneous matrices in metres")


def _check_rotation_spread(robot: list[np.ndarray]) -> None:
    axes = []
    for i, j in combinations(range(len(robot)), 2):
        rvec = cv2.Rodrigues((np.linalg.inv(robot[j]) @ robot[i])[:3, :3])[0].ravel()
        if np.degrees(np.linalg.norm(rvec)) >= MIN_MOTION_DEG:
            axes.append(rvec / np.linalg.norm(rvec))
    if len(axes) < 2 or np.linalg.matrix_rank(np.array(axes), tol=math.sin(math.radians(MIN_MOTION_DEG))) < 2:
        raise HandEyeError(f"the gripper must turn by more than {MIN_MOTION_DEG:.0f} degrees about at least two "
                           "different axes between the poses; these poses only translate or turn about one axis")


def _rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


def _mean_pose(poses: list[np.ndarray]) -> np.ndarray:
    """The chordal mean: mean position, and the rotation nearest the mean rotation matrix."""
    u, _, vt = np.linalg.svd(np.mean([p[:3, :3] for p in poses], axis=0))
    return _rigid(u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt, np.mean([p[:3, 3] for p in poses], axis=0))


def _angle_deg(rotation: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))))
