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
