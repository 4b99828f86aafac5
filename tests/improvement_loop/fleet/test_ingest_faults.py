"""Faults at random points of uploads (seeded): links cut, the server killed with SIGKILL and restarted.
Every trial ends with 0 episodes lost, 0 duplicated and the catalog equal to the store."""
import random
import time

from fleet_world import Relay, ServerProcess, ServerThread, census, free_port, make_keys, uploader, write_episode

from robot_runtime.episode import EpisodeStore
from robot_runtime.fleet.protocol import Offer, describe_episode

CLEAN = {"lost": 0, "stray": 0, "duplicated": 0, "catalog_equals_store": True, "readable": True}


def contents(store: EpisodeStore) -> dict[str, str]:
    return {i: Offer.build(i, describe_episode(store.episodes_dir / i), 1 << 20).content_sha256
            for i in store.episode_ids()}


def test_connections_cut_at_random_points_lose_and_duplicate_nothing(tmp_path):
    rng = random.Random(11)
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    needed = 0
    with ServerThread(tmp_path / "fleet", made) as server:
        relay = Relay(int(server.endpoint.rsplit(":", 1)[1]))
        up = uploader(robot, made, "r1", relay.endpoint, reply_timeout_s=3.0)
        for trial in range(20):
            path = write_episode(robot, f"r1-cut{trial:02d}", steps=rng.randint(20, 120), seed=trial)
            offer = Offer.build(path.name, describe_episode(path), 16 << 10)
            needed += offer.chunks
            # in the handshake or the offer sometimes, mostly among the chunks
            relay.cut_after(rng.randint(0, 600) if trial % 4 == 0 else rng.randint(0, offer.total_bytes))
            assert up.sync() == 1
            assert census(tmp_path / "fleet", contents(robot)) == CLEAN
        cuts, resent = relay.cuts, server.server.stats["chunks"] - needed
        up.stop()
        relay.close()
    assert cuts == 20 and up.status().cuts >= 20
    assert resent <= 20 * 10  # each cut costs at most the chunks in flight: it resumes, it does not start over


def test_the_server_killed_at_random_points_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(7)
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    server = ServerProcess(tmp_path / "fleet", made, free_port(), tmp_path / "server.log").start()
    up = uploader(robot, made, "r1", server.endpoint, reply_timeout_s=3.0, bandwidth_bytes_per_s=600e3)
    up.start()  # in its own thread, as on the robot
    landed = {"idle": 0, "mid-upload": 0}
    try:
        for trial in range(20):
            write_episode(robot, f"r1-kill{trial:02d}", steps=rng.randint(40, 160), seed=100 + trial)
            time.sleep(rng.uniform(0.0, 0.8))
            busy = up.status().current
            server.kill()
            landed["mid-upload" if busy else "idle"] += 1
            server.start()
        deadline = time.monotonic() + 60
        while up.status().stored < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        up.stop()
        server.stop()
    print(f"kill -9 landed: {landed}")
    assert up.status().stored == 20 and up.status().refused == {}
    assert census(tmp_path / "fleet", contents(robot)) == CLEAN
    assert landed["mid-upload"] >= 10  # the kills did fall inside uploads
