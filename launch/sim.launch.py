"""ros2 launch robot_runtime sim.launch.py: the simulated robot and the on-robot nodes.

The node list lives in robot_runtime.bringup.graph; `robot-runtime-launch sim` starts the
same graph where the `launch` package is not installed.
"""
from robot_runtime.bringup.graph import launch_description


def generate_launch_description():
    return launch_description("sim")
