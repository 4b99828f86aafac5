"""ros2 launch robot_runtime robot.launch.py: the on-robot nodes beside your robot driver.

The node list lives in robot_runtime.bringup.graph; `robot-runtime-launch robot` starts the
same graph where the `launch` package is not installed.
Arguments: params_file, namespace (e.g. /r1), autostart (true: the launch file configures and activates
the lifecycle nodes; false: `ros2 run robot_runtime lifecycle_manager up` does).
"""
from robot_runtime.bringup.graph import launch_description


def generate_launch_description():
    return launch_description("robot")
