"""Calibration accuracy against the truth over several seeds: ChArUco boards rendered by MuJoCo (640x480, 50
degrees vertical field of view) from known poses, through the same detection and solvers as
robot-runtime-calibrate; the test suite checks one seed, this prints the spread.

  .venv/bin/python benchmarks/calibration_sim.py --seeds 10 --out benchmarks/results/calibration_sim

Per seed: intrinsics from 30 views of a pinhole camera and of a distorting lens (reprojection error, focal
error, principal-point error), hand-eye from 20 views eye-in-hand and eye-to-hand (translation, rotation).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as make sets it

import board_views

from robot_runtime.calibration import hand_eye
from robot_runtime.calibration.board import BoardDetector
from robot_runtime.calibration.intrinsics import board_pose, calibrate
from robot_runtime.calibration.views import detect_files

LENS = [-0.25, 0.08, 0.001, -0.0005, 0.0]


def intrinsics_errors(views, detector) -> tuple[dict, object]:
    found = detect_files(views.files, detector, say=lambda _: None)
    result = calibrate(list(found.values()))
    k, truth = result.camera_matrix, views.camera_matrix
    return {"views": len(found), "reprojection_px": result.reprojection_error,
            "focal_error_pct": 100 * max(abs(k[0, 0] / truth[0, 0] - 1), abs(k[1, 1] / truth[1, 1] - 1)),
            "centre_error_px": float(np.abs(k[:2, 2] - truth[:2, 2]).max())}, result


def hand_eye_errors(views, detector, intrinsics, mode: str) -> dict:
    found = detect_files(views.files, detector, say=lambda _: None)
    boards = [board_pose(d, intrinsics.camera_matrix, intrinsics.distortion) for d in found.values()]
    result = hand_eye.solve([views.robot_poses[p.name] for p in found], boards, mode)
    error = np.linalg.inv(board_views.MOUNTING) @ result.mounting
    return {"translation_mm": 1000 * float(np.linalg.norm(error[:3, 3])),
            "rotation_deg": math.degrees(float(np.linalg.norm(cv2.Rodrigues(error[:3, :3])[0])))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    detector = BoardDetector(board_views.SPEC)
    runs, start = [], time.perf_counter()
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            pinhole, intrinsics = intrinsics_errors(board_views.intrinsic_views(tmp / "pin", seed=seed), detector)
            bent, _ = intrinsics_errors(board_views.intrinsic_views(tmp / "bent", seed=seed, distortion=LENS),
                                        detector)
            run = {"seed": seed, "pinhole": pinhole, "distorted": bent}
            for mode in hand_eye.MODES:
                views = board_views.hand_eye_views(tmp / mode, mode, seed=100 + seed)
                run[mode] = hand_eye_errors(views, detector, intrinsics, mode)
        runs.append(run)
        print(json.dumps(run, default=lambda v: round(v, 4)), flush=True)
    summary = {}
    for part, keys in (("pinhole", ("reprojection_px", "focal_error_pct", "centre_error_px")),
                       ("distorted", ("reprojection_px", "focal_error_pct", "centre_error_px")),
                       ("eye-in-hand", ("translation_mm", "rotation_deg")),
                       ("eye-to-hand", ("translation_mm", "rotation_deg"))):
        for key in keys:
            values = [r[part][key] for r in runs]
            summary[f"{part}.{key}"] = {"median": statistics.median(values), "max": max(values)}
            print(f"{part:12s} {key:18s} median {statistics.median(values):.4f}  max {max(values):.4f}")
    results = {"seeds": args.seeds, "image": [board_views.WIDTH, board_views.HEIGHT], "fovy_deg": board_views.FOVY,
               "lens": LENS, "summary": summary, "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'results.json'} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
