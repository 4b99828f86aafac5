"""`make demo` (robot-runtime-demo): the fleet on the simulated robot, two robots and a workstation on this machine.

May import every workstation room and the robot half; runs the product's commands and nodes as processes.
"""
from robot_runtime.improvement_loop.demo.cli import main

__all__ = ["main"]
