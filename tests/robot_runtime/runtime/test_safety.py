"""The safety filter: nothing unsafe reaches the robot, whatever the policy proposes."""
import numpy as np
import pytest

from robot_runtime.runtime.safety import SafetyConfig, SafetyFilter, WorkspaceLimit

NAMES = ["ee_dx", "ee_dy", "ee_dz", "gripper"]


def make(max_delta=None, workspace=()):
    return SafetyFilter(SafetyConfig(NAMES, [-1.0] * 4, [1.0] * 4, max_delta=max_delta,
                                     hold_zero=["ee_dx", "ee_dy", "ee_dz"], workspace=list(workspace)),
                        state_names=["hand_x", "hand_y", "hand_z", "gripper_opening"])


def test_limits_and_rate_limit():
    f = make(max_delta=[0.5, 0.5, 0.5, 2.0])
    command, event = f.filter(np.array([3.0, -0.2, 0.1, 0.9]))
    np.testing.assert_allclose(command, [0.5, -0.2, 0.1, 0.9])
    assert "clipped" in event.reason and "rate limited" in event.reason and not event.held
    command, event = f.filter(np.array([0.6, -0.2, 0.1, 0.9]))
    np.testing.assert_allclose(command, [0.6, -0.2, 0.1, 0.9])
    assert event is None


def test_answers_to_one_step_are_each_limited_against_the_step_before():
    """At a takeover the policy's and the operator's answers to one observation both pass; the robot
    executes the last, which must still be within max_delta of the previous step's command."""
    f = make(max_delta=[0.25] * 4)
    f.filter(np.array([0.01, 0.0, 0.0, 0.0]), step=1)
    policy, _ = f.filter(np.array([0.02, 0.0, 0.0, 0.0]), step=2)
    operator, event = f.filter(np.array([1.0, -1.0, 0.0, 0.0]), step=2)
    np.testing.assert_allclose(policy, [0.02, 0.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(operator, [0.26, -0.25, 0.0, 0.0], atol=1e-6)  # from step 1's 0.01, not 0.02
    assert "rate limited" in event.reason
    following, _ = f.filter(np.array([1.0, -1.0, 0.0, 0.0]), step=3)
    np.testing.assert_allclose(following, [0.51, -0.5, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0, 0]), np.array([0, np.inf, 0, 0]), np.zeros(3), None])
def test_garbage_holds_the_last_safe_command(bad):
    f = make()
    f.filter(np.array([0.3, 0.3, 0.3, 0.7]))
    command, event = f.filter(bad)
    np.testing.assert_allclose(command, [0.0, 0.0, 0.0, 0.7])  # stop moving, keep the grip
    assert event.held


def test_workspace_refuses_motion_out_but_allows_motion_back():
    f = make(workspace=[WorkspaceLimit("hand_z", "ee_dz", 0.05, 0.3)])
    state = np.array([0.0, 0.6, 0.05, 1.0])
    command, event = f.filter(np.array([0.1, 0.0, -0.5, 0.0]), state)
    assert command[2] == 0.0 and "hand_z" in event.reason
    command, event = f.filter(np.array([0.1, 0.0, 0.5, 0.0]), state)
    assert command[2] == 0.5 and event is None


def test_estop_latches_until_cleared():
    f = make()
    f.estop.trigger("operator pressed stop")
    for _ in range(3):
        command, event = f.filter(np.array([0.5, 0.5, 0.5, 0.5]))
        assert event.held and "operator pressed stop" in event.reason and not command[:3].any()
    f.estop.clear()
    command, event = f.filter(np.array([0.5, 0.5, 0.5, 0.5]))
    assert event is None and command[0] == 0.5


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="hold_zero"):
        SafetyFilter(SafetyConfig(NAMES, [-1.0] * 4, [1.0] * 4, hold_zero=["elbow"]), [])
    with pytest.raises(ValueError, match="limits"):
        SafetyFilter(SafetyConfig(NAMES, [1.0] * 4, [-1.0] * 4), [])
