"""The edge between ROS messages and numpy: topic names, QoS profiles, conversions.

Every node converts here and hands plain numpy to the library. Topic names are
relative so a robot's graph can live under its own namespace.

Commands are `sensor_msgs/JointState`: `name` holds the action names, `position`
the values, `header.stamp` the stamp of the observation they answer. On the
executed command (`robot/command`) `header.frame_id` names its source,
`policy` or `operator`, which is how the intervention flag travels atomically
with the command it describes. A robot driver that can report what it actually
applied publishes it on `robot/executed` (same layout; `frame_id` `hold` when no
command came in time), and the recorder prefers that record. The policy's proposals
(`policy/command`) carry the bundle that made them, `model@version`, in `frame_id`.

Events, status and labels are JSON in std_msgs/String, typed by `robot_runtime.messages`.
Camera frames are converted in `robot_runtime.nodes.images`.

QoS: our publishers are reliable (a reliable publisher reaches reliable and best-effort
subscriptions alike); our subscriptions to observations and commands are best effort, the one
reliability every publisher can reach (a reliable subscription refuses a best-effort publisher,
which most camera drivers are). The recorder's follow the publishers instead (nodes/adaptive_qos.py):
reliable while all of a topic's publishers are. The e-stop is reliable and volatile: see ESTOP_QOS.
"""
from __future__ import annotations

import faulthandler
import math
from collections.abc import Iterable

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from robot_runtime.bringup.launcher import STACK_DUMP_SIGNAL
from robot_runtime.files import UnsafeNameError, check_name

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
ESTOP_STATE_TOPIC = "estop/state"
OPERATOR_LABEL_TOPIC = "operator/label"


def camera_topic(camera: str) -> str:
    return f"camera/{camera}/image_raw"


def compressed_camera_topic(camera: str) -> str:
    """Where image_transport's `compressed` plugin publishes a camera's frames (sensor_msgs/CompressedImage)."""
    return f"{camera_topic(camera)}/compressed"


def camera_info_topic(camera: str) -> str:
    return f"camera/{camera}/camera_info"


# Publishers of observations, commands and records.
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Events and status: late joiners get the recent history.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The sensor-data profile, for subscriptions to what the policy acts on (cameras, joint_states, camera_info) and
# publishers of camera_info: best effort, volatile. 5 deep: a brief stall (a bundle loading beside the control
# thread) is ridden out instead of silently skipping ticks; the executor then catches up.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
# Consumers that only need the newest sample must not queue stale ones.
LATEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
# Subscriptions to commands and the deadman: best effort, so any publisher reaches the gate.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# The recorder keeps every sample: best effort like the others, 50 deep so a writer hiccup (2.5 s of 20 Hz
# frames, 0.5 s of 100 Hz joint states) loses nothing.
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
# The e-stop subscription: reliable, so a reliable publisher's stop is re-sent until it arrives, and volatile, so
# default-QoS (volatile) publishers match as well as transient-local ones. teleop_mux also listens best effort
# (COMMAND_QOS), so a best-effort e-stop source reaches it too, and it latches the stop on ESTOP_STATE_TOPIC
# (LATCHED_QOS), where a node that joins later learns that an e-stop is active.
ESTOP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


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


def bundle_label(frame_id: str) -> str:
    """The `model@version` a policy proposal names, or "" when it names none or something that is not one."""
    model, at, version = frame_id.partition("@")
    try:
        return check_name(model, "model") + at + check_name(version, "version") if at else ""
    except UnsafeNameError:
        return ""


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
    """Spin until SIGINT/SIGTERM (rclpy's own handlers wake the executor), then tear down cleanly.

    A signal shuts the context down from rclpy's handler while a callback may be half way through
    (publishing a camera frame, say); that callback then fails on the invalid context. Such an error
    after shutdown is the stop we asked for, logged and not an exit with a traceback; any error while
    the context is still up is a real one and propagates."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)   # a hung node shows where, in its log
    try:
        rclpy.spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        if rclpy.ok():
            raise
        node.get_logger().info(f"a callback was cut short by the shutdown: {type(err).__name__}: {err}")
    finally:
        close = getattr(node, "close", None)
        if close:
            close()
        node.destroy_node()
        rclpy.try_shutdown()
