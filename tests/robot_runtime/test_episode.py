"""Contract 1: episodes read back exactly as written, and only once committed."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.capture.recording import AsyncRecorder
from robot_runtime.episode import (
    COMMIT_MARKER,
    SCHEMA_VERSION,
    EpisodeError,
    EpisodeLayout,
    EpisodeMetadata,
    EpisodeStore,
    Step,
)
from robot_runtime.files import sha256_file

from codec_cases import CASES, IDS, assert_frames_match, camera_frames

LAYOUT = EpisodeLayout(cameras={"front": (24, 32)}, state_names=("a", "b", "c"), action_names=("x", "y"))


def make_steps(n, seed=0):
    rng = np.random.default_rng(seed)
    frames = camera_frames(rng, n, 24, 32)
    return [Step(timestamp=1000.0 + 0.05 * i,
                 images={"front": frames[i]},
                 state=rng.normal(size=3).astype(np.float32), action=rng.normal(size=2).astype(np.float32),
                 policy_action=None if i % 3 == 0 else rng.normal(size=2).astype(np.float32),
                 intervention=bool(i % 4 == 0)) for i in range(n)]


def meta():
    return EpisodeMetadata(task="push the puck", robot_id="r1", control_rate_hz=20.0, policy_version="m@1")


@pytest.mark.parametrize("codec", CASES, ids=IDS)
def test_round_trip_across_chunk_boundaries(tmp_path, codec):
    store = EpisodeStore(tmp_path)
    steps = make_steps(123)
    writer = store.writer(LAYOUT, meta(), chunk_steps=50, codecs={"front": codec})
    for s in steps:
        writer.append(s)
    assert store.episode_ids() == []  # nothing visible before commit
    writer.commit("success", "success", {"held_steps": 2})
    [ep] = store.episodes()
    assert ep.steps == 123 and ep.outcome == "success" and ep.task == "push the puck"
    assert ep.meta["schema_version"] == SCHEMA_VERSION and ep.meta["extra"]["held_steps"] == 2
    assert ep.codecs == {"front": codec} and ep.meta["camera_codecs"] == {"front": codec.to_json()}
    frames = ep.images("front")
    assert_frames_match(frames, np.stack([s.images["front"] for s in steps]), codec, 50)
    (ep.path / "images/front/c/0/0/0/0").unlink()  # a reader seeks to any chunk without the others
    ep = store.open(ep.episode_id)
    np.testing.assert_array_equal(ep.array("images/front", 60, 110), frames[60:110])
    with pytest.raises(EpisodeError, match="images/front/c/0/0/0/0: missing"):
        ep.array("images/front", 40, 60)
    np.testing.assert_array_equal(ep.array("state"), np.stack([s.state for s in steps]))
    np.testing.assert_array_equal(ep.array("intervention"), [s.intervention for s in steps])
    policy = ep.array("policy_action")
    assert np.isnan(policy[0]).all() and np.isfinite(policy[1]).all()
    assert np.all(np.diff(ep.array("timestamp")) > 0)
    assert ep.array("action").dtype == np.float32


def test_bad_steps_are_rejected_with_the_array_named(tmp_path):
    writer = EpisodeStore(tmp_path).writer(LAYOUT, meta())
    good = make_steps(2)
    writer.append(good[0])
    with pytest.raises(EpisodeError, match="does not increase"):
        writer.append(good[0])
    bad = make_steps(2)[1]
    bad.state = np.zeros(4, np.float32)
    with pytest.raises(EpisodeError, match="'state' has shape"):
        writer.append(bad)
    bad = make_steps(2)[1]
    bad.images = {}
    with pytest.raises(EpisodeError, match="front"):
        writer.append(bad)


def test_interrupted_episode_is_invisible_then_salvaged_as_truncated(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta(), chunk_steps=50)
    steps = make_steps(60)
    for s in steps:
        writer.append(s)  # 50 in chunk files, 10 buffered: the writer dies here
    assert store.episode_ids() == []
    recovery = store.recover()
    assert recovery.salvaged == {writer.metadata.episode_id: 50}
    [ep] = store.episodes()
    assert ep.steps == 50 and ep.meta["truncated"] and ep.outcome == "unlabeled"
    np.testing.assert_array_equal(ep.array("state"), np.stack([s.state for s in steps[:50]]))


def test_interrupted_episode_without_a_whole_chunk_is_quarantined(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta(), chunk_steps=50)
    for s in make_steps(20):
        writer.append(s)
    assert store.recover().quarantined == {writer.metadata.episode_id: "no complete chunk on disk"}
    assert (store.quarantine_dir / writer.metadata.episode_id).is_dir() and store.episode_ids() == []


def test_reader_refuses_an_edited_commit_record(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta())
    for s in make_steps(5):
        writer.append(s)
    path = writer.commit("failure")
    marker = json.loads((path / COMMIT_MARKER).read_text())
    marker["steps"] = 6
    (path / COMMIT_MARKER).write_text(json.dumps(marker))
    with pytest.raises(EpisodeError, match="commit.json: checksum mismatch"):
        store.open(path.name)
    (path / COMMIT_MARKER).write_text("{broken")
    with pytest.raises(EpisodeError, match="not valid JSON"):
        store.open(path.name)


def test_commit_record_holds_the_checksum_of_every_other_file(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta(), chunk_steps=50)
    for s in make_steps(60):
        writer.append(s)
    path = writer.commit("success")
    store.label(path.name, "failure")
    record = json.loads((path / COMMIT_MARKER).read_text())
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert record["schema_version"] == SCHEMA_VERSION == 3 and record["steps"] == 60
    assert set(record["files"]) == on_disk - {"commit.json", "progress.json", "labels.json"}
    assert {"zarr.json", "images/zarr.json", "images/front/c/1/0/0/0", "state/c/0/0"} <= set(record["files"])
    assert all(entry == {"bytes": (path / name).stat().st_size, "sha256": sha256_file(path / name)}
               for name, entry in record["files"].items())
    ep = store.open(path.name)
    assert ep.verify() == [] and ep.outcome == "failure"


def test_schema_1_episodes_are_read_unverified(tmp_path):
    """Version 1 (before checksums): the same layout, attrs schema_version 1, a commit record without files."""
    import zarr

    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta())
    steps = make_steps(7)
    for s in steps:
        writer.append(s)
    path = writer.commit("success")
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 1
    (path / COMMIT_MARKER).write_text(json.dumps({"schema_version": 1, "episode_id": path.name, "steps": 7,
                                                  "committed_at": 0.0}, indent=1))
    ep = store.open(path.name)
    assert ep.record.files is None and ep.verify() == []
    np.testing.assert_array_equal(ep.images("front"), np.stack([s.images["front"] for s in steps]))


def test_outcome_must_be_known(tmp_path):
    writer = EpisodeStore(tmp_path).writer(LAYOUT, meta())
    writer.append(make_steps(1)[0])
    with pytest.raises(EpisodeError, match="outcome"):
        writer.commit("great")


def test_async_recorder_commits_and_counts_rejected_steps(tmp_path):
    store = EpisodeStore(tmp_path)
    recorder = AsyncRecorder(store)
    recorder.begin(LAYOUT, meta())
    steps = make_steps(70)
    steps[10].action = np.zeros(5, np.float32)  # malformed: rejected, the episode goes on
    for s in steps:
        assert recorder.add(s)
    recorder.end("success", "success")
    recorder.flush()
    recorder.close()
    [ep] = store.episodes()
    assert ep.steps == 69 and recorder.stats.rejected_steps == 1
    assert ep.meta["extra"]["dropped_steps"] == 0


def test_intervention_segments_and_operator_labels(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer(LAYOUT, meta(), chunk_steps=50)
    steps = make_steps(12)
    for i, s in enumerate(steps):
        s.intervention = i in (2, 3, 4, 9)
        writer.append(s)
    path = writer.commit("unlabeled")
    ep = store.open(path.name)
    assert ep.meta["intervention_segments"] == [[2, 5], [9, 10]] and ep.outcome == "unlabeled"
    store.label(path.name, "failure", progress=3, note="puck slid off the table", operator="ana")
    ep = store.open(path.name)
    assert ep.outcome == "failure" and ep.meta["progress"] == 3 and ep.meta["labeled_by"] == "ana"
    with pytest.raises(EpisodeError, match="1-5"):
        store.label(path.name, "success", progress=7)
    with pytest.raises(EpisodeError, match="no committed episode"):
        store.label("nope", "success")


def test_schema_2_episodes_written_by_the_old_code_read_as_lossless(tmp_path):
    """The fixture was committed by the schema-2 writer; its rows are regenerated from the same seed."""
    shutil.copytree(Path(__file__).parent / "fixtures/schema2_store", tmp_path / "store")
    store = EpisodeStore(tmp_path / "store")
    [ep] = store.episodes()
    assert ep.record.schema_version == 2 and ep.verify() == [] and ep.codecs == {"front": CameraCodec("lossless")}
    rng = np.random.default_rng(2)
    sent = [(rng.integers(0, 255, (12, 16, 3), np.uint8), rng.normal(size=2).astype(np.float32),
             rng.normal(size=1).astype(np.float32)) for _ in range(6)]
    np.testing.assert_array_equal(ep.images("front"), np.stack([image for image, _, _ in sent]))
    np.testing.assert_array_equal(ep.array("state"), np.stack([state for _, state, _ in sent]))
    np.testing.assert_array_equal(ep.array("action"), np.stack([action for _, _, action in sent]))
    assert ep.outcome == "success" and ep.array("intervention").tolist() == [i == 2 for i in range(6)]


def test_codecs_are_checked_and_recorded_per_camera(tmp_path):
    from robot_runtime.capture.codecs import CodecError

    two = EpisodeLayout(cameras={"front": (24, 32), "wrist": (24, 32)}, state_names=("a",), action_names=("x",))
    for bad, match in ((("webp", None), "'webp' is not one of"), (("jpeg", 0), r"quality 0 for 'jpeg' is not an "
                       r"integer in \[1, 100\]"), (("h264", 60), r"\[0, 51\]"), (("lossless", 5), "takes no quality")):
        with pytest.raises(CodecError, match=match):
            CameraCodec(*bad)
    with pytest.raises(EpisodeError, match="codecs for camera.*'side'"):
        EpisodeStore(tmp_path).writer(two, meta(), codecs={"side": CameraCodec("jpeg")})
    writer = EpisodeStore(tmp_path).writer(two, meta(), codecs={"wrist": CameraCodec("h264", 30)})
    writer.append(Step(0.0, {c: np.zeros((24, 32, 3), np.uint8) for c in two.cameras}, np.zeros(1, np.float32),
                       np.zeros(1, np.float32)))
    ep = EpisodeStore(tmp_path).open(writer.commit("success").name)
    assert ep.meta["camera_codecs"] == {"front": {"codec": "lossless", "quality": None},
                                        "wrist": {"codec": "h264", "quality": 30}}
    zarr_json = json.loads((ep.path / "images/wrist/zarr.json").read_text())
    assert zarr_json["codecs"] == [{"name": "robot_runtime.video", "configuration": {"codec": "h264", "quality": 30}}]
