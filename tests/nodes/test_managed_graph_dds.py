"""The simulated graph under a namespace, started unconfigured, over real DDS.

`robot-runtime-launch sim --namespace /r1 --lifecycle manual`, as separate processes: every parameter of
config/sim.yaml (the safety settings first) reads back from /r1/<node> over the parameter services, every
numeric parameter has a range in its descriptor; the managed nodes wait unconfigured and nothing commands
the robot until the lifecycle manager brings them up; then the policy drives, and deactivating the gate
(teleop_mux) stops every robot command.
"""
import subprocess
import sys
import time

import pytest
import yaml
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, ListParameters
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from robot_runtime.bringup.graph import config_dir
from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import SIM_NODES, GraphClient
from robot_runtime.nodes.lifecycle_manager import MANAGED_NODES

from bundle_factory import make_reference_bundle

NAMESPACE = "/r1"
SAFETY = {"policy_node": ["max_delta", "hold_zero", "workspace", "max_frame_wait"],
          "teleop_mux": ["max_delta", "hold_zero", "workspace", "deadman_timeout", "action_low", "action_high"]}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("managed")
    bundle = make_reference_bundle(root / "bundle")
    processes = GraphProcesses("sim", {"policy_node": {"bundle_path": str(bundle.path)},
                                       "recorder": {"store_path": str(root / "store")},
                                       "sim_robot": {"max_steps": 20}, "scripted_operator": {"mode": "off"}},
                               log_dir=root / "logs", namespace=NAMESPACE, lifecycle="manual").start()
    client = GraphClient("managed_test", namespace=NAMESPACE)
    commands = []
    client.node.create_subscription(JointState, ros_io.ROBOT_COMMAND_TOPIC, commands.append, ros_io.STREAM_QOS)
    try:
        client.wait_for_graph(SIM_NODES, {ros_io.STATE_TOPIC: (1, 3), ros_io.ROBOT_COMMAND_TOPIC: (1, 2)}, timeout=90)
        yield client, processes, root, commands
    finally:
        client.close()
        processes.stop()


def lifecycle_manager(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "robot_runtime.nodes.lifecycle_manager", "--namespace", NAMESPACE,
                           *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_parameter_from_the_config_applies_under_the_namespace(graph):
    client, processes, root, commands = graph
    config = yaml.safe_load((config_dir() / "sim.yaml").read_text())
    for node, names in SAFETY.items():  # the safety settings, as the file says them
        got = client.get_parameters(node, names)
        file = config[node]["ros__parameters"]
        assert {n: got[n] for n in names if n in file} == {n: file[n] for n in names if n in file}, node
    assert client.get_parameters("policy_node", ["hold_zero"])["hold_zero"] == ["ee_dx", "ee_dy", "ee_dz"]
    for spec in processes.specs:  # and everything else the node was given
        expected = processes.parameters(spec)
        got = client.get_parameters(spec.name, list(expected))
        assert got == expected, spec.name


def test_every_numeric_parameter_has_a_range(graph):
    client, processes, root, commands = graph
    for spec in processes.specs:
        names = client.call(ListParameters, client.service(spec.name, "list_parameters"),
                            ListParameters.Request()).result.names
        descriptors = client.call(DescribeParameters, client.service(spec.name, "describe_parameters"),
                                  DescribeParameters.Request(names=names)).descriptors
        unbounded = [d.name for d in descriptors if (d.type == ParameterType.PARAMETER_DOUBLE
                                                     and not d.floating_point_range)
                     or (d.type == ParameterType.PARAMETER_INTEGER and not d.integer_range)]
        assert unbounded == [], spec.name


def test_managed_nodes_wait_unconfigured_then_run_once_brought_up(graph):
    client, processes, root, commands = graph
    states = lifecycle_manager("state")
    assert all(f"{NAMESPACE}/{node}: unconfigured" in states for node in MANAGED_NODES), states
    episode_id = client.start_episode()
    time.sleep(2.0)
    assert commands == []  # nothing commands the robot: it holds
    assert client.call(Trigger, client.service("sim_robot", "stop_episode"), Trigger.Request()).success
    client.wait_for_end(episode_id, 10)

    assert all(f"{NAMESPACE}/{node}: active" in line
               for node, line in zip(MANAGED_NODES, lifecycle_manager("up").splitlines()))
    client.wait_for(lambda: client.policy_status.get("state") == "serving", 10, "the policy to serve")
    end, commit = client.run_episode(timeout=60)
    episode = EpisodeStore(root / "store").open(commit["episode_id"])
    assert episode.steps == end["steps"] == 20 and not episode.array("intervention").any()
    assert (~episode.array("held")).mean() > 0.75  # the policy drove
    assert any(c.header.frame_id == "policy" for c in commands)

    episode_id = client.start_episode()
    client.wait_for(lambda: len(commands) > 30, 10, "commands of the second episode")
    assert client.change_state("teleop_mux", "deactivate")
    time.sleep(0.3)  # what was in flight lands
    count = len(commands)
    assert commands[-1].header.frame_id == "hold"  # the gate's last word: hold
    time.sleep(1.5)
    assert len(commands) == count  # and then nothing
    assert client.lifecycle_state("policy_node") == "active"  # the policy still proposes; the gate keeps it out
