"""Commands as controllers take them, without DDS: the pure conversions of robot_runtime.nodes.command_adapters."""
import numpy as np
import pytest

from robot_runtime.nodes.command_adapters import CommandAdapter, TwistEntry, joint_trajectory

NAMES = ["ee_dx", "ee_dy", "ee_dz", "gripper"]
COMMAND = np.array([0.01, -0.02, 0.03, 0.5], np.float32)


def adapter(kind, **kw):
    settings = {"output_names": [], "period_s": 0.05, "twist_mapping": [], "frame_id": ""}
    return CommandAdapter(kind, NAMES, **{**settings, **kw})


def test_joint_state_names_the_output_actions_in_order():
    msg = adapter("joint_state", output_names=["gripper", "ee_dx"], frame_id="base").message(COMMAND, 1_500_000_000)
    assert list(msg.name) == ["gripper", "ee_dx"] and list(msg.position) == pytest.approx([0.5, 0.01])
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 500_000_000, "base")


def test_float64_multi_array_is_in_the_controllers_joint_order():
    msg = adapter("float64_multi_array", output_names=["ee_dz", "ee_dy", "ee_dx"]).message(COMMAND, 0)
    assert list(msg.data) == pytest.approx([0.03, -0.02, 0.01])
    assert list(adapter("float64_multi_array").message(COMMAND, 0).data) == pytest.approx(COMMAND)


def test_a_chunk_becomes_trajectory_points_one_control_period_apart():
    chunk = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = joint_trajectory(NAMES, chunk, 0.02)
    assert list(msg.joint_names) == NAMES and len(msg.points) == 3
    assert [(p.time_from_start.sec, p.time_from_start.nanosec) for p in msg.points] == [
        (0, 20_000_000), (0, 40_000_000), (0, 60_000_000)]
    assert list(msg.points[2].positions) == [8, 9, 10, 11]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)  # "start on receipt"


def test_one_action_is_one_trajectory_point():
    msg = adapter("joint_trajectory", period_s=1.5).message(COMMAND, 123)
    [point] = msg.points
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (1, 500_000_000)
    assert list(point.positions) == pytest.approx(COMMAND)


def test_twist_maps_and_scales_actions_onto_fields():
    a = adapter("twist_stamped", twist_mapping=["ee_dx:linear.x:20", "ee_dy:linear.y:20", "ee_dz:angular.z"],
                frame_id="base_link")
    msg = a.message(COMMAND, 2_000_000_000)
    assert (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) == pytest.approx((0.2, -0.4, 0.0))
    assert msg.twist.angular.z == pytest.approx(0.03) and msg.twist.angular.x == 0.0
    assert msg.header.frame_id == "base_link" and msg.header.stamp.sec == 2


@pytest.mark.parametrize("kind, settings, message", [
    ("position", {}, "command_adapter 'position' is not one of"),
    ("joint_state", {"output_names": ["joint_9"]}, r"output_names \['joint_9'\] are not among"),
    ("twist_stamped", {}, "needs twist_mapping entries"),
    ("twist_stamped", {"twist_mapping": ["ee_dx:linear.w"]}, "is not action:field"),
    ("twist_stamped", {"twist_mapping": ["ee_dx:linear.x:fast"]}, "scale 'fast' is not a number"),
    ("twist_stamped", {"twist_mapping": ["yaw:angular.z"]}, r"names \['yaw'\]"),
])
def test_bad_settings_are_refused_naming_the_parameter(kind, settings, message):
    with pytest.raises(ValueError, match=message):
        adapter(kind, **settings)


def test_twist_entry_default_scale_is_one():
    assert TwistEntry.parse("gripper:angular.x") == TwistEntry("gripper", "angular.x", 1.0)
