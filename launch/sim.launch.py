"""ros2 launch robot_runtime sim.launch.py: the simulated robot and the on-robot nodes.

The node list lives in robot_runtime.bringup.graph; `robot-runtime-launch sim` starts the
same graph where the `launch` package is not installed.
Arguments: params_file, namespace (e.g. /r1), autostart (true: the launch file configures and activates
the lifecycle nodes; false: `ros2 run robot_runtime lifecycle_manager up` does).
"""
from robot_runtime.bringup.graph import launch_description


def generate_launch_description():
    return launch_description("sim")
