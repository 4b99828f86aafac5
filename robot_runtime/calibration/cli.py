"""robot-runtime-calibrate: camera intrinsics, hand-eye mounting and drift checks from ChArUco board views.

  robot-runtime-calibrate intrinsics --camera wrist --images shots/ --file calibration/robot.yaml
  robot-runtime-calibrate intrinsics --camera wrist --topic camera/wrist/image_raw --file ...   (live)
  robot-runtime-calibrate hand-eye --camera wrist --mode eye-in-hand --images arm_shots/ --poses poses.yaml \\
      --parent-frame tool0 --file calibration/robot.yaml
  robot-runtime-calibrate hand-eye --camera wrist --mode eye-in-hand --episode episodes/ep-0042 \\
      --pose-state tool_x,tool_y,tool_z,tool_qx,tool_qy,tool_qz,tool_qw --parent-frame tool0 --file ...
  robot-runtime-calibrate check --camera wrist --images after_service/ --file calibration/robot.yaml

Board options (--squares-x ... --dictionary) describe the printed board; measure its
squares with a ruler, printers scale. `intrinsics` writes the camera's entry (version
bumped, reprojection error, time; the mounting kept), `hand-eye` its mounting (the
intrinsics kept), `check` writes nothing and exits 1 when the camera drifted beyond
the tolerances. Any other problem exits 2 with the reason.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from robot_runtime.calibration import drift, hand_eye, poses
from robot_runtime.calibration.board import BoardDetector, BoardError, BoardSpec
from robot_runtime.calibration.cameras import (
    CalibrationError,
    CameraCalibration,
    load_calibration,
    update_camera,
    xyzw_from_rotation,
)
from robot_runtime.calibration.intrinsics import IntrinsicsError, board_pose, calibrate
from robot_runtime.calibration.views import ViewCollector, ViewsError, detect_files, image_files
from robot_runtime.episode import EpisodeError
from robot_runtime.files import UnsafeNameError, check_name

ERRORS = (CalibrationError, BoardError, IntrinsicsError, hand_eye.HandEyeError, ViewsError, UnsafeNameError,
          EpisodeError)
LiveSource = Callable[[str, ViewCollector, float], None]  # (topic, collector, timeout_s): feeds frames until done


def main(argv: list[str] | None = None, live: LiveSource | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_name(args.camera, "camera name")
        return args.run(args, live)
    except ERRORS as err:
        print(f"robot-runtime-calibrate {args.command}: {err}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robot-runtime-calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    intr = _command(sub, "intrinsics", run_intrinsics, "camera matrix and distortion from board views")
    source = intr.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="a folder of pictures or a glob pattern ('shots/*.png')")
    source.add_argument("--topic", help="a sensor_msgs/Image topic to collect views from, live")
    intr.add_argument("--views", type=int, default=20, help="views to collect live (default 20)")
    intr.add_argument("--timeout", type=float, default=300.0, help="seconds to collect live before giving up")
    intr.add_argument("--k-coefficients", type=int, default=2, choices=(0, 1, 2, 3),
                      help="radial distortion terms to solve (default 2, k3 = 0; 3 for wide-angle lenses)")
    intr.add_argument("--no-tangential", action="store_true", help="hold p1 = p2 = 0")
    he = _command(sub, "hand-eye", run_hand_eye, "where the camera is mounted, from robot poses and board views")
    he.add_argument("--mode", required=True, choices=hand_eye.MODES,
                    help="eye-in-hand: camera on the gripper, board fixed; eye-to-hand: camera fixed, board held")
    he.add_argument("--images", help="a folder of pictures or a glob pattern (with --poses)")
    he.add_argument("--poses", type=Path,
                    help="YAML/JSON: poses: {<picture file name>: 4x4 gripper-in-base matrix, or "
                         "{translation: [x, y, z], rotation_xyzw: [x, y, z, w]}}, metres")
    he.add_argument("--episode", help="instead: STORE/EPISODE_ID, an episode that recorded the camera and the "
                                      "gripper's pose in its state")
    he.add_argument("--pose-state", help="with --episode: the state entries x,y,z,qx,qy,qz,qw of the gripper in "
                                         "the base")
    he.add_argument("--every", type=int, default=1, help="with --episode: use every n-th step")
    he.add_argument("--parent-frame", required=True,
                    help="the frame the mounting is in: the gripper link (eye-in-hand) or the base (eye-to-hand)")
    ck = _command(sub, "check", run_check, "drift of the camera against its stored calibration (writes nothing)")
    ck.add_argument("--images", required=True, help="a folder of pictures or a glob pattern (3 or more views)")
    ck.add_argument("--max-error-px", type=float, default=drift.Tolerance.reprojection_px)
    ck.add_argument("--max-focal-change", type=float, default=drift.Tolerance.focal_fraction,
                    help="relative, e.g. 0.01 for 1%%")
    ck.add_argument("--max-center-change-px", type=float, default=drift.Tolerance.center_px)
    return p


def _command(sub, name: str, run, about: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=about, description=about)
    p.set_defaults(run=run)
    p.add_argument("--camera", required=True, help="the camera's name in the calibration file (and its topics)")
    p.add_argument("--file", required=True, type=Path, help="the robot's calibration YAML (created if missing)")
    board = p.add_argument_group("board")
    defaults = BoardSpec()
    board.add_argument("--squares-x", type=int, default=defaults.squares_x, help="squares across")
    board.add_argument("--squares-y", type=int, default=defaults.squares_y, help="squares down")
    board.add_argument("--square-m", type=float, default=defaults.square_m, help="a square's side, metres")
    board.add_argument("--marker-m", type=float, default=defaults.marker_m, help="a marker's side, metres")
    board.add_argument("--dictionary", default=defaults.dictionary, help="ArUco dictionary of the markers")
    return p


def _detector(args) -> BoardDetector:
    return BoardDetector(BoardSpec(args.squares_x, args.squares_y, args.square_m, args.marker_m, args.dictionary))


def _stored(args) -> CameraCalibration:
    cameras = load_calibration(args.file)
    if args.camera not in cameras:
        raise CalibrationError(f"{args.file}: no camera '{args.camera}' (it has {sorted(cameras)}); "
                               "run `robot-runtime-calibrate intrinsics` for it first")
    return cameras[args.camera]


def run_intrinsics(args, live: LiveSource | None) -> int:
    detector = _detector(args)
    if args.topic:
        if live is None:
            raise ViewsError("live collection needs ROS 2: run the robot-runtime-calibrate console script "
                             "(robot_runtime.nodes.calibrate), or pass --images")
        collector = ViewCollector(detector, args.views)
        live(args.topic, collector, args.timeout)
        detections = collector.views
        if not collector.done:
            print(f"stopped after {collector.frames} frames with {len(detections)} views; "
                  + (collector.coverage.report() if collector.coverage else "the board was never seen"))
    else:
        detections = list(detect_files(image_files(args.images), detector).values())
    result = calibrate(detections, args.k_coefficients, not args.no_tangential)
    width, height = result.image_size
    previous = load_calibration(args.file).get(args.camera) if args.file.exists() else None
    camera = CameraCalibration(
        width=width, height=height, camera_matrix=[float(v) for v in result.camera_matrix.ravel()],
        distortion_coefficients=[float(v) for v in result.distortion], frame_id=args.camera,
        reprojection_error_px=round(result.reprojection_error, 4),
        calibrated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if previous is not None:  # the mounting is another command's; the version counts intrinsics
        camera = replace(camera, frame_id=previous.frame_id or args.camera, parent_frame=previous.parent_frame,
                         translation=previous.translation, rotation_xyzw=previous.rotation_xyzw)
    camera.version = previous.version + 1 if previous else 1
    update_camera(args.file, args.camera, camera)
    k = result.camera_matrix
    worst = int(np.argmax(result.view_errors))
    print(f"{args.camera}: {len(detections)} views, {width}x{height}, reprojection error "
          f"{result.reprojection_error:.3f} px (worst view {worst + 1}: {result.view_errors[worst]:.3f} px)")
    print(f"  fx {k[0, 0]:.2f} fy {k[1, 1]:.2f} cx {k[0, 2]:.2f} cy {k[1, 2]:.2f} px; "
          f"distortion {np.round(result.distortion, 5).tolist()}")
    if previous is not None:
        fx, _, cx, _, fy, cy = previous.camera_matrix[:6]
        print(f"  previous (version {previous.version}): fx {fx:.2f} fy {fy:.2f} cx {cx:.2f} cy {cy:.2f}")
    print(f"wrote {args.camera} version {camera.version} to {args.file}")
    return 0


def run_hand_eye(args, live) -> int:
    camera = _stored(args)
    check_name(args.parent_frame, "parent frame")
    if args.episode:
        if not args.pose_state:
            raise ViewsError("--episode needs --pose-state: the 7 state entries holding the gripper's pose")
        store, _, episode_id = args.episode.rpartition("/")
        views = poses.episode_views(Path(store or "."), episode_id, args.camera, args.pose_state.split(","),
                                    args.every)
    elif args.images and args.poses:
        views = poses.file_views(args.images, args.poses)
    else:
        raise ViewsError("hand-eye needs --images and --poses, or --episode STORE/EPISODE_ID and --pose-state")
    k = np.array(camera.camera_matrix).reshape(3, 3)
    dist = np.array(camera.distortion_coefficients)
    detector, robot, boards = _detector(args), [], []
    for where, image, pose in views:
        if image.shape[:2] != (camera.height, camera.width):
            raise ViewsError(f"{where}: the picture is {image.shape[1]}x{image.shape[0]} but {args.camera} is "
                             f"calibrated at {camera.width}x{camera.height}")
        detection = detector.detect(image)
        if detection is None:
            print(f"{where}: board not found (too few corners in view); skipped")
            continue
        robot.append(pose)
        boards.append(board_pose(detection, k, dist))
    result = hand_eye.solve(robot, boards, args.mode)
    rotation = xyzw_from_rotation(result.mounting[:3, :3])
    update_camera(args.file, args.camera, replace(camera, parent_frame=args.parent_frame,
                                                  translation=[float(v) for v in result.mounting[:3, 3]],
                                                  rotation_xyzw=rotation))
    print(f"{args.camera} ({args.mode}, {len(robot)} views, {result.solver}): in {args.parent_frame} at "
          f"{np.round(result.mounting[:3, 3], 4).tolist()} m, rotation_xyzw {np.round(rotation, 5).tolist()}")
    print(f"  consistency: the board's pose through each view strays by up to {1000 * result.spread_m:.2f} mm and "
          f"{result.spread_deg:.3f} degrees")
    print(f"wrote the mounting of {args.camera} to {args.file}")
    return 0


def run_check(args, live) -> int:
    camera = _stored(args)
    found = detect_files(image_files(args.images), _detector(args))
    measured = drift.measure(camera, list(found.values()))
    tolerance = drift.Tolerance(args.max_error_px, args.max_focal_change, args.max_center_change_px)
    print(f"{args.camera} (version {camera.version}): {measured.report()}")
    problems = measured.beyond(tolerance)
    if problems:
        print(f"DRIFT: {args.camera}: " + "; ".join(problems) + ": recalibrate it (robot-runtime-calibrate "
              "intrinsics) and retrain or re-check the policies that use it")
        return 1
    print(f"{args.camera}: within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
