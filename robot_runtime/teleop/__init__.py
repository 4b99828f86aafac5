"""Operator takeover: the arbiter (deadman, who commands the robot) and teleop device mappings.

Imports numpy only; nothing else of the project."""
