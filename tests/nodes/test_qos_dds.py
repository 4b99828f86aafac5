"""QoS over real DDS: publishers of each profile a robot's graph uses reach every subscription kind.

policy_node, teleop_mux and the recorder run as their own processes. For each publisher profile (the
sensor-data profile most camera drivers use, ROS's default reliable one, and reliable transient-local),
the test plays a robot whose cameras, camera_info, joint states and executed commands all use it, and
sends teleop and policy commands and the e-stop with it: the policy answers, the recorder records, the
gate forwards, and the e-stop holds the robot (and stays visible to a node that joins later).
"""
import itertools
import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.calibration.cameras import load_calibration
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder

PROFILES = {
    "sensor_data": qos_profile_sensor_data,  # best effort, volatile
    "default": QoSProfile(depth=10),  # reliable, volatile
    "transient_local": QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL),  # reliable
}
CALIBRATION = load_calibration("sim_cameras.yaml")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("qos")
    bundle = make_reference_bundle(root / "bundle")
    processes = GraphProcesses("sim", {"policy_node": {"bundle_path": str(bundle.path)},
                                       "recorder": {"store_path": str(root / "store"), "calibration_file": ""}},
                               log_dir=root / "logs", only=["policy_node", "teleop_mux", "recorder"]).start()
    client = GraphClient("qos_test")
    try:
        client.wait_for_graph(["policy_node", "teleop_mux", "recorder"])
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 30, "the policy to serve")
        yield client, root
    finally:
        client.close()
        processes.stop()


def forwarded(feeder, publisher, action, stamps, timeout: float = 5.0) -> JointState:
    """Publish `action` with a fresh stamp until the gate's robot command for one of them arrives; return it.

    The feeder's robot/command subscription is new and best effort: its first samples may precede discovery.
    """
    deadline = time.monotonic() + timeout
    while True:
        stamp = next(stamps)
        publisher.publish(ros_io.joint_state_msg(ACTION_NAMES, action, stamp))
        time.sleep(0.05)
        got = feeder.commands_for([stamp], "robot")
        if got:
            return got[stamp]
        assert time.monotonic() < deadline, f"no robot command for {publisher.topic_name} within {timeout} s"


def matched(publisher, subscriptions: int, timeout: float = 10.0) -> None:
    """Wait until `publisher` is matched (QoS-compatible and discovered) with that many subscriptions."""
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() < subscriptions:
        assert time.monotonic() < deadline, f"{publisher.topic_name}: {publisher.get_subscription_count()} matched"
        time.sleep(0.05)


@pytest.mark.parametrize("profile", PROFILES)
def test_observations_reach_the_policy_and_the_recorder(graph, profile):
    client, root = graph
    feeder = Feeder(client, qos=PROFILES[profile], camera_info={"corner": CALIBRATION["corner"]})
    for publisher in [*feeder.images.values(), feeder.state_pub]:
        matched(publisher, 2)  # policy_node and the recorder
    matched(feeder.executed_pub, 1)
    matched(feeder.camera_info["corner"][0], 1)
    feeder.play(0.3)  # a driver's camera_info is out before an episode starts
    episode_id = feeder.start()
    stamps = feeder.play(1.5, executed=True)
    feeder.end(episode_id, len(stamps) - 1)
    assert len(feeder.commands_for(stamps)) >= len(stamps) - 2  # the policy answered (almost) every tick
    commit = client.wait_for_commit(episode_id, 15)
    assert commit["steps"] >= len(stamps) - 3, (commit, len(stamps))
    episode = EpisodeStore(root / "store").open(episode_id)
    assert episode.meta["extra"]["calibration"]["corner"]["camera_matrix"] == CALIBRATION["corner"].camera_matrix


@pytest.mark.parametrize("profile", PROFILES)
def test_commands_and_the_estop_reach_the_gate(graph, profile):
    client, root = graph
    qos = PROFILES[profile]
    feeder = Feeder(client)
    teleop = client.node.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, qos)
    policy = client.node.create_publisher(JointState, ros_io.POLICY_COMMAND_TOPIC, qos)
    estop = client.node.create_publisher(Bool, ros_io.ESTOP_TOPIC, qos)
    for publisher in (teleop, policy):
        matched(publisher, 1)
    reliable = qos.reliability == ReliabilityPolicy.RELIABLE
    matched(estop, 2 if reliable else 1)  # the reliable subscription, and the best-effort one
    stamps = itertools.count(client.node.get_clock().now().nanoseconds)
    assert forwarded(feeder, teleop, [0.1, 0.2, 0.0, 0.5], stamps).header.frame_id == "operator"
    time.sleep(0.4)  # past the deadman timeout: the policy's turn
    assert forwarded(feeder, policy, [0.3, 0.0, 0.0, 0.5], stamps).header.frame_id == "policy"

    for _ in range(3):  # an e-stop button repeats its state; a best-effort sample may be lost
        estop.publish(Bool(data=True))
        time.sleep(0.1)
    held = forwarded(feeder, policy, [0.3, 0.0, 0.0, 0.5], stamps)
    assert held.header.frame_id == "hold" and np.all(np.array(held.position)[:3] == 0.0)
    latched = []  # a node that joins after the e-stop learns it is active
    client.node.create_subscription(Bool, ros_io.ESTOP_STATE_TOPIC, latched.append, ros_io.LATCHED_QOS)
    client.wait_for(lambda: latched and latched[-1].data, 5, "the latched e-stop state")
    assert client.call(Trigger, "/teleop_mux/clear_estop", Trigger.Request()).success
    client.wait_for(lambda: not latched[-1].data, 5, "the cleared e-stop state")
