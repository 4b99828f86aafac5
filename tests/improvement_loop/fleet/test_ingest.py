"""Robots upload to the ingest server over real CURVE sockets: stored once, validated, cataloged, resumable."""
import json
import shutil
import threading
import time

import pytest
from fleet_world import ServerThread, census, make_keys, uploader, write_episode

from robot_runtime.episode import COMMIT_MARKER, LABELS, SCHEMA_VERSION, EpisodeStore
from robot_runtime.fleet.protocol import Offer, describe_episode
from robot_runtime.fleet.uploader import STATE_FILE, Retention
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset
from robot_runtime.improvement_loop.fleet.catalog import Catalog


def sent(store: EpisodeStore) -> dict[str, str]:
    return {i: Offer.build(i, describe_episode(store.episodes_dir / i), 1 << 20).content_sha256
            for i in store.episode_ids()}


def test_episodes_arrive_whole_cataloged_and_training_reads_them(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    for i in range(3):
        write_episode(robot, f"r1-ep{i}", steps=40 + 10 * i, seed=i)
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint)
        assert up.sync() == 3 and up.sync() == 0  # a second pass asks nothing again
        up.stop()
        restarted = uploader(robot, made, "r1", server.endpoint)  # nor does a restarted robot: its state file
        assert restarted.sync() == 0 and restarted.status().stored == 3
        restarted.stop()
        assert server.server.stats["offers"] == 3
    assert census(tmp_path / "fleet", sent(robot)) == {"lost": 0, "stray": 0, "duplicated": 0,
                                                        "catalog_equals_store": True, "readable": True}
    row = Catalog(tmp_path / "fleet" / "catalog.sqlite").get("r1-ep1")
    assert (row.robot, row.task, row.policy_version, row.outcome, row.steps, row.intervention_steps) == \
        ("r1", "push the block", "m@1", "success", 50, 10)
    assert row.bytes > 50 * 24 * 32 * 3 and row.received_at > row.recorded_at
    dataset = load_dataset(tmp_path / "fleet", DatasetConfig())
    assert len(dataset.episodes) == 3  # the fleet store is an ordinary episode store


def test_a_resent_episode_is_stored_once_and_another_under_its_id_is_refused(tmp_path):
    made = make_keys(tmp_path, robots=("r1", "r2"))
    first, second = EpisodeStore(tmp_path / "r1"), EpisodeStore(tmp_path / "r2")
    write_episode(first, "ep-shared", seed=1)
    write_episode(second, "ep-shared", seed=2)  # same id, other frames
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(first, made, "r1", server.endpoint)
        assert up.sync() == 1
        (first.root / STATE_FILE).unlink()  # the robot forgot: it offers again
        up.stop()
        again = uploader(first, made, "r1", server.endpoint)
        assert again.sync() == 1 and server.server.stats["duplicates"] == 1
        again.stop()
        other = uploader(second, made, "r2", server.endpoint)
        assert other.sync() == 0
        reason = other.status().refused["ep-shared"]
        other.stop()
    assert "a different episode" in reason and "new id" in reason
    assert census(tmp_path / "fleet", sent(first))["catalog_equals_store"]


def test_a_damaged_or_mis_shaped_episode_is_refused_with_the_reason_and_never_stored(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    damaged = write_episode(robot, "r1-damaged", seed=1)
    chunk = damaged / "images" / "front" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    odd = write_episode(robot, "r1-odd", seed=2)  # attributes disagree with the record: a schema 1 record
    (odd / COMMIT_MARKER).write_text(json.dumps({"schema_version": 1, "steps": 60, "episode_id": "r1-odd",
                                                 "committed_at": 1.0}))
    write_episode(robot, "r1-good", seed=3)
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint)
        assert up.sync() == 1
        refused = up.status().refused
        up.stop()
        assert server.server.stats["refused"] == 2
    assert "images/front/c/1/0/0/0: checksum mismatch" in refused["r1-damaged"]
    assert f"attrs.schema_version: {SCHEMA_VERSION}, commit.json says 1" in refused["r1-odd"]
    fleet = EpisodeStore(tmp_path / "fleet")
    assert fleet.episode_ids() == ["r1-good"]
    assert not any((tmp_path / "fleet" / "incoming" / "r1").glob("r1-*.*/"))  # nothing left staged


def test_labels_added_after_upload_follow_as_updates(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "r1-ep0")
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint)
        up.sync()
        robot.label("r1-ep0", "failure", progress=2, note="slipped", operator="kim")
        up.sync()
        (robot.episodes_dir / "r1-ep0" / LABELS).write_text('{"outcome": "great"}')  # not a label
        up.sync()
        assert "not a label" in up.status().last_error
        up.stop()
    fleet = EpisodeStore(tmp_path / "fleet")
    assert fleet.open("r1-ep0").outcome == "failure" and fleet.open("r1-ep0").meta["note"] == "slipped"
    assert Catalog(tmp_path / "fleet" / "catalog.sqlite").get("r1-ep0").outcome == "failure"


def test_a_restarted_robot_resumes_from_the_last_acknowledged_chunk(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "r1-long", steps=200)  # ~470 kB: 29 chunks of 16 KiB
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint, bandwidth_bytes_per_s=400e3)
        up.start()
        while server.server.stats["chunks"] < 10:
            time.sleep(0.01)
        up.stop()  # the robot powers off mid-episode
        assert EpisodeStore(tmp_path / "fleet").episode_ids() == []
        again = uploader(robot, made, "r1", server.endpoint)
        assert again.sync() == 1
        again.stop()
        chunks = Offer.build("r1-long", describe_episode(robot.episodes_dir / "r1-long"), 16 << 10).chunks
        assert server.server.stats["chunks"] < chunks + 8  # resumed, not started over


def test_the_bandwidth_cap_holds(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    size = sum(f.size for f in describe_episode(write_episode(robot, "r1-ep0", steps=120)))
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint, bandwidth_bytes_per_s=1e6)
        started = time.monotonic()
        up.sync()
        elapsed = time.monotonic() - started
        up.stop()
    assert elapsed >= (size - (16 << 10)) / 1e6  # one chunk of burst, then 1 MB/s


def test_retention_deletes_only_acknowledged_episodes(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    for i in range(4):
        write_episode(robot, f"r1-ep{i}", seed=i)
    shutil.rmtree(tmp_path / "robot" / "episodes" / "r1-ep3" / "timestamp")  # will be refused: must stay
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint, retention=Retention(max_store_mb=0.35))
        assert up.sync() == 3
        up.stop()
    assert robot.episode_ids() == ["r1-ep2", "r1-ep3"]  # oldest uploaded first, down to the budget
    assert EpisodeStore(tmp_path / "fleet").episode_ids() == ["r1-ep0", "r1-ep1", "r1-ep2"]


def test_many_robots_at_once(tmp_path):
    names = [f"r{i}" for i in range(6)]
    made = make_keys(tmp_path, robots=names)
    stores = {n: EpisodeStore(tmp_path / n) for n in names}
    for n, store in stores.items():
        for k in range(3):
            write_episode(store, f"{n}-ep{k}", seed=hash((n, k)) % 1000, robot=n)
    with ServerThread(tmp_path / "fleet", made) as server:
        uploaders = [uploader(stores[n], made, n, server.endpoint) for n in names]
        threads = [threading.Thread(target=u.sync) for u in uploaders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for u in uploaders:
            u.stop()
    everything = {k: v for store in stores.values() for k, v in sent(store).items()}
    assert census(tmp_path / "fleet", everything) == {"lost": 0, "stray": 0, "duplicated": 0,
                                                      "catalog_equals_store": True, "readable": True}
    assert {r.robot for r in Catalog(tmp_path / "fleet" / "catalog.sqlite").rows()} == set(names)


@pytest.mark.parametrize("chunk_size", [4 << 10, 1 << 20])
def test_any_chunk_size_gives_the_same_content_hash(tmp_path, chunk_size):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "r1-ep0", steps=30)
    with ServerThread(tmp_path / "fleet", made) as server:
        up = uploader(robot, made, "r1", server.endpoint, chunk_size=chunk_size)
        assert up.sync() == 1
        up.stop()
    assert census(tmp_path / "fleet", sent(robot))["catalog_equals_store"]
