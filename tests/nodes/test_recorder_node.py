"""The recorder node over DDS: operator start/stop/label, hostile messages, a full disk that stops
recording only, and subscriptions whose reliability follows the publishers'."""
import json
import subprocess
import sys
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.capture.codecs import RECORDING, CameraCodec
from robot_runtime.episode import EpisodeStore
from robot_runtime.messages import EpisodeEnd, LabelRefused, parse_recorder_status
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient

from dds_feeder import Feeder


def start_recorder(tmp_path, store, **params):
    graph = GraphProcesses("sim", {"recorder": {"store_path": str(store), "task": "push the puck to the goal",
                                                "robot_id": "arm-7", **params}},
                           log_dir=tmp_path / "logs", only=["recorder"]).start()
    client = GraphClient("recorder_test")
    client.wait_for_graph(["recorder"], {ros_io.STATE_TOPIC: (0, 1), ros_io.ROBOT_EXECUTED_TOPIC: (0, 1)})
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    feeder = Feeder(client)
    time.sleep(0.5)
    return graph, client, feeder, diagnostics


def recorder_status(diagnostics):
    for msg in reversed(diagnostics):
        for status in msg.status:
            if status.name.startswith("recorder"):
                return status
    return None


def recorder_reliability(client, topic: str) -> set:
    return {info.qos_profile.reliability for info in client.node.get_subscriptions_info_by_topic(topic)
            if info.node_name == "recorder"}


def test_the_recorder_subscribes_reliably_while_every_publisher_is_reliable(tmp_path):
    """Reliable publishers get dropped samples re-sent; a best-effort one joining is still recorded."""
    graph, client, feeder, _ = start_recorder(tmp_path, tmp_path / "store")  # the feeder publishes reliable
    reliable, best_effort = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    try:
        for topic in ("/joint_states", "/robot/executed", "/camera/corner/image_raw"):
            client.wait_for(lambda t=topic: recorder_reliability(client, t) == {reliable}, 10, f"{topic} reliable")
        driver = client.node.create_publisher(JointState, ros_io.STATE_TOPIC, qos_profile_sensor_data)
        client.wait_for(lambda: recorder_reliability(client, "/joint_states") == {best_effort}, 10,
                        "joint_states best effort once a best-effort publisher joined")
        client.wait_for(lambda: driver.get_subscription_count() == feeder.state_pub.get_subscription_count() == 1,
                        10, "both publishers matched")
        episode_id = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        time.sleep(0.3)
        feeder.play(1.0, executed=True)
        assert client.call(Trigger, "/recorder/stop_episode", Trigger.Request()).success
        assert client.wait_for_commit(episode_id, 10)["steps"] >= 15
        client.node.destroy_publisher(driver)
        client.wait_for(lambda: recorder_reliability(client, "/joint_states") == {reliable}, 10,
                        "joint_states reliable again")
        log = (tmp_path / "logs" / "recorder.log").read_text()
        assert "recording joint_states: best_effort" in log and "recording joint_states: reliable" in log
    finally:
        client.close()
        graph.stop()


def test_operator_starts_stops_and_labels_an_episode(tmp_path):
    graph, client, feeder, _ = start_recorder(tmp_path, tmp_path / "store")
    try:
        reply = client.call(Trigger, "/recorder/start_episode", Trigger.Request())
        assert reply.success
        episode_id = reply.message
        time.sleep(0.3)
        feeder.play(1.0, executed=True)
        reply = client.call(Trigger, "/recorder/stop_episode", Trigger.Request())
        assert reply.success and reply.message == episode_id
        commit = client.wait_for_commit(episode_id, 10)
        store = EpisodeStore(tmp_path / "store")
        ep = store.open(episode_id)
        assert ep.outcome == "unlabeled" and ep.steps == commit["steps"] >= 15 and ep.meta["robot_id"] == "arm-7"
        assert ep.meta["intervention_segments"] == [[0, ep.steps]]  # the feeder reports operator control
        # unless told otherwise the cameras are kept in the codec codec_bc chose, at its default quality
        assert ep.meta["camera_codecs"]["corner"] == CameraCodec(RECORDING).to_json() == {"codec": "av1", "quality": 44}

        labels = client.node.create_publisher(String, ros_io.OPERATOR_LABEL_TOPIC, ros_io.STREAM_QOS)
        time.sleep(0.5)
        labels.publish(String(data=json.dumps({"outcome": "failure", "progress": 4, "note": "dropped it late",
                                               "operator": "kim"})))
        client.wait_for(lambda: store.open(episode_id).outcome == "failure", 10, "the label")
        ep = store.open(episode_id)
        assert ep.meta["progress"] == 4 and ep.meta["note"] == "dropped it late"
        assert not client.call(Trigger, "/recorder/stop_episode", Trigger.Request()).success  # nothing running
    finally:
        client.close()
        graph.stop()


def test_image_codec_parameter_chooses_how_frames_are_stored(tmp_path):
    graph, client, feeder, _ = start_recorder(tmp_path, tmp_path / "store", image_codec="h264", image_quality=30)
    try:
        episode_id = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        time.sleep(0.3)
        feeder.play(1.0, executed=True)
        assert client.call(Trigger, "/recorder/stop_episode", Trigger.Request()).success
        client.wait_for_commit(episode_id, 10)
        ep = EpisodeStore(tmp_path / "store").open(episode_id)
        assert {c.name for c in ep.codecs.values()} == {"h264"}
        assert ep.meta["camera_codecs"]["corner"] == {"codec": "h264", "quality": 30} and ep.verify() == []
        assert abs(int(ep.images("corner").astype(int).mean()) - 128) <= 2  # the feeder's grey frames
    finally:
        client.close()
        graph.stop()
    bad = subprocess.run([sys.executable, "-m", "robot_runtime.nodes.recorder", "--ros-args", "-p",
                          f"store_path:={tmp_path / 'bad'}", "-p", "image_codec:=jpeg", "-p", "image_quality:=0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "/recorder: parameter 'image_quality': image quality 0 for 'jpeg' is not an " \
        "integer in [1, 100]" in bad.stderr + bad.stdout


HOSTILE_LABELS = [
    "{not json", "[" * 100_000 + "]" * 100_000, json.dumps({"outcome": "failure", "progress": True}),
    json.dumps({"outcome": "failure", "progress": 2.5}), json.dumps({"outcome": "success", "note": 5}),
    json.dumps({"episode_id": "../../../x", "outcome": "failure"}),
    json.dumps({"outcome": "success", "note": "x" * 100_000}), '{"outcome": "success", "progress": NaN}',
    json.dumps({"schema_version": 99, "outcome": "success"}),
    json.dumps({"outcome": "success"}),  # well-formed, but no episode has been committed yet
]
HOSTILE_EVENTS = [
    "", "[" * 100_000, '{"event": "explode"}',
    json.dumps({"event": "start", "episode_id": "../../../x", "task": "t", "robot_id": "r", "control_rate_hz": 20,
                "stamp_ns": 0}),
    '{"event": "start", "episode_id": "e1", "task": "t", "robot_id": "r", "control_rate_hz": NaN, "stamp_ns": 0}',
    json.dumps({"event": "end", "episode_id": "e1", "reason": "", "steps": [1]}),
    EpisodeEnd(episode_id="someone-else", reason="not ours", steps=0).to_json(),  # well-formed, another episode
]


def test_hostile_labels_and_events_are_refused_and_the_next_episode_is_recorded(tmp_path):
    graph, client, feeder, _ = start_recorder(tmp_path, tmp_path / "store")
    statuses = []
    client.node.create_subscription(String, ros_io.RECORDER_STATUS_TOPIC, lambda m: statuses.append(m.data),
                                    ros_io.LATCHED_QOS)
    labels = client.node.create_publisher(String, ros_io.OPERATOR_LABEL_TOPIC, ros_io.STREAM_QOS)

    def refusals():
        parsed = [parse_recorder_status(s) for s in list(statuses)]
        return [s.error for s in parsed if isinstance(s, LabelRefused)]

    try:
        time.sleep(0.5)
        for text in HOSTILE_LABELS:
            labels.publish(String(data=text))
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while len(errors := refusals()) < len(HOSTILE_LABELS) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(errors) == len(HOSTILE_LABELS), errors
        assert "is not allowed" in errors[5] and "OperatorLabel: progress" in errors[2]
        assert "nested deeper" in errors[1] and "no episode committed" in errors[-1]
        for text in HOSTILE_EVENTS[:-1]:  # before the episode: none starts one
            feeder.events.publish(String(data=text))
        episode_id = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        time.sleep(0.3)
        for text in HOSTILE_EVENTS:  # during it: none ends or restarts it
            feeder.events.publish(String(data=text))
        feeder.play(1.0, executed=True)
        assert client.call(Trigger, "/recorder/stop_episode", Trigger.Request()).success
        commit = client.wait_for_commit(episode_id, 10)
        ep = EpisodeStore(tmp_path / "store").open(episode_id)
        assert ep.steps == commit["steps"] >= 15 and ep.meta["end_reason"] == "stopped by operator"
        assert not ep.meta["truncated"]
        assert [p.name for p in (tmp_path / "store" / "episodes").iterdir()] == [episode_id]
        assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
        assert all(e["episode_id"] != "../../../x" for e in client.events)  # the client refused them too
        graph.check()  # the recorder is still up
        log = (tmp_path / "logs" / "recorder.log").read_text()
        assert "ignoring episode event" in log and "ignoring the end of episode someone-else" in log
    finally:
        client.close()
        graph.stop()


def test_store_quota_stops_recording_and_reports_it(tmp_path):
    graph, client, feeder, diagnostics = start_recorder(tmp_path, tmp_path / "store", disk_quota_mb=0.3,
                                                        min_free_mb=0.0)
    try:
        first = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        time.sleep(0.3)
        feeder.play(4.0, executed=True, noise=True)  # ~80 steps, the first 50-step chunk is ~2.7 MB
        commit = client.wait_for_commit(first, 10)
        ep = EpisodeStore(tmp_path / "store").open(first)
        assert ep.meta["truncated"] and "quota" in ep.meta["end_reason"] and commit["steps"] < 80
        status = client.wait_for(lambda: (s := recorder_status(diagnostics)) and s.level == s.ERROR and s, 5,
                                 "a disk error on /diagnostics")
        assert "quota" in status.message
        second = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        feeder.play(0.5, executed=True)
        client.call(Trigger, "/recorder/stop_episode", Trigger.Request())
        time.sleep(1.0)
        assert second not in client.commits  # refused while over quota
        graph.check()  # and the recorder is still up
    finally:
        client.close()
        graph.stop()


@pytest.fixture
def small_filesystem(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the quota test covers the same path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_nearly_full_filesystem_stops_recording_before_it_fills(tmp_path, small_filesystem):
    # lossless: noise frames then take ~0.7 MB per 50-step chunk (av1 would take a few KB)
    graph, client, feeder, diagnostics = start_recorder(tmp_path, small_filesystem / "store", min_free_mb=2.5,
                                                        image_size=48, image_codec="lossless")
    try:
        first = client.call(Trigger, "/recorder/start_episode", Trigger.Request()).message
        time.sleep(0.3)
        feeder.play(10.0, executed=True, size=48, noise=True)  # on a 4 MB disk
        client.wait_for_commit(first, 10)
        ep = EpisodeStore(small_filesystem / "store").open(first)  # what was written is intact
        assert ep.meta["truncated"] and "disk" in ep.meta["end_reason"] and ep.steps > 0
        ep.images("corner")  # readable
        status = client.wait_for(lambda: (s := recorder_status(diagnostics)) and s.level == s.ERROR and s, 5,
                                 "a disk error on /diagnostics")
        assert "low" in status.message
        graph.check()
    finally:
        client.close()
        graph.stop()
