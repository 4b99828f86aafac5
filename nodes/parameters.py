"""Declaring ROS parameters with descriptors in one line each."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor


def declare(node, name: str, default, description: str, read_only: bool = False):
    """Declare a parameter with a description and return its current value."""
    node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=read_only))
    return node.get_parameter(name).value
