"""scripted_operator: a simulated person with a teleop device (MetaWorld's expert).

Publishes the deadman (`teleop/engaged`) every step and, while engaged, the
expert's command for the observation. The `mode` parameter switches between
`demonstrate` (drive every step), `correct` (take over when the robot stalls)
and `off`.
"""
from __future__ import annotations

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String

from robot_runtime.messages import EpisodeStart, MessageError, parse_episode_event
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.parameters import INT_MAX, declare
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES
from robot_runtime.sim.operator import MODES, OperatorConfig, ScriptedOperator


class ScriptedOperatorNode(Node):
    def __init__(self):
        super().__init__("scripted_operator")
        env_name = declare(self, "env_name", "push-v3", "task whose expert to load at start-up")
        d = OperatorConfig()  # one set of defaults: the library's
        self.config = OperatorConfig(
            mode=declare(self, "mode", d.mode, "when the operator drives", choices=MODES),
            stall_steps=declare(self, "stall_steps", d.stall_steps, "steps without progress before taking over",
                                low=1, high=100_000),
            min_progress=declare(self, "min_progress", d.min_progress, "metres of progress that reset the stall count",
                                 low=0.0, high=10.0),
            min_motion=declare(self, "min_motion", d.min_motion,
                               "a hand that moved this far in the window is not stuck", low=0.0, high=10.0),
            max_regress=declare(self, "max_regress", d.max_regress, "metres worse than the best seen: off track",
                                low=0.0, high=10.0),
            correction_steps=declare(self, "correction_steps", d.correction_steps, "steps driven per takeover",
                                     low=1, high=100_000),
            action_noise=declare(self, "action_noise", d.action_noise, "std of noise on the expert's actions",
                                 low=0.0, high=10.0),
            seed=declare(self, "seed", d.seed, "noise seed", read_only=True, low=0, high=INT_MAX),
        )
        self.operator = ScriptedOperator(env_name, self.config)  # ready before the first episode
        self.engaged_pub = self.create_publisher(Bool, ros_io.TELEOP_ENGAGED_TOPIC, ros_io.STREAM_QOS)
        self.command_pub = self.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.SENSOR_QOS)
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        self.add_post_set_parameters_callback(self._apply_parameters)

    def _apply_parameters(self, params) -> None:
        for p in params:  # accepted: within their ranges and choices
            if hasattr(self.config, p.name):
                setattr(self.config, p.name, p.value)

    def _on_event(self, msg: String) -> None:
        try:
            event = parse_episode_event(msg.data)
        except MessageError as err:
            self.get_logger().warning(f"ignoring episode event: {err}", throttle_duration_sec=1.0)
            return
        if not isinstance(event, EpisodeStart):
            return
        env_name = event.env_name or self.operator.env_name  # a start without one: the same task as before
        if self.operator.env_name != env_name:
            try:
                self.operator = ScriptedOperator(env_name, self.config)
            except ValueError as err:  # no expert for that task
                self.get_logger().error(f"keeping the {self.operator.env_name} expert: {err}")
        self.operator.reset()

    def _on_state(self, msg: JointState) -> None:
        try:
            state = ros_io.values_by_name(msg, STATE_NAMES)
        except ValueError as err:
            self.get_logger().warning(f"ignoring joint state: {err}", throttle_duration_sec=1.0)
            return
        engaged, action = self.operator.step(state)
        self.engaged_pub.publish(Bool(data=engaged))
        if engaged:
            self.command_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, action, ros_io.stamp_ns(msg.header)))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(ScriptedOperatorNode())


if __name__ == "__main__":
    main()
