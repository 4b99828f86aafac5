"""Each controller adapter over real DDS: teleop_mux sends what ros2_control controllers take, and the record.

One teleop_mux per adapter runs under its own namespace (/joint_state, /float64_multi_array, ...); a policy
command goes in, the controller's message comes out on `command_topic` and the JointState record (who
commanded it) on `robot/command`. A mux told to put a controller's message on robot/command refuses to
configure and says which parameter to change.
"""
import time

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES

COMMAND = [0.01, -0.02, 0.03, 0.5]
ADAPTERS = {
    "joint_state": (JointState, {"command_topic": "controller/commands", "command_frame_id": "base"}),
    "float64_multi_array": (Float64MultiArray, {"command_topic": "forward_position_controller/commands",
                                                "output_names": ["gripper", "ee_dz", "ee_dy", "ee_dx"]}),
    "joint_trajectory": (JointTrajectory, {"command_topic": "joint_trajectory_controller/joint_trajectory",
                                           "control_rate_hz": 50.0}),
    "twist_stamped": (TwistStamped, {"command_topic": "servo_node/delta_twist_cmds", "command_frame_id": "base_link",
                                     "twist_mapping": ["ee_dx:linear.x:20", "ee_dy:linear.y:20", "ee_dz:linear.z:20"]}),
}


@pytest.fixture(scope="module")
def muxes(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    settings = {kind: {"command_adapter": kind, **params} for kind, (_, params) in ADAPTERS.items()}
    settings["clash"] = {"command_adapter": "float64_multi_array"}  # on robot/command, beside the record
    graphs = [GraphProcesses("sim", {"teleop_mux": params}, log_dir=root / name, only=["teleop_mux"],
                             namespace=name).start() for name, params in settings.items()]
    client = GraphClient("adapters_test")
    try:
        client.wait_for_graph([f"{name}/teleop_mux" for name in settings])
        yield client, root
    finally:
        client.close()
        for graph in graphs:
            graph.stop()


def received(client, msg_type, topic: str) -> list:
    messages = []
    client.node.create_subscription(msg_type, topic, messages.append, ros_io.COMMAND_QOS)
    return messages


@pytest.mark.parametrize("kind", ADAPTERS)
def test_the_controller_gets_its_message_and_the_recorder_its_record(muxes, kind):
    client, root = muxes
    msg_type, params = ADAPTERS[kind]
    controller = received(client, msg_type, f"/{kind}/{params['command_topic']}")
    record = received(client, JointState, f"/{kind}/{ros_io.ROBOT_COMMAND_TOPIC}")
    policy = client.node.create_publisher(JointState, f"/{kind}/{ros_io.POLICY_COMMAND_TOPIC}", ros_io.STREAM_QOS)
    deadline = time.monotonic() + 10
    while policy.get_subscription_count() < 1 or client.node.count_publishers(f"/{kind}/{params['command_topic']}") < 1:
        assert time.monotonic() < deadline, "the mux did not connect"
        time.sleep(0.05)
    time.sleep(0.5)
    stamp = client.node.get_clock().now().nanoseconds
    policy.publish(ros_io.joint_state_msg(ACTION_NAMES, COMMAND, stamp))
    client.wait_for(lambda: controller and record, 10, f"the {kind} command and its record")
    [msg], [kept] = controller, record
    assert kept.header.frame_id == "policy" and ros_io.stamp_ns(kept.header) == stamp
    np.testing.assert_allclose(kept.position, COMMAND, rtol=1e-6)
    if kind == "joint_state":
        assert list(msg.name) == list(ACTION_NAMES) and msg.header.frame_id == "base"
        np.testing.assert_allclose(msg.position, COMMAND, rtol=1e-6)
    elif kind == "float64_multi_array":
        np.testing.assert_allclose(msg.data, COMMAND[::-1], rtol=1e-6)
    elif kind == "joint_trajectory":
        [point] = msg.points
        assert list(msg.joint_names) == list(ACTION_NAMES)
        assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 20_000_000)
        np.testing.assert_allclose(point.positions, COMMAND, rtol=1e-6)
    else:
        assert msg.header.frame_id == "base_link" and ros_io.stamp_ns(msg.header) == stamp
        np.testing.assert_allclose([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z],
                                   np.array(COMMAND[:3]) * 20, rtol=1e-5)
        assert msg.twist.angular.z == 0.0


def test_a_controller_message_on_the_record_topic_is_refused(muxes):
    client, root = muxes
    assert client.lifecycle_state("clash/teleop_mux") == "unconfigured"
    log = (root / "clash" / "teleop_mux.log").read_text()
    assert "not configured: command_topic robot/command carries the JointState record" in log
