"""The nightly self-improvement daemon (`robot-runtime-daemon`): its records in the catalog, the cycle's
state machine, schedule, lock, gate and canary.

May import every other workstation room and the robot half; training runs as child processes.
"""
