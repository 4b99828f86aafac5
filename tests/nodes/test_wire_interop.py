"""What the graph publishes reads outside ROS: every message through an independent CDR implementation
(rosbags), every JSON payload through a strict parser (no NaN, no Infinity), while a real episode runs."""
import json
import threading

import pytest
from rosbags.typesys import Stores, get_typestore

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.datatools.rosbag import message_class
from robot_runtime.nodes.graph_client import SIM_NODES, SIM_TOPICS, GraphClient

from bundle_factory import make_reference_bundle

TYPESTORE = get_typestore(Stores.ROS2_KILTED)


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Raw (serialized) messages of every topic the sim graph publishes, over one operator episode and one
    policy episode: topic -> (type name, [bytes])."""
    root = tmp_path_factory.mktemp("wire")
    overrides = {"recorder": {"store_path": str(root / "episodes")}, "sim_robot": {"max_steps": 40},
                 "scripted_operator": {"mode": "correct"}}
    processes = GraphProcesses("sim", overrides, log_dir=root / "logs").start()
    client = GraphClient("wire_client")
    seen, lock = {}, threading.Lock()
    try:
        client.wait_for_graph(SIM_NODES, SIM_TOPICS)
        from rclpy.qos import qos_profile_sensor_data

        for topic, types in client.node.get_topic_names_and_types():
            if topic.startswith(("/rosout", "/parameter_events")) or topic.endswith("/_action/status"):
                continue
            type_name = types[0]

            def keep(data, topic=topic, type_name=type_name):
                with lock:
                    seen.setdefault(topic, (type_name, []))[1].append(bytes(data))

            client.node.create_subscription(message_class(type_name), topic, keep, qos_profile_sensor_data, raw=True)
        client.run_episode(timeout=90)
        bundle = make_reference_bundle(root / "bundle", version="wire")
        client.set_parameters("policy_node", {"bundle_path": str(bundle.path)})
        client.wait_for(lambda: client.policy_status.get("version") == "wire", 30, "the policy to serve")
        client.run_episode(timeout=90)
    finally:
        client.close()
        processes.stop()
    return seen


def test_every_topic_was_captured(captured):
    topics = set(captured)
    for topic in ("/joint_states", "/camera/corner/image_raw", "/robot/command", "/robot/executed",
                  "/policy/command", "/teleop/command", "/episode/events", "/policy/status", "/recorder/status"):
        assert topic in topics, sorted(topics)


def test_every_message_deserializes_with_rosbags(captured):
    failures = {}
    for topic, (type_name, messages) in captured.items():
        for data in messages:
            try:
                TYPESTORE.deserialize_cdr(data, type_name)
            except Exception as err:  # rosbags raises its own SerdeError and others
                failures.setdefault(topic, f"{type(err).__name__}: {err}")
    assert failures == {}
    assert sum(len(m) for _, m in captured.values()) > 200


def test_json_on_the_wire_is_strict(captured):
    for _topic, (type_name, messages) in captured.items():
        if type_name != "std_msgs/msg/String":
            continue
        for data in messages:
            strict_json(TYPESTORE.deserialize_cdr(data, type_name).data)
