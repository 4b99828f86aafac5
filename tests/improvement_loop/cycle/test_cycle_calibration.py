"""A trained bundle records the camera calibration of its episodes, and a robot with the same calibration
serves it as trained while a robot whose camera changed is refused, naming the camera."""
from dataclasses import asdict, replace

from robot_runtime.bundle import load_bundle
from robot_runtime.calibration.cameras import CameraCalibration
from robot_runtime.calibration.records import check_cameras
from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.rounds import pretrain

from tiny_cycle import config, write_episode

FRONT = CameraCalibration(16, 16, [14.0, 0, 7.5, 0, 14.0, 7.5, 0, 0, 1], version=4)


def test_the_bundle_records_what_it_was_trained_with(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    for i in range(4):
        write_episode(store, i, "success", calibration={"front": asdict(FRONT)})
    bundle = load_bundle(pretrain(store.root, tmp_path / "work", config()).bundle_path)
    recorded = bundle.manifest.calibration["front"]
    assert recorded["version"] == 4 and recorded["intrinsics_sha256"] == FRONT.intrinsics_sha256
    cameras = {c.name: (c.height, c.width) for c in bundle.manifest.cameras}
    same = check_cameras(cameras, bundle.manifest.calibration, {"front": FRONT}, 1.0, "refuse", bundle.path)
    assert not same.refusals and not same.warnings and same.preprocessors["front"].identity
    moved = replace(FRONT, camera_matrix=[14.0, 0, 9.5, 0, 14.0, 7.5, 0, 0, 1], version=5)
    refused = check_cameras(cameras, bundle.manifest.calibration, {"front": moved}, 1.0, "refuse", bundle.path)
    assert refused.refusals and refused.refusals[0].startswith("camera front:") and "cx 7.50 -> 9.50" in \
        refused.refusals[0]
