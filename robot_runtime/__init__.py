"""robot_runtime: the robot-side library (no ROS, no torch).

Nodes in `robot_runtime.nodes` wrap this library for ROS 2; the workstation side
lives in `robot_runtime.improvement_loop`. Importing this package stays cheap.
"""

__version__ = "0.1.0"
