"""teleop_device: a gamepad, 6-DoF mouse or leader arm as the operator's takeover device.

Reads the device (`sensor_msgs/Joy`, `geometry_msgs/Twist` or a leader arm's
`sensor_msgs/JointState`) through the mapping in robot_runtime.teleop.devices,
and at every robot observation publishes the deadman on `teleop/engaged` and,
while it is held, the mapped command on `teleop/command`, stamped with the
observation it answers. teleop_mux does the rest (arbitration, limits, e-stop).

Parameters: `device` (joy | twist | joint_state), `device_topic`,
`buttons_topic` (a Joy topic for the deadman when the device itself has no
buttons, e.g. spacenav/joy beside spacenav/twist), `deadman` (buttons[i] or
always), `deadband`, `action_names`, and `mapping.<action>` per action, e.g.
`mapping.ee_dx: "axes[1] * 0.8"`.
"""
from __future__ import annotations

import rclpy
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool

from robot_runtime.nodes import ros_io
from robot_runtime.nodes.parameters import declare
from robot_runtime.teleop.devices import MappingError, TeleopDevice


class TeleopDeviceNode(Node):
    def __init__(self):
        super().__init__("teleop_device")
        device = declare(self, "device", "joy", "the device's message type", read_only=True,
                         choices=("joy", "twist", "joint_state"))
        topic = declare(self, "device_topic", "joy", "the device's topic", read_only=True)
        buttons_topic = declare(self, "buttons_topic", "", "Joy topic with the deadman button, if separate",
                                read_only=True)
        deadman = declare(self, "deadman", "buttons[4]", "buttons[i] or always", read_only=True)
        deadband = declare(self, "deadband", 0.05, "stick/mouse inputs below this read as zero", read_only=True,
                           low=0.0, high=1.0)
        action_names = declare(self, "action_names", [""], "actions to command, in order", read_only=True)
        mapping = {a: declare(self, f"mapping.{a}", "", f"device inputs that make '{a}'", read_only=True)
                   for a in action_names if a}
        self.device = TeleopDevice(device, action_names, mapping, deadman, deadband)
        self.engaged_pub = self.create_publisher(Bool, ros_io.TELEOP_ENGAGED_TOPIC, ros_io.STREAM_QOS)
        self.command_pub = self.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, ros_io.STREAM_QOS)
        kinds = {"joy": (Joy, self._on_joy), "twist": (Twist, self._on_twist),
                 "joint_state": (JointState, self._on_leader)}
        msg_type, callback = kinds[device]
        self.create_subscription(msg_type, topic, callback, ros_io.LATEST_QOS)
        if buttons_topic:
            self.create_subscription(Joy, buttons_topic, self._on_joy, ros_io.LATEST_QOS)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_observation, ros_io.LATEST_QOS)
        self.get_logger().info(f"{device} on {topic}, deadman {deadman}, mapping {mapping}")

    def _on_joy(self, msg: Joy) -> None:
        self.device.update_joy(msg.axes, msg.buttons)

    def _on_twist(self, msg: Twist) -> None:
        self.device.update_twist((msg.linear.x, msg.linear.y, msg.linear.z),
                                 (msg.angular.x, msg.angular.y, msg.angular.z))

    def _on_leader(self, msg: JointState) -> None:
        self.device.update_joint_state(msg.name, msg.position)

    def _on_observation(self, msg: JointState) -> None:
        engaged = self.device.engaged
        if engaged:
            try:
                action = self.device.actions()
            except MappingError as err:
                self.get_logger().error(f"not commanding: {err}", throttle_duration_sec=1.0)
                engaged = False
        self.engaged_pub.publish(Bool(data=engaged))
        if engaged:
            self.command_pub.publish(ros_io.joint_state_msg(self.device.action_names, action,
                                                            ros_io.stamp_ns(msg.header)))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(TeleopDeviceNode())


if __name__ == "__main__":
    main()
