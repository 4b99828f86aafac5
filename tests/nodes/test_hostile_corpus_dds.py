"""The fuzz corpus over DDS: policy_node, teleop_mux and the recorder each take thousands of hostile messages on
every topic they read, then still command, forward and record an episode, with no traceback in any log.

Events: mutations of valid start/end events that the parser refuses (a valid mutation would legitimately start
an episode); labels: every mutation (none can apply: nothing is committed yet); joint states, commands and
camera frames: wrong names, lengths, NaN and infinities, and frames whose size, encoding, step or data
disagree.
"""
import itertools
import math
import random
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.messages import MessageError, parse_episode_event
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder
from wire_fuzz import END, LABEL, START, mutate

CORPUS = 2_000  # per string topic; with the DDS round trip and three nodes, what fits a test's time
NODES = ["policy_node", "teleop_mux", "recorder"]


def hostile_events(count: int, rng: random.Random) -> list[str]:
    out = []
    while len(out) < count:
        text = mutate(rng.choice([START, END]), rng)
        try:
            parse_episode_event(text)
        except MessageError:
            out.append(text)
    return out


def hostile_joint_states(names: tuple[str, ...]) -> list[JointState]:
    n = len(names)
    values = [[math.nan] * n, [math.inf] * n, [-math.inf] + [0.0] * (n - 1), [1e308] * n, [0.0] * (n + 3),
              [0.0] * max(0, n - 2), []]
    name_sets = [list(names), list(reversed(names)), [*names[:-1], "nobody"], [""] * n, ["../x"] * n, []]
    msgs = []
    for position, name in itertools.product(values, name_sets):
        msg = JointState(name=name, position=position, velocity=[math.nan] * len(position))
        ros_io.set_stamp(msg.header, 0 if len(msgs) % 3 else 2 ** 62)
        msgs.append(msg)
    return msgs


def hostile_images() -> list[Image]:
    cases = [(96, 96, "rgb8", 288, 10), (96, 96, "rgb8", 288, 96 * 288 + 1), (96, 96, "rgb8", 1, 96 * 288),
             (0, 0, "rgb8", 0, 0), (96, 96, "yuv422", 192, 96 * 192), (96, 96, "", 288, 96 * 288),
             (4096, 4096, "rgb8", 4096 * 3, 100), (96, 96, "mono16", 192, 96 * 192), (95, 97, "bgr8", 291, 95 * 291),
             (96, 96, "rgb8", 10 ** 9, 96 * 288)]
    msgs = []
    for height, width, encoding, step, size in cases:
        msg = Image(height=height, width=width, encoding=encoding, step=step)
        msg.data = bytes(size)
        msgs.append(msg)
    return msgs


@pytest.fixture
def graph(tmp_path):
    bundle = make_reference_bundle(tmp_path / "bundle")
    processes = GraphProcesses("sim", {"policy_node": {"bundle_path": str(bundle.path)},
                                       "recorder": {"store_path": str(tmp_path / "store"), "calibration_file": ""}},
                               log_dir=tmp_path / "logs", only=NODES).start()
    client = GraphClient("hostile_corpus")
    try:
        client.wait_for_graph(NODES)
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 60, "the policy to serve")
        yield processes, client, tmp_path
    finally:
        client.close()
        processes.stop()


def test_nodes_survive_the_corpus_and_still_command_forward_and_record(graph):
    processes, client, root = graph
    node, rng = client.node, random.Random(10)
    feeder = Feeder(client)
    labels = node.create_publisher(String, ros_io.OPERATOR_LABEL_TOPIC, ros_io.STREAM_QOS)
    teleop = node.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, ros_io.STREAM_QOS)
    policy = node.create_publisher(JointState, ros_io.POLICY_COMMAND_TOPIC, ros_io.STREAM_QOS)
    engaged = node.create_publisher(Bool, ros_io.TELEOP_ENGAGED_TOPIC, ros_io.COMMAND_QOS)
    time.sleep(1.0)
    sent = 0
    for event, label in zip(hostile_events(CORPUS, rng), (mutate(LABEL, rng) for _ in range(CORPUS))):
        feeder.events.publish(String(data=event))
        labels.publish(String(data=label))
        sent += 2
        if sent % 200 == 0:
            time.sleep(0.05)  # let the nodes take them rather than the queues drop them
    for _ in range(3):
        for msg in hostile_joint_states(STATE_NAMES):
            feeder.state_pub.publish(msg)
            feeder.executed_pub.publish(msg)
        for msg in hostile_joint_states(ACTION_NAMES):
            teleop.publish(msg)
            policy.publish(msg)
        for msg in hostile_images():
            for camera_pub in feeder.images.values():
                camera_pub.publish(msg)
        time.sleep(0.2)
    engaged.publish(Bool(data=False))
    time.sleep(1.0)
    processes.check()  # every node is still up

    episode_id = feeder.start()
    stamps = feeder.play(1.5, executed=True)
    feeder.end(episode_id, len(stamps) - 1)
    assert len(feeder.commands_for(stamps)) >= len(stamps) - 3  # the policy still answers every tick
    assert len(feeder.commands_for(stamps, "robot")) >= len(stamps) - 3  # and the gate forwards them
    commit = client.wait_for_commit(episode_id, 20)
    assert commit["steps"] >= len(stamps) - 3
    assert EpisodeStore(root / "store").episode_ids() == [episode_id]  # nothing else was started or written
    reply = client.call(Trigger, "/recorder/stop_episode", Trigger.Request())  # its services still answer
    assert not reply.success and reply.message  # (nothing is running, and it says so)
    processes.check()
    for name in NODES:
        log = (root / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log, f"{name}:\n{log[-3000:]}"
    refusals = (root / "logs" / "recorder.log").read_text()
    assert "ignoring episode event" in refusals, refusals[-2000:]
    assert np.isfinite([p for c in feeder.commands_for(stamps, "robot").values() for p in c.position]).all()
