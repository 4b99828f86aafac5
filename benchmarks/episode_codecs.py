"""Camera codecs side by side: size, writer speed, training-loader speed and picture quality.

    python benchmarks/episode_codecs.py --out benchmarks/results/episode_codecs

The workload of issue 15: 1,000 steps of three 224x224 cameras (real MetaWorld renders of
expert push episodes) with 21 state and 4 action floats, written by the EpisodeWriter with each
camera codec. Per codec: mb_per_1000_steps (the committed episode on disk), writer_realtime_factor
(steps/s of the writer alone over the 30 Hz camera rate), loader_samples_per_s (ChunkStream, 2
decoding workers, batches of 64 rows, three epochs: the first decodes every chunk,
loader_first_epoch_samples_per_s, timed after the first batch; the later two serve the decoded
cache, loader_samples_per_s, the steady rate of a training run) and its ratio to
the same batches cut from arrays in memory (in_memory_samples_per_s, measured beside it), psnr_db
(median over frames; psnr_db_min the worst) and ssim (mean) against the frames sent, max_abs_error.
Each codec's figures are kept in DIR/partial/ as they finish; a rerun resumes after them (--fresh
starts over). DIR/results.json: `codecs`, `default` (the recorder's default codec, chosen by benchmarks/codec_bc.py),
`reference` (LeRobot's AV1 layout measured on the same workload), each codec's load_average.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from robot_runtime.capture.codecs import QUALITY, RECORDING

os.environ.setdefault("MUJOCO_GL", "egl")
CAMERAS = ("corner", "corner2", "gripperPOV")
SIZE, CAMERA_HZ, STEPS, BATCH = 224, 30.0, 1000, 64
# name -> (codec, quality): JPEG at two qualities, each video codec at three
SETTINGS = {"lossless": ("lossless", None), "jpeg-90": ("jpeg", 90), "jpeg-75": ("jpeg", 75),
            "h264-23": ("h264", 23), "h264-26": ("h264", 26), "h264-30": ("h264", 30),
            "av1-32": ("av1", 32), "av1-38": ("av1", 38), "av1-44": ("av1", 44)}
DEFAULT = f"{RECORDING}-{QUALITY[RECORDING][2]}"   # the recorder's default camera codec at its default quality
REFERENCE = {"name": "LeRobot 0.3.2 AV1 video (issue 15's measurement)", "mb_per_1000_steps": 5.1,
             "writer_steps_per_s": 23.5}


def render(steps: int) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).parent))
    from recorder_throughput import rendered_frames

    frames = rendered_frames(steps)
    return {c: np.stack([f[c] for f in frames]) for c in CAMERAS}


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) over the channels of two frames."""
    import cv2

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return float(np.mean(numerator / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))))


def write(root: Path, frames: dict[str, np.ndarray], codec) -> tuple[float, Path]:
    """Seconds the EpisodeWriter takes for the workload, and the committed episode."""
    from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step

    layout = EpisodeLayout(dict.fromkeys(CAMERAS, (SIZE, SIZE)), tuple(f"s{i}" for i in range(21)),
                           tuple(f"a{i}" for i in range(4)))
    rng = np.random.default_rng(0)
    state, action = rng.normal(size=(STEPS, 21)).astype(np.float32), rng.normal(size=(STEPS, 4)).astype(np.float32)
    store = EpisodeStore(root)
    writer = store.writer(layout, EpisodeMetadata(task="bench", robot_id="bench", control_rate_hz=CAMERA_HZ),
                          codecs=dict.fromkeys(CAMERAS, codec))
    started = time.perf_counter()
    for i in range(STEPS):
        writer.append(Step(i / CAMERA_HZ, {c: frames[c][i] for c in CAMERAS}, state[i], action[i]))
    path = writer.commit("success")
    return time.perf_counter() - started, path


def loader_rate(root: Path, epochs: int = 3) -> tuple[float, float]:
    """Rows per second in the first epoch (every chunk decoded; timed from the first batch, as the
    workers' start-up is once per training run) and in the later ones (served from the decoded cache).
    The epochs are split by rows served; a block of chunks that straddles the boundary blurs it a little."""
    from robot_runtime.improvement_loop.data.stream import ChunkStream

    stream = ChunkStream(root, names=(*(f"images/{c}" for c in CAMERAS), "state", "action"), workers=2,
                         buffer_chunks=4)
    marks, total = [], 0  # (rows served, time) at the first batch and at each epoch's end
    for batch in stream.batches(BATCH, epochs):
        total += len(batch["state"])
        if not marks or total >= len(marks) * STEPS:
            marks.append((total, time.perf_counter()))
    assert total == epochs * STEPS and not stream.skipped, stream.skipped
    (first_rows, first_at), (epoch_rows, epoch_at), (last_rows, last_at) = marks[0], marks[1], marks[-1]
    return (epoch_rows - first_rows) / (epoch_at - first_at), (last_rows - epoch_rows) / (last_at - epoch_at)


def in_memory_rate(frames: dict[str, np.ndarray], repeats: int = 3) -> float:
    """Random batches of rows cut from arrays in RAM (load_dataset's way), the same rows and arrays."""
    rng = np.random.default_rng(0)
    state, action = np.zeros((STEPS, 21), np.float32), np.zeros((STEPS, 4), np.float32)
    started = time.perf_counter()
    for _ in range(repeats):
        order = rng.permutation(STEPS)
        for at in range(0, STEPS, BATCH):
            index = order[at:at + BATCH]
            _ = [frames[c][index] for c in CAMERAS], state[index], action[index]
    return repeats * STEPS / (time.perf_counter() - started)


def measure(name: str, frames: dict[str, np.ndarray], tmp: Path) -> dict:
    from robot_runtime.capture.codecs import CameraCodec
    from robot_runtime.capture.disk_guard import tree_bytes
    from robot_runtime.episode import EpisodeStore

    codec = CameraCodec(*SETTINGS[name])
    root = tmp / name
    shutil.rmtree(root, ignore_errors=True)
    seconds, path = write(root, frames, codec)
    episode = EpisodeStore(root).open(path.name)
    assert episode.verify() == []
    psnr, similarity, max_error = [], [], 0
    for camera in CAMERAS:
        read = episode.images(camera)
        error = read.astype(np.float64) - frames[camera]
        max_error = max(max_error, int(np.abs(error).max()))
        mse = (error ** 2).reshape(STEPS, -1).mean(1)
        psnr += (10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))).tolist()
        similarity += [ssim(read[i], frames[camera][i]) for i in range(0, STEPS, 10)]
    result = {"codec": codec.name, "quality": codec.quality, "mb_per_1000_steps": round(tree_bytes(path) / 1e6, 2),
              "writer_realtime_factor": round(STEPS / seconds / CAMERA_HZ, 2),
              **dict(zip(("loader_first_epoch_samples_per_s", "loader_samples_per_s"),
                         (round(rate, 1) for rate in loader_rate(root)))),
              "in_memory_samples_per_s": round(in_memory_rate(frames), 1),  # beside it, under the same load
              "psnr_db": None if codec.lossless else round(float(np.median(psnr)), 2),
              "psnr_db_min": None if codec.lossless else round(float(np.min(psnr)), 2),
              "ssim": round(float(np.mean(similarity)), 4), "max_abs_error": max_error,
              "load_average": round(os.getloadavg()[0], 2)}
    shutil.rmtree(root)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--codecs", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--fresh", action="store_true", help="forget the partial results in DIR/partial")
    args = parser.parse_args(argv)
    partial = args.out / "partial"
    if args.fresh:
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    frames = render(STEPS)
    with tempfile.TemporaryDirectory(prefix="episode-codecs-") as tmp:
        for name in args.codecs:
            if (partial / f"{name}.json").is_file():
                continue
            result = measure(name, frames, Path(tmp))
            (partial / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(name, json.dumps(result), flush=True)
    codecs = {p.stem: json.loads(p.read_text()) for p in sorted(partial.glob("*.json"))}
    for result in codecs.values():
        result["loader_vs_in_memory"] = round(result["loader_samples_per_s"] / result["in_memory_samples_per_s"], 3)
    results = {"steps": STEPS, "cameras": len(CAMERAS), "image_size": SIZE, "camera_hz": CAMERA_HZ,
               "state_floats": 21, "action_floats": 4, "loader_batch": BATCH, "loader_workers": 2,
               "cpu_count": os.cpu_count(),
               "default": DEFAULT, "reference": REFERENCE, "codecs": codecs}
    if DEFAULT in codecs:
        default = codecs[DEFAULT]
        results["targets"] = {
            "default_within_2x_of_reference_size": default["mb_per_1000_steps"] <= 2 * REFERENCE["mb_per_1000_steps"],
            "default_writer_at_least_3x_realtime": default["writer_realtime_factor"] >= 3,
            "default_loader_at_least_half_in_memory": default["loader_vs_in_memory"] >= 0.5}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{'codec':10} {'MB/1000':>8} {'writer xRT':>10} {'loader/s':>9} {'vs RAM':>7} {'PSNR':>6} {'SSIM':>6}")
    for name, r in codecs.items():
        print(f"{name:10} {r['mb_per_1000_steps']:8.2f} {r['writer_realtime_factor']:10.2f} "
              f"{r['loader_samples_per_s']:9.1f} {r['loader_vs_in_memory']:7.3f} {r['psnr_db'] or float('inf'):6.2f} "
              f"{r['ssim']:6.4f}")
    print(f"{'reference':10} {REFERENCE['mb_per_1000_steps']:8.2f}  ({REFERENCE['name']})")


if __name__ == "__main__":
    sys.exit(main())
