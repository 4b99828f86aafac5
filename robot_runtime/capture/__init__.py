"""Recording episodes: pairing frames with states, the recording thread, disk guard, camera calibration.

May import the contracts, `runtime.sync` and `teleop.arbiter` (who was in control)."""
