"""`robot-runtime-episodes export --format store`: a store re-encoded with other camera codecs.

Episodes recorded lossless through the real EpisodeWriter (Zarr on disk), then transcoded by the
CLI; the copy must validate, keep every non-image row bit for bit, the id, times, outcome and
label, record the codec it now has and the one it had, and decode to what the codec makes of
the frames. A damaged source episode is reported and left out; the source is never written.
"""
from __future__ import annotations

import numpy as np
import pytest

from robot_runtime.datatools.cli import main as cli
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step

CAMERAS = {"front": (48, 64), "wrist": (32, 32)}
STEPS = 120  # two full chunks of 50 and a partial one


def frame(camera: str, k: int) -> np.ndarray:
    """A smooth moving gradient, the kind of picture a video codec keeps well."""
    h, w = CAMERAS[camera]
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 3 + y * 2 + 4 * k) % 256
    return np.stack([base, (base + 60) % 256, np.full_like(base, 128)], -1).astype(np.uint8)


def record(store: EpisodeStore, index: int) -> str:
    layout = EpisodeLayout(CAMERAS, ("j0", "j1", "j2"), ("a0", "a1"))
    writer = store.writer(layout, EpisodeMetadata(task="push the puck", robot_id="r1", control_rate_hz=10.0,
                                                  policy_version="7", operator="ana", extra={"layout_seed": index}))
    rng = np.random.default_rng(index)
    for k in range(STEPS):
        writer.append(Step(0.1 * k, {c: frame(c, k) for c in CAMERAS}, rng.normal(size=3).astype(np.float32),
                           rng.normal(size=2).astype(np.float32),
                           None if 30 <= k < 45 else rng.normal(size=2).astype(np.float32),
                           intervention=30 <= k < 45, held=k == 77))
    return writer.commit("failure", end_reason="timeout").name


@pytest.fixture
def lossless_store(tmp_path):
    store = EpisodeStore(tmp_path / "lossless")
    ids = [record(store, i) for i in range(3)]
    store.label(ids[0], "success", progress=4, note="operator saw it finish", operator="ana")
    return store, ids


def test_a_store_transcodes_to_h264_keeping_rows_metadata_and_labels(lossless_store, tmp_path, capsys):
    source, ids = lossless_store
    out = tmp_path / "h264"
    assert cli(["export", str(source.root), "--format", "store", "--codec", "h264:23",
                "--codec", "wrist=jpeg:95", "--out", str(out)]) == 0
    assert "3 episode(s) written" in capsys.readouterr().out
    assert cli(["validate", str(out), "--strict"]) == 0
    target = EpisodeStore(out, create=False)
    assert target.episode_ids() == sorted(ids)
    for episode_id in ids:
        before, after = source.open(episode_id), target.open(episode_id)
        assert {c: (k.name, k.quality) for c, k in after.codecs.items()} == {"front": ("h264", 23),
                                                                              "wrist": ("jpeg", 95)}
        assert after.meta["extra"]["transcoded_from"] == {c: {"codec": "lossless", "quality": None} for c in CAMERAS}
        assert after.meta["extra"]["layout_seed"] == before.meta["extra"]["layout_seed"]
        for key in ("task", "robot_id", "policy_version", "operator", "outcome", "start_time", "end_time",
                    "end_reason", "truncated", "intervention_segments", "control_rate_hz"):
            assert after.meta[key] == before.meta[key], key
        for name in ("timestamp", "state", "action", "policy_action", "intervention", "held"):
            np.testing.assert_array_equal(after.array(name), before.array(name), err_msg=name)
        for camera in CAMERAS:
            error = after.images(camera).astype(float) - before.images(camera)
            psnr = 10 * np.log10(255 ** 2 / max(np.mean(error ** 2), 1e-10))
            assert psnr > 20, (camera, psnr)
            assert np.abs(error).max() > 0 or camera == "wrist"  # lossy for real (the gradient is JPEG-friendly)
    labeled = target.open(ids[0]).meta
    assert (labeled["outcome"], labeled["progress"], labeled["note"]) == ("success", 4, "operator saw it finish")
    assert target.open(ids[0]).attributes["outcome"] == "failure"  # the recorded outcome under the label


def test_transcoding_back_to_lossless_and_rerunning_skips_what_is_there(lossless_store, tmp_path, capsys):
    source, ids = lossless_store
    video = tmp_path / "av1"
    assert cli(["export", str(source.root), ids[1], "--format", "store", "--codec", "av1", "--out", str(video)]) == 0
    back = tmp_path / "back"
    assert cli(["export", str(video), "--format", "store", "--codec", "lossless", "--out", str(back)]) == 0
    episode = EpisodeStore(back, create=False).open(ids[1])
    assert episode.codecs["front"].name == "lossless"
    assert episode.meta["extra"]["transcoded_from"]["front"]["codec"] == "lossless"  # the first origin is kept
    video_frames = EpisodeStore(video, create=False).open(ids[1]).images("front")
    np.testing.assert_array_equal(episode.images("front"), video_frames)
    assert cli(["export", str(source.root), "--format", "store", "--codec", "av1", "--out", str(video)]) == 1
    assert "already holds episode" in capsys.readouterr().err
    assert cli(["export", str(source.root), "--format", "store", "--codec", "av1", "--skip-existing",
                "--out", str(video)]) == 0
    assert "2 episode(s) written" in capsys.readouterr().out
    assert EpisodeStore(video, create=False).episode_ids() == sorted(ids)


def test_a_damaged_episode_is_reported_and_the_others_are_written(lossless_store, tmp_path, capsys):
    source, ids = lossless_store
    chunk = source.episodes_dir / ids[2] / "images" / "front" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    files_before = sorted((p, p.stat().st_mtime_ns) for p in source.root.rglob("*"))
    out = tmp_path / "out"
    assert cli(["export", str(source.root), "--format", "store", "--codec", "h264", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{ids[2]}: not transcoded" in err and "images/front/c/1/0/0/0" in err
    target = EpisodeStore(out, create=False)
    assert target.episode_ids() == sorted(ids[:2])
    assert list(target.staging_dir.iterdir()) == []  # the half-written copy is gone
    assert sorted((p, p.stat().st_mtime_ns) for p in source.root.rglob("*")) == files_before


@pytest.mark.parametrize("args, message", [
    (["--codec", "webp"], "image codec 'webp' is not one of"),
    (["--codec", "h264:99"], "image quality 99 for 'h264'"),
    (["--codec", "h264:high"], "quality 'high' is not an integer"),
    (["--codec", "side=jpeg"], "no camera(s) ['side']"),
    ([], "--format store needs --codec"),
])
def test_bad_codec_choices_are_refused_by_name(lossless_store, tmp_path, capsys, args, message):
    source, _ = lossless_store
    cli(["export", str(source.root), "--format", "store", *args, "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err


def test_the_source_store_is_never_the_target(lossless_store, capsys):
    source, _ = lossless_store
    assert cli(["export", str(source.root), "--format", "store", "--codec", "h264", "--out", str(source.root)]) == 1
    assert "transcode into another store" in capsys.readouterr().err
