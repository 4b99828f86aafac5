"""The RECAP cycle: pretrain and improvement rounds, the round's labels, baselines, and `robot-runtime-train`.

May import every other room of the workstation and the robot's contracts."""
