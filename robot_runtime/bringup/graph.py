"""The node graphs, as data: which executables run, under which names, with which parameters.

One list serves both ways of starting a graph: `launch/*.launch.py` on a ROS 2
install turns it into launch_ros `Node` actions, and `robot_runtime.bringup.launcher`
starts the same processes here, where `launch` is not installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robot_runtime.resources import PACKAGE, share_dir


@dataclass
class NodeSpec:
    executable: str
    name: str
    parameters: dict = field(default_factory=dict)


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
        NodeSpec("teleop_mux", "teleop_mux", {**names, **limits}),
        NodeSpec("policy_node", "policy_node"),
        NodeSpec("recorder", "recorder", names),
    ]


def robot_graph() -> list[NodeSpec]:
    """What runs on a real robot beside its driver (names and mappings from config/robot.yaml)."""
    return [
        NodeSpec("teleop_device", "teleop_device"),
        NodeSpec("teleop_mux", "teleop_mux"),
        NodeSpec("policy_node", "policy_node"),
        NodeSpec("recorder", "recorder"),
        NodeSpec("fleet_agent", "fleet_agent"),  # idles until config/robot.yaml names a server_endpoint
    ]


GRAPHS = {"sim": (sim_graph, "sim.yaml"), "robot": (robot_graph, "robot.yaml")}


def launch_description(graph: str):
    """A launch_ros LaunchDescription of `graph` (needs a ROS 2 install with launch_ros)."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    make_graph, config_file = GRAPHS[graph]
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(config_dir() / config_file),
                              description="parameter YAML for every node of the graph"),
        *[Node(package=PACKAGE, executable=spec.executable, name=spec.name, output="screen",
               parameters=[params_file, spec.parameters])
          for spec in make_graph()],
    ])
