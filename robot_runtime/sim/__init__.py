"""The simulated robot (MetaWorld in MuJoCo), its scripted operator and the in-process rollout loop.

May import the contracts, `runtime` (the rollout runs the robot's executor) and `calibration.cameras`."""
