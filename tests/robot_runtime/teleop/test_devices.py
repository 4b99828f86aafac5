"""Teleop device mapping: gamepad, 6-DoF mouse and leader arm through one configuration."""
import numpy as np
import pytest

from robot_runtime.teleop.devices import MappingError, TeleopDevice

ACTIONS = ["ee_dx", "ee_dy", "ee_dz", "gripper"]


def test_gamepad_sticks_buttons_deadband_and_deadman():
    pad = TeleopDevice("joy", ACTIONS, {"ee_dx": "axes[1] * 0.5", "ee_dy": "axes[0] * -0.5",
                                        "gripper": "buttons[0] * 1.0 + buttons[1] * -1.0"}, "buttons[4]")
    pad.update_joy(axes=[0.02, 0.8, 0.0], buttons=[1, 0, 0, 0, 0])
    assert not pad.engaged
    np.testing.assert_allclose(pad.actions(), [0.4, 0.0, 0.0, 1.0])  # 0.02 is inside the deadband
    pad.update_joy(axes=[-1.0, 0.0, 0.0], buttons=[0, 1, 0, 0, 1])
    assert pad.engaged
    np.testing.assert_allclose(pad.actions(), [0.0, 0.5, 0.0, -1.0])


def test_six_dof_mouse_with_a_separate_button_topic():
    mouse = TeleopDevice("twist", ACTIONS, {"ee_dx": "linear.x * 2", "ee_dz": "linear.z * 2 + 0.1"}, "buttons[0]")
    mouse.update_twist((0.3, 0.0, -0.2), (0.0, 0.0, 0.5))
    mouse.update_joy(axes=[], buttons=[1, 0])
    assert mouse.engaged
    np.testing.assert_allclose(mouse.actions(), [0.6, 0.0, -0.3, 0.0], atol=1e-6)


def test_leader_arm_maps_joints_by_name():
    leader = TeleopDevice("joint_state", ["j1", "j2"], {"j1": "joint:shoulder", "j2": "joint:elbow * -1"}, "always")
    assert not leader.engaged  # nothing heard from the arm yet
    leader.update_joint_state(["elbow", "shoulder"], [0.5, 1.5])
    assert leader.engaged
    np.testing.assert_allclose(leader.actions(), [1.5, -0.5])


@pytest.mark.parametrize("mapping, deadman, match", [
    ({"ee_dx": "axes[1] ** 2"}, "buttons[0]", "cannot read"),
    ({"elbow": "axes[1]"}, "buttons[0]", "unknown actions"),
    ({"ee_dx": "axes[1]"}, "trigger", "deadman"),
])
def test_bad_mappings_are_refused(mapping, deadman, match):
    with pytest.raises(MappingError, match=match):
        TeleopDevice("joy", ACTIONS, mapping, deadman)


def test_input_the_device_never_sent_is_an_error():
    pad = TeleopDevice("joy", ACTIONS, {"ee_dx": "axes[7]"}, "buttons[0]")
    pad.update_joy(axes=[0.0], buttons=[1])
    with pytest.raises(MappingError, match="axes\\[7\\]"):
        pad.actions()
