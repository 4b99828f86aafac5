"""Commands as the message a robot's controller listens to: pure conversions from named actions.

teleop_mux always publishes what it let through as sensor_msgs/JointState on `robot/command`, with the
source in `frame_id`: that is the record the recorder reads the intervention flag from. Its
`command_adapter` parameter picks what it also sends to the robot on `command_topic`:

- `joint_state`: sensor_msgs/JointState of the output names (a driver that reads named commands);
- `float64_multi_array`: std_msgs/Float64MultiArray for ros2_control's forward_command_controller, the
  values in the order of `output_names`, which must be the controller's `joints`;
- `joint_trajectory`: trajectory_msgs/JointTrajectory for joint_trajectory_controller: a chunk of T
  actions becomes T points, point i reached at (i + 1) control periods; the header stamp is zero,
  which the controller reads as "start on receipt" (a past stamp would make it skip points);
- `twist_stamped`: geometry_msgs/TwistStamped for Cartesian controllers and servoing: each entry of
  `twist_mapping`, `action:field[:scale]` (e.g. `ee_dx:linear.x:20.0` turns a per-tick delta at 20 Hz into
  m/s), sets one field; fields no action maps to are zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_runtime.nodes import ros_io

ADAPTERS = ("joint_state", "float64_multi_array", "joint_trajectory", "twist_stamped")
TWIST_FIELDS = tuple(f"{part}.{axis}" for part in ("linear", "angular") for axis in "xyz")


@dataclass(frozen=True)
class TwistEntry:
    """One action driving one TwistStamped field, times `scale`."""

    action: str
    field: str
    scale: float = 1.0

    @classmethod
    def parse(cls, entry: str) -> TwistEntry:
        parts = entry.split(":")
        if len(parts) not in (2, 3) or parts[1] not in TWIST_FIELDS:
            raise ValueError(f"twist_mapping entry '{entry}' is not action:field[:scale] with field one of "
                             f"{' | '.join(TWIST_FIELDS)}")
        try:
            scale = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise ValueError(f"twist_mapping entry '{entry}': scale '{parts[2]}' is not a number") from None
        return cls(parts[0], parts[1], scale)


def float64_multi_array(values: np.ndarray) -> Float64MultiArray:
    return Float64MultiArray(data=[float(v) for v in values])


def _point(action: np.ndarray, seconds: float) -> JointTrajectoryPoint:
    point = JointTrajectoryPoint(positions=[float(v) for v in action])
    point.time_from_start.sec, point.time_from_start.nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return point


def joint_trajectory(names: list[str], chunk: np.ndarray, period_s: float) -> JointTrajectory:
    """`chunk` [T, len(names)] (or one action) as T points, point i at (i + 1) * period_s."""
    chunk = np.atleast_2d(np.asarray(chunk, np.float64))
    return JointTrajectory(joint_names=list(names),
                           points=[_point(action, (i + 1) * period_s) for i, action in enumerate(chunk)])


def twist_stamped(mapping: list[TwistEntry], names: list[str], values: np.ndarray, stamp_ns: int,
                  frame_id: str) -> TwistStamped:
    msg = TwistStamped()
    ros_io.set_stamp(msg.header, stamp_ns)
    msg.header.frame_id = frame_id
    index = {n: i for i, n in enumerate(names)}
    for entry in mapping:
        part, axis = entry.field.split(".")
        setattr(getattr(msg.twist, part), axis, getattr(getattr(msg.twist, part), axis)
                + float(values[index[entry.action]]) * entry.scale)
    return msg


class CommandAdapter:
    """The chosen adapter with its settings, checked once; `message(values, stamp)` per command."""

    TYPES = {"joint_state": JointState, "float64_multi_array": Float64MultiArray,
             "joint_trajectory": JointTrajectory, "twist_stamped": TwistStamped}

    def __init__(self, kind: str, action_names: list[str], output_names: list[str], period_s: float,
                 twist_mapping: list[str], frame_id: str = ""):
        if kind not in ADAPTERS:
            raise ValueError(f"command_adapter '{kind}' is not one of {' | '.join(ADAPTERS)}")
        self.kind, self.msg_type, self.period_s, self.frame_id = kind, self.TYPES[kind], period_s, frame_id
        self.output_names = list(output_names) or list(action_names)
        unknown = [n for n in self.output_names if n not in action_names]
        if unknown:
            raise ValueError(f"output_names {unknown} are not among the action names {list(action_names)}")
        self._index = [list(action_names).index(n) for n in self.output_names]
        self.action_names = list(action_names)
        self.twist = [TwistEntry.parse(e) for e in twist_mapping]
        if kind == "twist_stamped":
            if not self.twist:
                raise ValueError("command_adapter twist_stamped needs twist_mapping entries (action:field[:scale])")
            unknown = [e.action for e in self.twist if e.action not in action_names]
            if unknown:
                raise ValueError(f"twist_mapping names {unknown}, which are not among the action names "
                                 f"{list(action_names)}")

    def message(self, values: np.ndarray, stamp_ns: int):
        """The controller's message for one command (all actions, in action-name order)."""
        out = np.asarray(values)[self._index]
        if self.kind == "joint_state":
            return ros_io.joint_state_msg(self.output_names, out, stamp_ns, self.frame_id)
        if self.kind == "float64_multi_array":
            return float64_multi_array(out)
        if self.kind == "joint_trajectory":
            return joint_trajectory(self.output_names, out, self.period_s)
        return twist_stamped(self.twist, self.action_names, values, stamp_ns, self.frame_id)
