"""Arbitration: the operator commands the robot only while the deadman is held and fresh."""
from robot_runtime.teleop.arbiter import OPERATOR, POLICY, TeleopArbiter


def test_deadman_must_be_held_and_fresh():
    arb = TeleopArbiter(deadman_timeout=0.25)
    assert arb.source(0.0) == POLICY
    arb.set_engaged(True, now=1.0)
    assert arb.accepts(OPERATOR, 1.1) and not arb.accepts(POLICY, 1.1)
    assert arb.source(1.3) == POLICY  # the device went silent: control returns to the policy
    arb.set_engaged(False, now=1.4)
    assert arb.source(1.4) == POLICY
