"""Recording episodes: pairing frames with states, the recording thread, disk guard.

May import the contracts, `runtime.sync`, `runtime.realtime` and `teleop.arbiter` (who was in control)."""
