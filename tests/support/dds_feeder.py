"""Plays the robot over DDS for node tests: episode start, camera frames and states; collects commands."""
import threading
import time

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from robot_runtime.messages import EpisodeStart
from robot_runtime.nodes import ros_io
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, instruction_for


class Feeder:
    def __init__(self, client, cameras=("corner", "gripperPOV")):
        node = client.node
        self.node = node
        self.images = {c: node.create_publisher(Image, ros_io.camera_topic(c), ros_io.STREAM_QOS) for c in cameras}
        self.state_pub = node.create_publisher(JointState, ros_io.STATE_TOPIC, ros_io.STREAM_QOS)
        self.events = node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        self.lock = threading.Lock()
        self.policy_commands: list[JointState] = []
        self.robot_commands: list[JointState] = []
        self.sent_stamps: list[int] = []
        node.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC, self._keep(self.policy_commands),
                                 ros_io.STREAM_QOS)
        node.create_subscription(JointState, ros_io.ROBOT_COMMAND_TOPIC, self._keep(self.robot_commands),
                                 ros_io.STREAM_QOS)
        self.executed_pub = node.create_publisher(JointState, ros_io.ROBOT_EXECUTED_TOPIC, ros_io.STREAM_QOS)
        self.state = np.zeros(len(STATE_NAMES), np.float32)

    def _keep(self, into):
        def callback(msg):
            with self.lock:
                into.append(msg)
        return callback

    def start(self, env_name: str = "push-v3", rate: float = 20.0) -> None:
        self.events.publish(ros_io.to_string_msg(EpisodeStart(
            episode_id=f"e{time.monotonic_ns()}", task=instruction_for(env_name), robot_id="feeder",
            control_rate_hz=rate, stamp_ns=self.node.get_clock().now().nanoseconds, env_name=env_name)))
        time.sleep(0.2)

    def play(self, seconds: float, rate: float = 20.0, cameras=None, executed: bool = False,
             size: int = 96, noise: bool = False) -> list[int]:
        """Publish frames (of `cameras`, default all) and states at `rate`, and with `executed` what
        the robot applied for the previous tick (as a driver reports it); returns the stamps sent.
        `noise` frames do not compress, for tests that need to fill a disk."""
        rng = np.random.default_rng(0)
        frame = np.full((size, size, 3), 128, np.uint8)
        stamps = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamp = self.node.get_clock().now().nanoseconds
            if noise:
                frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for cam, pub in self.images.items():
                if cameras is None or cam in cameras:
                    pub.publish(ros_io.image_msg(frame, stamp, cam))
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
