"""policy_node alone over DDS: it refuses bad bundles at start-up and then commands nothing."""
import json
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from bundle_factory import make_reference_bundle
from robot_runtime.launcher import GraphProcesses
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import STATE_NAMES, instruction_for
from std_msgs.msg import String


@pytest.fixture
def broken_bundle(tmp_path):
    bundle = make_reference_bundle(tmp_path / "broken")
    (bundle.path / "manifest.json").write_text('{"schema_version": 1, "model_id": "x",')  # truncated
    return bundle


class Feeder:
    """Plays the robot: episode start, camera frames and states at 20 Hz; collects commands."""

    def __init__(self, client: GraphClient):
        node = client.node
        self.node = node
        self.images = {c: node.create_publisher(Image, ros_io.camera_topic(c), ros_io.STREAM_QOS)
                       for c in ("corner", "gripperPOV")}
        self.state = node.create_publisher(JointState, ros_io.STATE_TOPIC, ros_io.STREAM_QOS)
        self.events = node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        self.commands = []
        node.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC, self.commands.append, ros_io.STREAM_QOS)

    def play(self, seconds: float) -> None:
        self.events.publish(ros_io.json_msg(event="start", episode_id="e", task=instruction_for("push-v3"),
                                            stamp_ns=self.node.get_clock().now().nanoseconds))
        end = time.monotonic() + seconds
        frame = np.full((96, 96, 3), 128, np.uint8)
        while time.monotonic() < end:
            stamp = self.node.get_clock().now().nanoseconds
            for cam, pub in self.images.items():
                pub.publish(ros_io.image_msg(frame, stamp, cam))
            self.state.publish(ros_io.joint_state_msg(STATE_NAMES, np.zeros(len(STATE_NAMES)), stamp))
            time.sleep(0.05)


def test_refuses_broken_bundle_at_startup_then_serves_a_good_one(tmp_path, broken_bundle):
    graph = GraphProcesses("sim", {"policy_node": {"bundle_path": str(broken_bundle.path)}},
                           log_dir=tmp_path / "logs", only=["policy_node"]).start()
    client = GraphClient("policy_test")
    try:
        client.wait_for_graph(["policy_node"], {ros_io.STATE_TOPIC: (0, 1), ros_io.POLICY_COMMAND_TOPIC: (1, 0)})
        status = client.wait_for(lambda: client.policy_status, 10, "policy status")
        assert status["state"] == "error"
        assert "manifest.json: invalid JSON" in status["error"] and str(broken_bundle.path) in status["error"]
        feeder = Feeder(client)
        time.sleep(0.5)  # let the feeder's publishers match
        feeder.play(1.5)
        assert feeder.commands == []  # a refused bundle commands nothing
        assert "refusing bundle" in (tmp_path / "logs" / "policy_node.log").read_text()

        good = make_reference_bundle(tmp_path / "good")
        client.set_parameters("policy_node", {"bundle_path": str(good.path)})
        feeder.play(1.5)
        assert len(feeder.commands) >= 10  # the same feed does produce commands from a good bundle
        assert all(np.isfinite(c.position).all() for c in feeder.commands)
    finally:
        client.close()
        graph.stop()
