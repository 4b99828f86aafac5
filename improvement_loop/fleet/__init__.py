"""The workstation's side of the fleet: the ingest server (`ingest`, robot-runtime-ingest), the episode
catalog (`catalog`, SQLite) and the deployments (`deployments`); the nightly daemon is in `daemon/`.

May import the robot half's contracts and `robot_runtime.fleet` (the shared wire protocol and keys); no torch.
"""
