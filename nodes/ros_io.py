"""The edge between ROS messages and numpy: topic names, QoS profiles, conversions.

Every node converts here and hands plain numpy to the library. Topic names are
relative so a robot's graph can live under its own namespace.

Commands are `sensor_msgs/JointState`: `name` holds the action names, `position`
the values, `header.stamp` the stamp of the observation they answer. On the
executed command (`robot/command`) `header.frame_id` names its source,
`policy` or `operator`, which is how the intervention flag travels atomically
with the command it describes. A robot driver that can report what it actually
applied publishes it on `robot/executed` (same layout; `frame_id` `hold` when no
command came in time), and the recorder prefers that record.

Events, status and labels are JSON in std_msgs/String, typed by `robot_runtime.messages`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

STATE_TOPIC = "joint_states"
EPISODE_EVENTS_TOPIC = "episode/events"
POLICY_COMMAND_TOPIC = "policy/command"
POLICY_STATUS_TOPIC = "policy/status"
TELEOP_COMMAND_TOPIC = "teleop/command"
TELEOP_ENGAGED_TOPIC = "teleop/engaged"
ROBOT_COMMAND_TOPIC = "robot/command"
ROBOT_EXECUTED_TOPIC = "robot/executed"
RECORDER_STATUS_TOPIC = "recorder/status"
ESTOP_TOPIC = "estop"
OPERATOR_LABEL_TOPIC = "operator/label"


def camera_topic(camera: str) -> str:
    return f"camera/{camera}/image_raw"


# Observations and commands: reliable so the recorder sees every step on a healthy link.
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Consumers that only need the newest sample must not queue stale ones.
LATEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
# The policy answers every tick: a short queue rides out a brief stall (a bundle loading beside
# the control thread) instead of silently skipping ticks; the executor then catches up.
CONTROL_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
# Events and status: late joiners get the recent history.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def set_stamp(header, ns: int) -> None:
    header.stamp.sec, header.stamp.nanosec = divmod(int(ns), 1_000_000_000)


def image_msg(image: np.ndarray, ns: int, frame_id: str) -> Image:
    msg = Image()
    set_stamp(msg.header, ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = image.shape[:2]
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """uint8 [H, W, 3]; raises ValueError for encodings or sizes we do not accept."""
    if msg.encoding != "rgb8":
        raise ValueError(f"image encoding '{msg.encoding}' is not rgb8")
    if msg.step != msg.width * 3 or len(msg.data) != msg.height * msg.step:
        raise ValueError(f"image {msg.width}x{msg.height} step {msg.step} holds {len(msg.data)} bytes")
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3)


def joint_state_msg(names: Iterable[str], values: np.ndarray, ns: int, frame_id: str = "") -> JointState:
    msg = JointState()
    set_stamp(msg.header, ns)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in values]
    # Velocity and effort are not measured here: NaN says so. Left empty, the CDR that rclpy writes for a
    # JointState ending in an empty sequence is refused by other CDR readers (rosbags: "size mismatch"),
    # so a bag of our topics could not be read by tools outside ROS.
    msg.velocity = msg.effort = [math.nan] * len(msg.position)
    return msg


def values_by_name(msg: JointState, names: Iterable[str]) -> np.ndarray:
    """Pick `names` out of a JointState by name; raises ValueError naming what is missing."""
    index = {n: i for i, n in enumerate(msg.name)}
    names = list(names)
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"JointState lacks {missing}")
    if len(msg.position) != len(msg.name):
        raise ValueError(f"JointState has {len(msg.name)} names but {len(msg.position)} positions")
    return np.array([msg.position[index[n]] for n in names], dtype=np.float32)


def to_string_msg(message) -> String:
    """A `robot_runtime.messages` message as the std_msgs/String its topic carries; read one back with the
    topic's parse function on `msg.data` (e.g. `messages.parse_episode_event`)."""
    return String(data=message.to_json())


def spin_node(node, executor=None) -> None:
    """Spin until SIGINT/SIGTERM (rclpy's own handlers wake the executor), then tear down cleanly."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        rclpy.spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "close", None)
        if close:
            close()
        node.destroy_node()
        rclpy.try_shutdown()
