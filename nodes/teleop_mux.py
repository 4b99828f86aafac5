"""teleop_mux: forwards the policy's commands unless the operator holds the deadman.

While the operator holds the deadman (`teleop/engaged` true and fresh; a teleop
command counts as a deadman assertion too, since devices publish commands only
while it is held, and arrives atomically with the command), the operator's
commands go to the robot and the policy's are dropped; each executed command names its source in
`header.frame_id`, which the recorder stores as the intervention flag. When the
operator releases, the policy's next command (planned from the current
observation) goes through, so control returns without replaying a stale plan.
"""
from __future__ import annotations

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from robot_runtime.nodes import ros_io
from robot_runtime.nodes.parameters import declare
from robot_runtime.teleop import OPERATOR, POLICY, TeleopArbiter


class TeleopMuxNode(Node):
    def __init__(self):
        super().__init__("teleop_mux")
        timeout = declare(self, "deadman_timeout", 0.25, "seconds an engage signal stays valid", read_only=True)
        self.arbiter = TeleopArbiter(timeout)
        self.forwarded = {POLICY: 0, OPERATOR: 0}
        self.command_pub = self.create_publisher(JointState, ros_io.ROBOT_COMMAND_TOPIC, ros_io.STREAM_QOS)
        self.create_subscription(Bool, ros_io.TELEOP_ENGAGED_TOPIC, self._on_engaged, ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC,
                                 lambda msg: self._on_command(POLICY, msg), ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.TELEOP_COMMAND_TOPIC,
                                 lambda msg: self._on_command(OPERATOR, msg), ros_io.STREAM_QOS)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_engaged(self, msg: Bool) -> None:
        self.arbiter.set_engaged(bool(msg.data), self._now())

    def _on_command(self, sender: str, msg: JointState) -> None:
        if sender == OPERATOR:  # devices publish commands only while the deadman is held
            self.arbiter.set_engaged(True, self._now())
        if not self.arbiter.accepts(sender, self._now()):
            return
        if len(msg.name) != len(msg.position) or not np.all(np.isfinite(msg.position)):
            self.get_logger().error(f"dropping malformed {sender} command", throttle_duration_sec=1.0)
            return
        msg.header.frame_id = sender
        self.command_pub.publish(msg)
        self.forwarded[sender] += 1


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(TeleopMuxNode())


if __name__ == "__main__":
    main()
