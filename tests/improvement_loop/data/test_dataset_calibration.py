"""Training sees frames in the geometry the robot will feed: each episode's frames through the calibration it
recorded, onto the first episode's undistorted camera, and the bundle's record of it."""
from dataclasses import asdict

import numpy as np

from robot_runtime.calibration.cameras import CameraCalibration
from robot_runtime.calibration.preprocess import Preprocessing, Preprocessor
from robot_runtime.calibration.records import parse_record
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset

LAYOUT = EpisodeLayout({"front": (24, 32)}, ("x",), ("vx",))
PINHOLE = CameraCalibration(32, 24, [30.0, 0, 15.5, 0, 30.0, 11.5, 0, 0, 1], version=2)
BENT = CameraCalibration(32, 24, [30.0, 0, 15.5, 0, 30.0, 11.5, 0, 0, 1], distortion_coefficients=[-0.3, 0, 0, 0, 0],
                         version=3)


def write(store, frame, calibration: CameraCalibration | None, steps=3):
    episode_id = f"ep{len(store.episode_ids()):03d}"
    writer = store.writer(LAYOUT, EpisodeMetadata(task="push", robot_id="r1", control_rate_hz=10.0,
                                                  episode_id=episode_id))
    for t in range(steps):
        writer.append(Step(0.1 * t, {"front": frame}, np.zeros(1, np.float32), np.zeros(1, np.float32)))
    extra = {"calibration": {"front": asdict(calibration)}} if calibration else {}
    return writer.commit("success", extra=extra)


def test_episodes_are_mapped_through_their_own_calibration_and_recorded(tmp_path):
    store = EpisodeStore(tmp_path)
    frame = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    write(store, frame, PINHOLE)
    write(store, frame, BENT)         # the same camera after a lens change, recalibrated
    data = load_dataset(tmp_path, DatasetConfig(chunk_length=2))
    assert len(data.episodes) == 2
    assert (data.images["front"][:3] == frame).all()                  # the reference geometry passes untouched
    undistorted = Preprocessor(BENT, Preprocessing.of(PINHOLE))(frame)
    assert (data.images["front"][3:] == undistorted).all() and not (undistorted == frame).all()
    trained, preprocessing = parse_record("front", data.calibration["front"], "test")
    assert trained.version == 2 and trained.intrinsics_sha256 == PINHOLE.intrinsics_sha256
    assert (preprocessing.width, preprocessing.height) == (32, 24)


def test_uncalibrated_episodes_train_as_before_or_are_skipped_beside_calibrated_ones(tmp_path):
    frame = np.zeros((24, 32, 3), np.uint8)
    plain = EpisodeStore(tmp_path / "plain")
    write(plain, frame, None)
    data = load_dataset(plain.root, DatasetConfig(chunk_length=2))
    assert len(data.episodes) == 1 and data.calibration == {}
    mixed = EpisodeStore(tmp_path / "mixed")
    write(mixed, frame, PINHOLE)
    write(mixed, frame, None)
    data = load_dataset(mixed.root, DatasetConfig(chunk_length=2))
    assert len(data.episodes) == 1 and data.skipped["layout_mismatch"] == 1
