"""sim_robot: a MetaWorld task in MuJoCo standing in for a robot and its cameras.

Publishes camera images and named state at the control rate, applies the latest
command that answers the previous observation (holding still when none came in
time), reports what it applied on `robot/executed`, and announces episode start
and end (with the outcome) on `episode/events`. With a `calibration_file`, each
frame's CameraInfo goes out on `camera/<name>/camera_info` (sensor-data QoS), as a
camera driver's does.
"""
from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_runtime.calibration.cameras import CalibrationError, load_calibration
from robot_runtime.episode import new_episode_id
from robot_runtime.messages import EpisodeEnd, EpisodeStart, MessageError
from robot_runtime.nodes import images, ros_io
from robot_runtime.nodes.parameters import INT_MAX, declare
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, MetaWorldRobot, SimConfig
from robot_runtime.teleop.arbiter import HOLD


class SimRobotNode(Node):
    def __init__(self):
        super().__init__("sim_robot")
        self.config = SimConfig(
            env_name=declare(self, "env_name", "push-v3", "MetaWorld task", read_only=True),
            cameras=tuple(declare(self, "cameras", ["corner", "gripperPOV"], "cameras to publish", read_only=True)),
            image_size=declare(self, "image_size", 96, "square image size in pixels", read_only=True,
                               low=8, high=2048),
            max_steps=declare(self, "max_steps", 150, "steps before an episode times out", low=1, high=1_000_000),
        )
        self.rate = declare(self, "control_rate_hz", 20.0, "control and observation rate", read_only=True,
                            low=0.1, high=1000.0)
        self.robot_id = declare(self, "robot_id", "sim-0", "robot id written into episodes")
        declare(self, "seed", 0, "layout seed of the next episode; each start increments it", low=0, high=INT_MAX)
        calibration_file = declare(self, "calibration_file", "", "camera calibration YAML whose intrinsics go out "
                                   "on camera/<name>/camera_info; empty = none", read_only=True)
        self.robot = MetaWorldRobot(self.config)
        self.image_pubs = {c: self.create_publisher(Image, ros_io.camera_topic(c), ros_io.STREAM_QOS)
                           for c in self.config.cameras}
        self.state_pub = self.create_publisher(JointState, ros_io.STATE_TOPIC, ros_io.STREAM_QOS)
        self.executed_pub = self.create_publisher(JointState, ros_io.ROBOT_EXECUTED_TOPIC, ros_io.STREAM_QOS)
        self.event_pub = self.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        self.camera_infos = self._camera_infos(calibration_file)
        self.info_pubs = {c: self.create_publisher(CameraInfo, ros_io.camera_info_topic(c), ros_io.SENSOR_QOS)
                          for c in self.camera_infos}
        self.create_subscription(JointState, ros_io.ROBOT_COMMAND_TOPIC, self._on_command, ros_io.COMMAND_QOS)
        self.create_service(Trigger, "~/start_episode", self._start_episode)
        self.create_service(Trigger, "~/stop_episode", self._stop_episode)
        self.episode_id = ""
        self._active = False
        self._observation = None  # latest observation, published at the next tick
        self._last_stamp = -1
        self._command: tuple[int, np.ndarray, str] | None = None
        self._hold = np.zeros(len(ACTION_NAMES), np.float32)
        self._held_steps = 0
        self.lockstep = declare(self, "lockstep", True,
                                "wait (up to command_timeout) for the answer to the last observation before "
                                "stepping; false models a real-time controller that holds instead")
        self.command_timeout = declare(self, "command_timeout", 0.5, "seconds a lockstep tick waits for a command",
                                       low=0.0, high=60.0)
        self._published_at = 0.0
        # Checked 5x per period: the step happens once the period is over and the command is in.
        self.create_timer(0.2 / self.rate, self._tick)
        self.get_logger().info(f"{self.config.env_name} at {self.rate} Hz, cameras {list(self.config.cameras)}")

    def _camera_infos(self, calibration_file: str) -> dict:
        """Each published camera's calibration, where the file has one of this size; the others go without."""
        if not calibration_file:
            return {}
        try:
            cameras = load_calibration(calibration_file)
        except CalibrationError as err:
            self.get_logger().error(f"publishing no camera_info: {err}")
            return {}
        size = self.config.image_size
        fitting = {c: cameras[c] for c in self.config.cameras
                   if c in cameras and (cameras[c].width, cameras[c].height) == (size, size)}
        for camera in sorted(set(self.config.cameras) - set(fitting)):
            self.get_logger().error(f"no camera_info for camera {camera}: {calibration_file} has no {size}x{size} "
                                    f"calibration of it")
        return fitting

    def _on_command(self, msg: JointState) -> None:
        try:
            action = ros_io.values_by_name(msg, ACTION_NAMES)
        except ValueError as err:
            self.get_logger().warning(f"ignoring malformed command: {err}", throttle_duration_sec=1.0)
            return
        if not np.all(np.isfinite(action)):
            self.get_logger().warning("ignoring command with NaN/inf", throttle_duration_sec=1.0)
            return
        self._command = (ros_io.stamp_ns(msg.header), action, msg.header.frame_id)

    def _start_episode(self, request, response):
        if self._active:
            response.success, response.message = False, f"episode {self.episode_id} is still running"
            return response
        seed = self.get_parameter("seed").value
        self.set_parameters([Parameter("seed", value=seed + 1)])
        self.config.max_steps = self.get_parameter("max_steps").value
        self._observation = self.robot.reset(seed)
        try:
            start = EpisodeStart(episode_id=new_episode_id(self.robot_id), task=self.robot.instruction,
                                 robot_id=self.robot_id, control_rate_hz=self.rate,
                                 stamp_ns=self.get_clock().now().nanoseconds, env_name=self.config.env_name, seed=seed)
        except MessageError as err:  # a parameter that cannot go on the wire (an unsafe robot_id, ...)
            response.success, response.message = False, f"cannot start an episode: {err}"
            return response
        self.episode_id = start.episode_id
        self._command, self._held_steps, self._active = None, 0, True
        self._hold[:] = 0.0
        self.event_pub.publish(ros_io.to_string_msg(start))
        response.success, response.message = True, self.episode_id
        return response

    def _stop_episode(self, request, response):
        response.success = self._active
        response.message = self.episode_id if self._active else "no episode running"
        if self._active:
            self._end("stopped")
        return response

    def _end(self, reason: str) -> None:
        self._active = False
        self.event_pub.publish(ros_io.to_string_msg(EpisodeEnd(
            episode_id=self.episode_id, reason=reason, steps=self.robot.steps, success=self.robot.success,
            held_steps=self._held_steps)))

    def _tick(self) -> None:
        if not self._active:
            return
        if self._observation is None:  # the previous observation is out: act on its command
            now = time.monotonic()
            if now < self._published_at + 1.0 / self.rate:
                return
            command = self._command
            answered = command is not None and command[0] == self._last_stamp
            if not answered and self.lockstep and now < self._published_at + 1.0 / self.rate + self.command_timeout:
                return  # simulated time waits for a slow machine
            if answered:
                _, action, source = command
                self._hold[3] = action[3]  # a hold keeps the gripper as last commanded
            else:
                action, source = self._hold.copy(), HOLD
                self._held_steps += 1
            self._observation = self.robot.step(action)
            self.executed_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, action, self._last_stamp, source))
        stamp = self.get_clock().now().nanoseconds
        for camera, image in self._observation.images.items():
            self.image_pubs[camera].publish(ros_io.image_msg(image, stamp, camera))
            if camera in self.camera_infos:
                self.info_pubs[camera].publish(images.camera_info_msg(self.camera_infos[camera], stamp))
        self.state_pub.publish(ros_io.joint_state_msg(STATE_NAMES, self._observation.state, stamp))
        self._observation, self._last_stamp = None, stamp
        self._published_at = time.monotonic()
        if self.robot.success:
            self._end("success")
        elif self.robot.timed_out:
            self._end("timeout")

    def close(self) -> None:
        self.robot.close()


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(SimRobotNode())


if __name__ == "__main__":
    main()
