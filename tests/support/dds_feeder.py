"""Plays the robot over DDS for node tests: episode start, camera frames and states; collects commands.

Frames go out in any encoding a driver uses (`FrameFormat`: raw rgb8/bgr8/mono8, compressed jpeg/png), and
every publisher with the QoS profile under test (default: reliable, as our nodes publish).
"""
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import String

from robot_runtime.messages import EpisodeEnd, EpisodeStart
from robot_runtime.nodes import images, ros_io
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, instruction_for


@dataclass(frozen=True)
class FrameFormat:
    """How a camera driver sends an RGB frame: the message type, its topic, and the message for a frame."""

    msg_type: type
    topic: Callable[[str], str]
    make: Callable[[np.ndarray, int, str], object]


def raw(encoding: str = "rgb8", pad: int = 0) -> FrameFormat:
    """sensor_msgs/Image in `encoding`, each row padded by `pad` bytes as some drivers do."""
    def make(rgb, stamp, camera):
        pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, :1]}.get(encoding, rgb)  # else: mislabelled
        rows = np.ascontiguousarray(pixels).reshape(rgb.shape[0], -1)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rows.shape[1] + pad)
        msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
        ros_io.set_stamp(msg.header, stamp)
        msg.header.frame_id = camera
        return msg
    return FrameFormat(Image, ros_io.camera_topic, make)


def compressed(fmt: str) -> FrameFormat:
    """sensor_msgs/CompressedImage as image_transport's compressed plugin sends it (BGR data, jpeg or png)."""
    def make(rgb, stamp, camera):
        ok, data = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[:, :, ::-1]))
        msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8", data=data.tobytes())
        ros_io.set_stamp(msg.header, stamp)
        msg.header.frame_id = camera
        return msg
    return FrameFormat(CompressedImage, ros_io.compressed_camera_topic, make)


class Feeder:
    def __init__(self, client, cameras=("corner", "gripperPOV"), qos=ros_io.STREAM_QOS, frames: FrameFormat = raw(),
                 camera_info: dict | None = None):
        """`camera_info`: camera -> CameraCalibration whose CameraInfo goes out with each of its frames."""
        node = client.node
        self.node = node
        self.frames = frames
        self.images = {c: node.create_publisher(frames.msg_type, frames.topic(c), qos) for c in cameras}
        self.camera_info = {c: (node.create_publisher(CameraInfo, ros_io.camera_info_topic(c), qos), calibration)
                            for c, calibration in (camera_info or {}).items()}
        self.state_pub = node.create_publisher(JointState, ros_io.STATE_TOPIC, qos)
        self.events = node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        self.lock = threading.Lock()
        self.policy_commands: list[JointState] = []
        self.robot_commands: list[JointState] = []
        self.sent_stamps: list[int] = []
        node.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC, self._keep(self.policy_commands),
                                 ros_io.STREAM_QOS)
        node.create_subscription(JointState, ros_io.ROBOT_COMMAND_TOPIC, self._keep(self.robot_commands),
                                 ros_io.STREAM_QOS)
        self.executed_pub = node.create_publisher(JointState, ros_io.ROBOT_EXECUTED_TOPIC, qos)
        self.state = np.zeros(len(STATE_NAMES), np.float32)

    def _keep(self, into):
        def callback(msg):
            with self.lock:
                into.append(msg)
        return callback

    def start(self, env_name: str = "push-v3", rate: float = 20.0) -> str:
        """Announce an episode (as a robot does); returns its id."""
        episode_id = f"e{time.monotonic_ns()}"
        self.events.publish(ros_io.to_string_msg(EpisodeStart(
            episode_id=episode_id, task=instruction_for(env_name), robot_id="feeder",
            control_rate_hz=rate, stamp_ns=self.node.get_clock().now().nanoseconds, env_name=env_name)))
        time.sleep(0.2)
        return episode_id

    def end(self, episode_id: str, steps: int) -> None:
        self.events.publish(ros_io.to_string_msg(EpisodeEnd(episode_id=episode_id, reason="done", steps=steps)))

    def play(self, seconds: float, rate: float = 20.0, cameras=None, executed: bool = False,
             size: int = 96, noise: bool = False, frame: np.ndarray | None = None) -> list[int]:
        """Publish frames (of `cameras`, default all) and states at `rate`, and with `executed` what
        the robot applied for the previous tick (as a driver reports it); returns the stamps sent.
        `noise` frames do not compress, for tests that need to fill a disk; `frame` is an RGB frame to send."""
        rng = np.random.default_rng(0)
        frame = np.full((size, size, 3), 128, np.uint8) if frame is None else frame
        stamps = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamp = self.node.get_clock().now().nanoseconds
            if noise:
                frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for cam, pub in self.images.items():
                if cameras is None or cam in cameras:
                    pub.publish(self.frames.make(frame, stamp, cam))
                    if cam in self.camera_info:
                        info_pub, calibration = self.camera_info[cam]
                        info_pub.publish(images.camera_info_msg(calibration, stamp))
            self.state_pub.publish(ros_io.joint_state_msg(STATE_NAMES, self.state, stamp))
            if executed and stamps:
                self.executed_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, np.zeros(len(ACTION_NAMES)),
                                                                 stamps[-1], "operator"))
            stamps.append(stamp)
            time.sleep(1.0 / rate)
        time.sleep(0.3)  # let the last answers arrive
        self.sent_stamps += stamps
        return stamps

    def commands_for(self, stamps: list[int], which: str = "policy") -> dict[int, JointState]:
        with self.lock:
            commands = self.policy_commands if which == "policy" else self.robot_commands
            by_stamp = {ros_io.stamp_ns(c.header): c for c in commands}
        return {s: by_stamp[s] for s in stamps if s in by_stamp}
