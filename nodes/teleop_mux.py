"""teleop_mux: the last gate before the robot. Policy or operator, limits, and the e-stop.

While the operator holds the deadman (`teleop/engaged` true and fresh; a teleop
command counts as a deadman assertion too, since devices publish commands only
while it is held, and arrives atomically with the command), the operator's
commands go to the robot and the policy's are dropped; each executed command
names its source in `header.frame_id`. When the operator releases, the policy's
next command (planned from the current observation) goes through, so control
returns without replaying a stale plan.

Every command passes the safety filter (action limits, rate, workspace, NaN ->
hold). `estop` (std_msgs/Bool, true) latches a stop: from then on every command
is replaced by the hold command until `~/clear_estop` (std_srvs/Trigger) is
called. Being the last gate, the e-stop stops the operator's commands as well
as the policy's.
"""
from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from robot_runtime.nodes import diagnostics, ros_io
from robot_runtime.nodes.parameters import declare, declare_safety, safety_filter
from robot_runtime.teleop.arbiter import HOLD, OPERATOR, POLICY, TeleopArbiter


class TeleopMuxNode(Node):
    def __init__(self):
        super().__init__("teleop_mux")
        timeout = declare(self, "deadman_timeout", 0.25, "seconds an engage signal stays valid", read_only=True)
        self.action_names = declare(self, "action_names", [""], "command entries, in order", read_only=True)
        low = declare(self, "action_low", [0.0], "lower limit per action", read_only=True)
        high = declare(self, "action_high", [0.0], "upper limit per action", read_only=True)
        self.state_names = declare(self, "state_names", [""], "joint_states entries the workspace limits read",
                                   read_only=True)
        declare_safety(self)
        self.safety = safety_filter(self, self.action_names, low, high, self.state_names)
        self.arbiter = TeleopArbiter(timeout)
        self.forwarded = {POLICY: 0, OPERATOR: 0, HOLD: 0}
        self._state = None
        self.command_pub = self.create_publisher(JointState, ros_io.ROBOT_COMMAND_TOPIC, ros_io.STREAM_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(Bool, ros_io.TELEOP_ENGAGED_TOPIC, self._on_engaged, ros_io.STREAM_QOS)
        self.create_subscription(Bool, ros_io.ESTOP_TOPIC, self._on_estop, ros_io.LATCHED_QOS)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.LATEST_QOS)
        self.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC,
                                 lambda msg: self._on_command(POLICY, msg), ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.TELEOP_COMMAND_TOPIC,
                                 lambda msg: self._on_command(OPERATOR, msg), ros_io.STREAM_QOS)
        self.create_service(Trigger, "~/clear_estop", self._clear_estop)
        self.create_timer(1.0, self._publish_diagnostics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_engaged(self, msg: Bool) -> None:
        self.arbiter.set_engaged(bool(msg.data), self._now())

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.safety.estop.latched:
            self.safety.estop.trigger("e-stop topic asserted")
            self.get_logger().error("E-STOP latched: holding every command until ~/clear_estop is called")

    def _clear_estop(self, request, response):
        response.success = self.safety.estop.latched
        response.message = "e-stop cleared" if response.success else "no e-stop was latched"
        self.safety.estop.clear()
        self.safety.reset()  # resume from rest, not from a pre-stop command
        self.get_logger().warning(response.message)
        return response

    def _on_state(self, msg: JointState) -> None:
        try:
            self._state = ros_io.values_by_name(msg, self.state_names) if any(self.state_names) else None
        except ValueError:
            self._state = None

    def _on_command(self, sender: str, msg: JointState) -> None:
        if sender == OPERATOR:  # devices publish commands only while the deadman is held
            self.arbiter.set_engaged(True, self._now())
        if not self.arbiter.accepts(sender, self._now()):
            return
        try:
            proposal = ros_io.values_by_name(msg, self.action_names)
        except ValueError as err:
            proposal = None
            self.get_logger().error(f"{sender} command: {err}", throttle_duration_sec=1.0)
        command, event = self.safety.filter(proposal, self._state)
        source = HOLD if event is not None and event.held else sender
        if event is not None:
            self.get_logger().warning(f"safety ({sender}): {event.reason}", throttle_duration_sec=1.0)
        self.command_pub.publish(ros_io.joint_state_msg(self.action_names, command, ros_io.stamp_ns(msg.header),
                                                        frame_id=source))
        self.forwarded[source] += 1

    def _publish_diagnostics(self) -> None:
        latched = self.safety.estop.latched
        self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
            "teleop_mux: command gate", self.get_name(), diagnostics.ERROR if latched else diagnostics.OK,
            f"E-STOP: {self.safety.estop.reason}" if latched else "forwarding",
            {"estop": latched, "source": self.arbiter.source(self._now()),
             **{f"forwarded_{k}": v for k, v in self.forwarded.items()}})]))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(TeleopMuxNode())


if __name__ == "__main__":
    main()
