"""Robot poses for hand-eye calibration, paired with the pictures taken at them: from a poses file beside a
folder of pictures, or from an episode that recorded the camera and the gripper's pose in its state.

A pose is the gripper in the robot's base, in metres: what tf's base -> gripper lookup
or the robot's forward kinematics give at the moment of the picture. In a file, each
picture's pose is a 4x4 matrix (nested or flat) or {translation, rotation_xyzw}; in an
episode, seven state entries named by the caller (x, y, z, qx, qy, qz, qw).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from robot_runtime.calibration.cameras import rotation_from_xyzw
from robot_runtime.calibration.views import ViewsError, image_files, read_image
from robot_runtime.episode import EpisodeStore

View = tuple[str, np.ndarray, np.ndarray]  # (where the picture came from, uint8 RGB, gripper in base 4x4)


def read_poses(path: Path) -> dict[str, np.ndarray]:
    """Picture file name -> gripper-in-base 4x4, from a poses YAML/JSON file."""
    try:
        data = yaml.safe_load(path.read_text())
        poses = {str(name): pose_from(value) for name, value in data["poses"].items()}
    except FileNotFoundError:
        raise ViewsError(f"{path}: no such poses file") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError, UnicodeDecodeError) as err:
        raise ViewsError(f"{path}: not a poses file (poses: {{<picture>: 4x4 matrix or {{translation, "
                         f"rotation_xyzw}}}}): {type(err).__name__}: {err}") from None
    return poses


def pose_from(value) -> np.ndarray:
    if isinstance(value, dict):
        return pose_of(value["translation"], value["rotation_xyzw"])
    return np.asarray(value, dtype=np.float64).reshape(4, 4)


def pose_of(translation, rotation_xyzw) -> np.ndarray:
    quat = np.asarray(rotation_xyzw, dtype=np.float64)
    if quat.shape != (4,) or not np.all(np.isfinite(quat)) or abs(np.linalg.norm(quat) - 1) > 1e-3:
        raise ValueError(f"rotation_xyzw {list(quat.ravel())} is not a unit quaternion")
    pose = np.eye(4)
    pose[:3, :3] = rotation_from_xyzw(quat)
    pose[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return pose


def file_views(images: str, poses_path: Path) -> list[View]:
    """Every picture of `images` with its pose from `poses_path`; a picture without a pose, or a pose without
    a picture, is an error naming them."""
    poses = read_poses(poses_path)
    files = image_files(images)
    names = {f.name for f in files}
    unknown = sorted(set(poses) - names)
    if unknown:
        raise ViewsError(f"{poses_path}: poses for pictures not among {images}: {unknown[:5]}")
    missing = sorted(names - set(poses))
    if missing:
        raise ViewsError(f"{poses_path}: no pose for the picture(s) {missing[:5]}; every picture needs the robot "
                         "pose it was taken at")
    return [(f.name, read_image(f), poses[f.name]) for f in files]


def episode_views(store: Path, episode_id: str, camera: str, pose_state: list[str], every: int) -> list[View]:
    """Every `every`-th step of a recorded episode: the camera's frame and the gripper pose in its state."""
    episode = EpisodeStore(store, create=False).open(episode_id)
    layout = episode.layout
    if camera not in layout.cameras:
        raise ViewsError(f"episode {episode_id} recorded no camera '{camera}' (it has {sorted(layout.cameras)})")
    if len(pose_state) != 7:
        raise ViewsError(f"--pose-state needs 7 state names (x, y, z, qx, qy, qz, qw), got {len(pose_state)}")
    missing = [n for n in pose_state if n not in layout.state_names]
    if missing:
        raise ViewsError(f"episode {episode_id} has no state entries {missing} (it has {list(layout.state_names)})")
    if every < 1:
        raise ViewsError(f"--every {every} must be >= 1")
    columns = [layout.state_names.index(n) for n in pose_state]
    state, frames = episode.array("state")[:, columns], episode.images(camera)
    views = []
    for step in range(0, len(state), every):
        try:
            views.append((f"{episode_id} step {step}", frames[step], pose_of(state[step, :3], state[step, 3:])))
        except ValueError as err:
            raise ViewsError(f"episode {episode_id} step {step}: {err}") from None
    return views
