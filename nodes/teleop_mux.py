"""teleop_mux: the last gate before the robot. Policy or operator, limits, the e-stop, the controller's message.

While the operator holds the deadman (`teleop/engaged` true and fresh; a teleop
command counts as a deadman assertion too, since devices publish commands only
while it is held, and arrives atomically with the command), the operator's
commands go to the robot and the policy's are dropped; each executed command
names its source in `header.frame_id`. When the operator releases, the policy's
next command (planned from the current observation) goes through, so control
returns without replaying a stale plan.

Every command passes the safety filter (action limits, rate, workspace, NaN ->
hold) and goes out as sensor_msgs/JointState on `robot/command` (the record the
recorder reads who commanded each step from) and, with `command_adapter`, as the
message the robot's controller takes on `command_topic` (robot_runtime.nodes.command_adapters).

E-stop: `estop` (std_msgs/Bool, true) latches a stop, in any lifecycle state:
from then on every command is replaced by the hold command until
`~/clear_estop` (std_srvs/Trigger) is called. Being the last gate, the e-stop
stops the operator's commands as well as the policy's. Any publisher reaches it
(reliable and best-effort subscriptions, both volatile), and the latch is
published on `estop/state` (transient local), so a node that starts later learns
that an e-stop is active.

Lifecycle: a managed node. Configure builds the safety filter and the
controller output (refusing bad settings with the parameter's name); only while
active does it command the robot. Deactivating sends one hold command and then
nothing; unconfigured or inactive it publishes no command at all. With
`autostart` (the default) it walks itself to active.
"""
from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from robot_runtime.nodes import diagnostics, ros_io
from robot_runtime.nodes.command_adapters import ADAPTERS, CommandAdapter
from robot_runtime.nodes.parameters import apply_realtime, declare, declare_safety, safety_filter
from robot_runtime.runtime.safety import EStop, SafetyFilter
from robot_runtime.teleop.arbiter import HOLD, OPERATOR, POLICY, TeleopArbiter


class TeleopMuxNode(LifecycleNode):
    def __init__(self):
        super().__init__("teleop_mux")
        apply_realtime(self)  # the safety gate forwards every command: it must not wait behind busy processes
        timeout = declare(self, "deadman_timeout", 0.25, "seconds an engage signal stays valid", read_only=True,
                          low=0.01, high=10.0)
        self.action_names = declare(self, "action_names", [""], "command entries, in order", read_only=True)
        self.action_low = declare(self, "action_low", [0.0], "lower limit per action", read_only=True)
        self.action_high = declare(self, "action_high", [0.0], "upper limit per action", read_only=True)
        self.state_names = declare(self, "state_names", [""], "joint_states entries the workspace limits read",
                                   read_only=True)
        declare_safety(self)
        declare(self, "command_adapter", "joint_state", "the message the robot's controller takes on command_topic",
                read_only=True, choices=ADAPTERS)
        declare(self, "command_topic", ros_io.ROBOT_COMMAND_TOPIC,
                "the controller's command topic (robot/command always carries the JointState record)", read_only=True)
        declare(self, "output_names", [""], "actions sent to the controller, in its joint order; [''] = all",
                read_only=True)
        declare(self, "twist_mapping", [""], "twist_stamped: action:field[:scale] per action, e.g. ee_dx:linear.x:20",
                read_only=True)
        declare(self, "command_frame_id", "", "header.frame_id of joint_state / twist_stamped controller commands",
                read_only=True)
        declare(self, "control_rate_hz", 20.0, "control rate: a joint_trajectory point is due one period ahead",
                read_only=True, low=0.1, high=1000.0)
        autostart = declare(self, "autostart", True, "configure and activate at start-up; false: wait for a "
                            "lifecycle manager (no command goes out until active)", read_only=True)
        self.arbiter = TeleopArbiter(timeout)
        self.estop = EStop()  # latched in every lifecycle state; each configured safety filter shares it
        self.safety: SafetyFilter | None = None
        self.adapter: CommandAdapter | None = None
        self.controller_pub = None
        self.active = False
        self.forwarded = {POLICY: 0, OPERATOR: 0, HOLD: 0}
        self._state = None
        self.record_pub = self.create_lifecycle_publisher(JointState, ros_io.ROBOT_COMMAND_TOPIC, ros_io.STREAM_QOS)
        self.estop_pub = self.create_publisher(Bool, ros_io.ESTOP_STATE_TOPIC, ros_io.LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(Bool, ros_io.TELEOP_ENGAGED_TOPIC, self._on_engaged, ros_io.COMMAND_QOS)
        for qos in (ros_io.ESTOP_QOS, ros_io.COMMAND_QOS):  # reliable publishers and best-effort ones
            self.create_subscription(Bool, ros_io.ESTOP_TOPIC, self._on_estop, qos)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.LATEST_QOS)
        self.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC,
                                 lambda msg: self._on_command(POLICY, msg), ros_io.COMMAND_QOS)
        self.create_subscription(JointState, ros_io.TELEOP_COMMAND_TOPIC,
                                 lambda msg: self._on_command(OPERATOR, msg), ros_io.COMMAND_QOS)
        self.create_service(Trigger, "~/clear_estop", self._clear_estop)
        self.create_timer(1.0, self._publish_diagnostics)
        self.estop_pub.publish(Bool(data=False))
        if autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        p = {name: self.get_parameter(name).value for name in
             ("command_adapter", "command_topic", "output_names", "twist_mapping", "command_frame_id",
              "control_rate_hz")}
        try:
            safety = safety_filter(self, self.action_names, self.action_low, self.action_high, self.state_names)
            adapter = CommandAdapter(p["command_adapter"], self.action_names, [n for n in p["output_names"] if n],
                                     1.0 / p["control_rate_hz"], [e for e in p["twist_mapping"] if e],
                                     p["command_frame_id"])
            if p["command_topic"] == ros_io.ROBOT_COMMAND_TOPIC and adapter.kind != "joint_state":
                raise ValueError(f"command_topic {ros_io.ROBOT_COMMAND_TOPIC} carries the JointState record; set "
                                 f"command_topic to the controller's topic (e.g. forward_position_controller/commands)")
        except ValueError as err:
            self.get_logger().error(f"not configured: {err}")
            return TransitionCallbackReturn.FAILURE
        safety.estop = self.estop
        self.safety, self.adapter = safety, adapter
        if p["command_topic"] != ros_io.ROBOT_COMMAND_TOPIC:
            self.controller_pub = self.create_lifecycle_publisher(adapter.msg_type, p["command_topic"],
                                                                  ros_io.STREAM_QOS)
        self.get_logger().info(f"commands go out as {adapter.kind} on {p['command_topic']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.safety.reset()  # resume from rest, not from a command before the pause
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        command, _ = self.safety.hold("teleop_mux deactivated")
        self._publish(command, self.get_clock().now().nanoseconds, HOLD)  # the robot holds, then hears nothing
        self.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        if self.controller_pub is not None:
            self.destroy_lifecycle_publisher(self.controller_pub)
        self.controller_pub = self.safety = self.adapter = None
        return TransitionCallbackReturn.SUCCESS

    # -- commands ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_engaged(self, msg: Bool) -> None:
        self.arbiter.set_engaged(bool(msg.data), self._now())

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estop.latched:
            self.estop.trigger("e-stop topic asserted")
            self.estop_pub.publish(Bool(data=True))
            self.get_logger().error("E-STOP latched: holding every command until ~/clear_estop is called")

    def _clear_estop(self, request, response):
        response.success = self.estop.latched
        response.message = "e-stop cleared" if response.success else "no e-stop was latched"
        self.estop.clear()
        if self.safety is not None:
            self.safety.reset()  # resume from rest, not from a pre-stop command
        self.estop_pub.publish(Bool(data=False))
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
        if not self.active or not self.arbiter.accepts(sender, self._now()):
            return
        try:
            proposal = ros_io.values_by_name(msg, self.action_names)
        except ValueError as err:
            proposal = None
            self.get_logger().error(f"{sender} command: {err}", throttle_duration_sec=1.0)
        stamp = ros_io.stamp_ns(msg.header)
        command, event = self.safety.filter(proposal, self._state, step=stamp)
        source = HOLD if event is not None and event.held else sender
        if event is not None:
            self.get_logger().warning(f"safety ({sender}): {event.reason}", throttle_duration_sec=1.0)
        self._publish(command, stamp, source)

    def _publish(self, command, stamp: int, source: str) -> None:
        self.record_pub.publish(ros_io.joint_state_msg(self.action_names, command, stamp, frame_id=source))
        if self.controller_pub is not None:
            self.controller_pub.publish(self.adapter.message(command, stamp))
        self.forwarded[source] += 1

    def _publish_diagnostics(self) -> None:
        latched = self.estop.latched
        level = diagnostics.ERROR if latched else diagnostics.OK if self.active else diagnostics.WARN
        message = (f"E-STOP: {self.estop.reason}" if latched else "forwarding" if self.active
                   else "not active: commanding nothing")
        self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
            "teleop_mux: command gate", self.get_name(), level, message,
            {"estop": latched, "active": self.active, "source": self.arbiter.source(self._now()),
             "adapter": self.adapter.kind if self.adapter else "",
             **{f"forwarded_{k}": v for k, v in self.forwarded.items()}})]))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(TeleopMuxNode())


if __name__ == "__main__":
    main()
