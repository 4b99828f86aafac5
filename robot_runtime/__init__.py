"""robot_runtime: the robot-side library (no ROS, no torch).

Contracts at the top (`episode`, `bundle`, `messages`) and one helper for durable files (`files`); one
room per stage of the data flow: `runtime/` runs a bundle, `teleop/` lets an operator take over,
`capture/` records episodes, `datatools/` reads and converts them, `fleet/` moves them, `sim/` is the
simulated robot, `bringup/` starts the node graph. Rooms import the contracts and the rooms before them,
never ROS (that is `robot_runtime.nodes`), torch or the workstation (`robot_runtime.improvement_loop`).
"""

__version__ = "0.1.0"
