"""The node graphs, as data: which executables run, under which names, with which parameters.

One list serves both ways of starting a graph: `launch/*.launch.py` on a ROS 2
install turns it into launch_ros `Node` and `LifecycleNode` actions, and
`robot_runtime.bringup.launcher` starts the same processes here, where `launch` is
not installed.

Parameters under a namespace: config/*.yaml is keyed by bare node names, which rcl
matches only at the root namespace (`policy_node` means `/policy_node`). Both
launchers therefore read each node's section (`node_parameters`) and hand it to
the node in a file of its own keyed by its full name (`write_node_parameters`:
`/r1/policy_node`), so a robot under its own namespace keeps its safety settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robot_runtime.resources import PACKAGE, share_dir


@dataclass
class NodeSpec:
    executable: str
    name: str
    parameters: dict = field(default_factory=dict)
    managed: bool = False  # a lifecycle node: with autostart off it waits unconfigured for a manager


def config_dir() -> Path:
    """config/ in the source tree, or share/robot_runtime/config of an install."""
    return share_dir("config")


def sim_graph() -> list[NodeSpec]:
    """The simulated robot plus the on-robot nodes, with the sim's state/action names."""
    from robot_runtime.sim.metaworld_robot import ACTION_HIGH, ACTION_LOW, ACTION_NAMES, STATE_NAMES

    names = {"state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES)}
    limits = {"action_low": list(ACTION_LOW), "action_high": list(ACTION_HIGH)}
    return [
        NodeSpec("sim_robot", "sim_robot"),
        NodeSpec("scripted_operator", "scripted_operator"),
        NodeSpec("teleop_mux", "teleop_mux", {**names, **limits}, managed=True),
        NodeSpec("policy_node", "policy_node", managed=True),
        NodeSpec("recorder", "recorder", names, managed=True),
    ]


def robot_graph() -> list[NodeSpec]:
    """What runs on a real robot beside its driver (names and mappings from config/robot.yaml)."""
    return [
        NodeSpec("teleop_device", "teleop_device"),
        NodeSpec("teleop_mux", "teleop_mux", managed=True),
        NodeSpec("policy_node", "policy_node", managed=True),
        NodeSpec("recorder", "recorder", managed=True),
        NodeSpec("fleet_agent", "fleet_agent"),  # idles until config/robot.yaml names a server_endpoint
    ]


GRAPHS = {"sim": (sim_graph, "sim.yaml"), "robot": (robot_graph, "robot.yaml")}


def node_parameters(params_file: str | Path, spec: NodeSpec) -> dict:
    """The node's own section of `params_file` (keyed by its bare name) with the graph's parameters over it.

    Sections under wildcard keys (`/**:`) apply under any namespace by themselves: pass the file too."""
    data = yaml.safe_load(Path(params_file).read_text()) or {}
    section = (data.get(spec.name) or {}).get("ros__parameters") or {}
    return {**section, **spec.parameters}


def normalize_namespace(namespace: str) -> str:
    """'' for the root, else '/name' (a trailing or missing slash as people type them)."""
    return "/" + namespace.strip("/") if namespace.strip("/") else ""


def write_node_parameters(path: Path, namespace: str, spec: NodeSpec, parameters: dict) -> Path:
    """A params file with `parameters` for the node `spec` under `namespace`, keyed by its full name."""
    path.write_text(yaml.safe_dump({f"{normalize_namespace(namespace)}/{spec.name}": {"ros__parameters": parameters}}))
    return path


def launch_description(graph: str):
    """A launch_ros LaunchDescription of `graph` (needs a ROS 2 install with launch_ros).

    Processes start with the shipped DDS transport profile unless the environment names one (transport.py).
    Arguments: `params_file`, `namespace` (every node's, e.g. /r1) and `autostart`: true emits configure,
    then activate on reaching inactive, to each managed node from the launch file; false leaves them
    unconfigured for a lifecycle manager (`ros2 run robot_runtime lifecycle_manager up ...`)."""
    import os

    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable

    from launch import LaunchDescription
    from robot_runtime.bringup.transport import transport_environment

    _, config_file = GRAPHS[graph]
    return LaunchDescription([
        # config/fastdds.xml for every process launched after this (large camera frames), unless one is chosen
        *(SetEnvironmentVariable(name, value) for name, value in transport_environment(os.environ).items()),
        DeclareLaunchArgument("params_file", default_value=str(config_dir() / config_file),
                              description="parameter YAML for every node of the graph"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node, e.g. /r1"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="configure and activate the lifecycle nodes from the launch file"),
        OpaqueFunction(function=_launch_nodes, args=[graph]),
    ])


def _launch_nodes(context, graph: str) -> list:
    """The graph's node actions once the launch arguments are known (the params file is read here)."""
    import tempfile

    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    autostart = LaunchConfiguration("autostart").perform(context) == "true"
    directory = Path(tempfile.mkdtemp(prefix=f"{PACKAGE}_launch_"))
    actions = []
    for spec in GRAPHS[graph][0]():
        # A file, not a dict: launch_ros would read each string as YAML (an empty string becomes null).
        own = node_parameters(params_file, spec) | ({"autostart": False} if spec.managed else {})  # we drive it
        parameters = [params_file, str(write_node_parameters(directory / f"{spec.name}.yaml", namespace, spec, own))]
        common = {"package": PACKAGE, "executable": spec.executable, "name": spec.name,
                  "namespace": normalize_namespace(namespace), "output": "screen", "parameters": parameters}
        if not spec.managed:
            actions.append(Node(**common))
            continue
        node = LifecycleNode(**common)
        actions.append(node)
        if autostart:
            def change(transition: int, node=node) -> EmitEvent:
                return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                   transition_id=transition))

            actions += [
                RegisterEventHandler(OnStateTransition(  # configured (now or later, e.g. once a bundle is set)
                    target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                    entities=[change(Transition.TRANSITION_ACTIVATE)])),
                change(Transition.TRANSITION_CONFIGURE),
            ]
    return actions
