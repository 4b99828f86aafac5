"""Only robots on the allowlist get in: an unknown key and a revoked key are refused, told so, and logged."""
import logging

from fleet_world import ServerThread, make_keys, uploader, write_episode

from robot_runtime.episode import EpisodeStore
from robot_runtime.fleet import keys


def test_an_unknown_robot_key_is_refused_at_the_handshake_and_logged(tmp_path, caplog):
    made = make_keys(tmp_path)
    keys.create_curve_certificate(tmp_path / "elsewhere", "intruder")  # a key the server never saw
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "intruder-ep0")
    with ServerThread(tmp_path / "fleet", made) as server, caplog.at_level(logging.WARNING):
        intruder = uploader(robot, made, "intruder", server.endpoint,
                            key_file=str(tmp_path / "elsewhere" / "intruder.key_secret"))
        assert intruder.sync() == 0
        status = intruder.status()
        intruder.stop()
        assert server.server.allowlist.refused >= 1 and server.server.stats["offers"] == 0
    assert "refused this robot's key" in status.denied
    assert any("is not in" in r.message and "unknown or revoked" in r.message for r in caplog.records)
    assert EpisodeStore(tmp_path / "fleet").episode_ids() == []


def test_a_revoked_key_is_refused_on_its_open_connection_and_on_a_new_one(tmp_path, caplog):
    made = make_keys(tmp_path, robots=("r1", "r2"))
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "r1-ep0", seed=0)
    with ServerThread(tmp_path / "fleet", made) as server, caplog.at_level(logging.WARNING):
        up = uploader(robot, made, "r1", server.endpoint)
        assert up.sync() == 1
        keys.revoke(made.robots, "r1")
        write_episode(robot, "r1-ep1", seed=1)
        assert up.sync() == 0  # the connection opened before the revocation: refused at its next message
        assert "denied" in up.status().denied and server.server.stats["denied"] == 1
        up.stop()
        fresh = uploader(robot, made, "r1", server.endpoint)
        assert fresh.sync() == 0  # a new connection: refused at the handshake
        assert "refused this robot's key" in fresh.status().denied and server.server.allowlist.refused == 1
        fresh.stop()
        other = EpisodeStore(tmp_path / "other")
        write_episode(other, "r2-ep0", robot="r2")
        carries_on = uploader(other, made, "r2", server.endpoint)
        assert carries_on.sync() == 1  # everyone else carries on
        carries_on.stop()
    assert EpisodeStore(tmp_path / "fleet").episode_ids() == ["r1-ep0", "r2-ep0"]
