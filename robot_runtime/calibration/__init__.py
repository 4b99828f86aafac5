"""Camera calibration: the calibration file, ChArUco intrinsics, hand-eye mounting, drift checks, and the
preprocessing that turns a camera's frame into what a policy was trained on.

May import the contracts (`files`, `resources`, `bundle`, `episode`); the room of `robot-runtime-calibrate`."""
