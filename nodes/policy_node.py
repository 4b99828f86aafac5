"""policy_node: runs a model bundle on the robot's observations and proposes commands.

Loads the bundle named by the `bundle_path` parameter (validated in full: a bad
bundle is refused with the file and the problem, and no command is published),
runs it with the chosen engine, and turns each action chunk into one command
per observation. Setting `bundle_path` at run time swaps the model; an invalid
new bundle is rejected and the current one stays.
"""
from __future__ import annotations

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from robot_runtime.bundle import BundleError
from robot_runtime.chunking import ActionChunkQueue
from robot_runtime.engine import EngineError
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.parameters import declare
from robot_runtime.policy import PolicyInputError, PolicyOutputError, PolicyRunner
from robot_runtime.sync import ObservationSync


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy_node")
        self.engine_kind = declare(self, "engine", "auto", "inference engine: auto | tensorrt | onnxruntime",
                                   read_only=True)
        self.fp16 = declare(self, "fp16", False, "build TensorRT engines in FP16", read_only=True)
        self.engine_cache_dir = declare(self, "engine_cache_dir", "", "TensorRT engine cache; empty = default",
                                        read_only=True)
        self.threads = declare(self, "threads", 1, "engine threads", read_only=True)
        self.beta = declare(self, "beta", -1.0, "CFG guidance; < 0 uses the bundle's default")
        self.horizon = declare(self, "execution_horizon", 0, "actions executed per chunk; 0 = half the chunk")
        self.seed = declare(self, "seed", 0, "seed of the flow-matching noise", read_only=True)
        bundle_path = declare(self, "bundle_path", "", "model bundle directory to serve")
        self.runner: PolicyRunner | None = None
        self.queue: ActionChunkQueue | None = None
        self.task = ""
        self.status = {"state": "idle", "bundle": "", "error": ""}
        self.sync: ObservationSync | None = None
        self._image_subs = []
        self.command_pub = self.create_publisher(JointState, ros_io.POLICY_COMMAND_TOPIC, ros_io.STREAM_QOS)
        self.status_pub = self.create_publisher(String, ros_io.POLICY_STATUS_TOPIC, ros_io.LATCHED_QOS)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.LATEST_QOS)
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        if bundle_path:
            self._load(bundle_path)
        else:
            self._publish_status()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- bundle ---------------------------------------------------------------------------
    def _load(self, path: str) -> str:
        """Load, validate and warm up `path`; on failure keep the current bundle. Returns the error or ''."""
        beta = self.beta if self.beta >= 0 else None
        try:
            runner = PolicyRunner.load(path, self.engine_kind, self.threads, beta, self.seed,
                                       fp16=self.fp16, cache_dir=self.engine_cache_dir or None)
        except (BundleError, EngineError, PolicyOutputError) as err:
            self.get_logger().error(f"refusing bundle: {err}")
            self.status.update(error=str(err), state="serving" if self.runner else "error")
            self._publish_status()
            return str(err)
        self.runner = runner
        m = runner.manifest
        horizon = self.horizon if self.horizon > 0 else max(1, m.chunk_length // 2)
        self.queue = ActionChunkQueue(min(horizon, m.chunk_length))
        self._subscribe_cameras([c.name for c in m.cameras])
        self.sync = ObservationSync([c.name for c in m.cameras], int(0.5e9 / m.control_rate_hz))
        self.status.update(state="serving", bundle=str(path), model_id=m.model_id, version=m.version,
                           engine=runner.engine.name, engine_note=runner.engine.fallback_reason,
                           conditioning=m.conditioning_mode, beta=runner.beta,
                           error="", inferences=0)
        if self.task:
            self._select_task(self.task)
        self.get_logger().info(f"serving {runner.bundle.label} on {runner.engine.name}")
        self._publish_status()
        return ""

    def _subscribe_cameras(self, cameras: list[str]) -> None:
        for sub in self._image_subs:
            self.destroy_subscription(sub)
        self._image_subs = [
            self.create_subscription(Image, ros_io.camera_topic(c), lambda msg, c=c: self._on_image(c, msg),
                                     ros_io.LATEST_QOS)
            for c in cameras]

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "bundle_path" and p.value:
                error = self._load(p.value)
                if error:
                    return SetParametersResult(successful=False, reason=error)
            elif p.name == "beta":
                self.beta = p.value
                if self.runner:
                    self.runner.beta = p.value if p.value >= 0 else self.runner.manifest.beta
            elif p.name == "execution_horizon" and self.runner:
                m = self.runner.manifest
                self.queue = ActionChunkQueue(min(p.value, m.chunk_length) if p.value > 0 else m.chunk_length // 2)
        return SetParametersResult(successful=True)

    def _publish_status(self) -> None:
        if self.runner:
            self.status["inferences"] = self.runner.inferences
        self.status_pub.publish(ros_io.json_msg(**self.status))

    # -- control ----------------------------------------------------------------------------
    def _select_task(self, task: str) -> None:
        try:
            self.runner.select_task(task)
            self.status["error"] = ""
        except PolicyInputError as err:
            self.get_logger().error(str(err))
            self.status["error"] = str(err)

    def _on_event(self, msg: String) -> None:
        try:
            event = ros_io.parse_json_msg(msg)
        except ValueError as err:
            self.get_logger().warning(f"ignoring malformed episode event: {err}")
            return
        if event.get("event") == "start":
            self.task = str(event.get("task", ""))
            if self.runner:
                self._select_task(self.task)
                self.queue.clear()
        elif event.get("event") == "end":
            if self.queue:
                self.queue.clear()
            self._publish_status()

    def _on_image(self, camera: str, msg: Image) -> None:
        if self.sync is None:
            return
        try:
            image = ros_io.image_from_msg(msg)
        except ValueError as err:
            self.get_logger().warning(f"camera {camera}: {err}", throttle_duration_sec=1.0)
            return
        self._act(self.sync.add_image(camera, ros_io.stamp_ns(msg.header), image))

    def _on_state(self, msg: JointState) -> None:
        runner = self.runner
        if runner is None or runner.task_index is None:
            return
        try:
            state = ros_io.values_by_name(msg, runner.manifest.state_names)
        except ValueError as err:
            self.get_logger().error(f"holding: {err}", throttle_duration_sec=1.0)
            return
        self._act(self.sync.add_state(ros_io.stamp_ns(msg.header), state))

    def _act(self, observation) -> None:
        """Publish the command for a complete observation (state + frames of the same moment)."""
        if observation is None or self.runner is None or self.runner.task_index is None:
            return
        stamp, state, images = observation
        runner = self.runner
        try:
            if self.queue.needs_chunk():
                self.queue.push(runner.infer(images, state))
        except (PolicyInputError, PolicyOutputError) as err:
            self.get_logger().error(f"holding: {err}", throttle_duration_sec=1.0)
            self.queue.clear()
            return
        action = self.queue.pop()
        self.command_pub.publish(ros_io.joint_state_msg(runner.manifest.action_names, action, stamp))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(PolicyNode())


if __name__ == "__main__":
    main()
