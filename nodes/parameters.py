"""Declaring ROS parameters with descriptors in one line each."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor


def declare(node, name: str, default, description: str, read_only: bool = False):
    """Declare a parameter with a description and return its current value."""
    node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=read_only))
    return node.get_parameter(name).value


def declare_safety(node) -> None:
    """The safety filter's parameters, shared by policy_node and teleop_mux."""
    declare(node, "max_delta", [0.0], "per-tick change limit per action; [0.0] = none")
    declare(node, "hold_zero", [""], "actions that hold at zero (deltas, velocities); others hold last value")
    declare(node, "workspace", [""], "limits as state_name:action_name:low:high")


def safety_filter(node, action_names, action_low, action_high, state_names):
    """A SafetyFilter from the node's safety parameters and the given action limits."""
    from robot_runtime.runtime.safety import SafetyConfig, SafetyFilter, WorkspaceLimit

    max_delta = list(node.get_parameter("max_delta").value)
    return SafetyFilter(SafetyConfig(
        action_names=list(action_names), action_low=list(action_low), action_high=list(action_high),
        max_delta=max_delta if any(d > 0 for d in max_delta) else None,
        hold_zero=[n for n in node.get_parameter("hold_zero").value if n],
        workspace=[WorkspaceLimit.parse(e) for e in node.get_parameter("workspace").value if e]),
        list(state_names))
