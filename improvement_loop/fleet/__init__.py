"""The workstation's side of the fleet: the ingest server (`ingest`, robot-runtime-ingest) and the episode
catalog (`catalog`, SQLite); the nightly daemon, gate and canary to come.

May import the robot half's contracts and `robot_runtime.fleet` (the shared wire protocol and keys); no torch.
"""
