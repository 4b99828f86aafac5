"""The simulated robot's calibration file, from MuJoCo's camera models.

`python -m robot_runtime.sim.calibration --sim push-v3 --out calibration/sim_cameras.yaml`
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import mujoco
import numpy as np

from robot_runtime.calibration.cameras import CameraCalibration, write_calibration
from robot_runtime.sim.metaworld_robot import ROTATED_CAMERAS, MetaWorldRobot, SimConfig


def sim_calibration(env_name: str, cameras: list[str], size: int) -> dict[str, CameraCalibration]:
    """Pinhole intrinsics from each MuJoCo camera's vertical field of view, and its world pose.

    The principal point is the image centre in OpenCV's pixel-centre convention, (size - 1) / 2, and the
    pose is the optical frame of the image the sim publishes: MuJoCo's camera frame (looking along -z, +y
    up) with y and z turned over, and half a turn about the optical axis more for the cameras the sim
    publishes rotated by 180 degrees (the `corner*` ones). Both conventions are the ones the calibration
    tests recover from MuJoCo renders (sim/board_scene.py): the principal point within 1 px, the pose 0.3 mm.
    """
    robot = MetaWorldRobot(SimConfig(env_name=env_name, cameras=tuple(cameras), image_size=size, render=False))
    model, data = robot._env.model, robot._env.data
    mujoco.mj_forward(model, data)
    out = {}
    for name in cameras:
        cam = model.camera(name)
        f = 0.5 * size / math.tan(math.radians(float(cam.fovy[0])) / 2)
        optical = data.cam(name).xmat.reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        if name in ROTATED_CAMERAS:
            optical = optical @ np.diag([-1.0, -1.0, 1.0])
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, optical.ravel())
        w, x, y, z = (float(v) for v in quat)
        c = (size - 1) / 2
        out[name] = CameraCalibration(width=size, height=size, camera_matrix=[f, 0, c, 0, f, c, 0, 0, 1],
                                      frame_id=name, translation=[float(v) for v in data.cam(name).xpos],
                                      rotation_xyzw=[x, y, z, w])
    robot.close()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", default="push-v3", help="MetaWorld task whose scene to read")
    parser.add_argument("--cameras", default="corner,gripperPOV")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cameras = sim_calibration(args.sim, args.cameras.split(","), args.size)
    write_calibration(args.out, cameras, f"Simulated cameras of MetaWorld {args.sim} at {args.size}x{args.size}, "
                                         f"from MuJoCo (python -m robot_runtime.sim.calibration)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
