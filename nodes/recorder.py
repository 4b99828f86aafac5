"""recorder: writes every episode (frames, state, commands, interventions, outcome) to Zarr.

Joins the robot's observations with the command it executed (and the policy's
proposal) by stamp, hands whole steps to a writer thread, and commits the
episode when the robot announces its end: success -> 'success', anything else
-> 'failure'. Committed episodes are announced on `recorder/status`.
"""
from __future__ import annotations

import time

import rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from robot_runtime.assembler import StepAssembler
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.parameters import declare
from robot_runtime.recording import AsyncRecorder

END_GRACE_S = 1.0
IDLE_BUFFER_NS = 2_000_000_000


class RecorderNode(LifecycleNode):
    def __init__(self):
        super().__init__("recorder")
        self.store_path = declare(self, "store_path", "episodes", "episode store directory", read_only=True)
        cameras = declare(self, "cameras", ["corner", "gripperPOV"], "cameras to record", read_only=True)
        image_size = declare(self, "image_size", 96, "square image size of every camera", read_only=True)
        state_names = declare(self, "state_names", [""], "state entries to record, in order", read_only=True)
        action_names = declare(self, "action_names", [""], "command entries to record, in order", read_only=True)
        declare(self, "campaign", "", "label stored with each episode (e.g. demonstrations, round-1)")
        executed_topic = declare(self, "executed_topic", ros_io.ROBOT_EXECUTED_TOPIC,
                                 "what the robot executed: robot/executed if the driver reports it, "
                                 "else robot/command (the mux output)", read_only=True)
        autostart = declare(self, "autostart", True, "configure and activate at start-up", read_only=True)
        self.layout = EpisodeLayout(cameras={c: (image_size, image_size) for c in cameras},
                                    state_names=tuple(state_names), action_names=tuple(action_names))
        self.store: EpisodeStore | None = None
        self.recorder: AsyncRecorder | None = None
        self.active = False
        self.assembler = StepAssembler(self.layout)
        self.recording = False
        self._ending: tuple[dict, float] | None = None
        self.create_timer(0.1, self._maybe_finish)
        self.policy_version = ""
        self.status_pub = self.create_publisher(String, ros_io.RECORDER_STATUS_TOPIC, ros_io.LATCHED_QOS)
        for camera in cameras:
            self.create_subscription(Image, ros_io.camera_topic(camera),
                                     lambda msg, c=camera: self._on_image(c, msg), ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.STREAM_QOS)
        self.create_subscription(JointState, executed_topic, self._on_executed, ros_io.STREAM_QOS)
        self.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC, self._on_policy_command,
                                 ros_io.STREAM_QOS)
        self.create_subscription(String, ros_io.POLICY_STATUS_TOPIC, self._on_policy_status, ros_io.LATCHED_QOS)
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        if autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle: configure opens the store (recovering what a crash left), activate records --
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.store = EpisodeStore(self.store_path)
            recovery = self.store.recover()
        except OSError as err:
            self.get_logger().error(f"cannot open episode store {self.store_path}: {err}")
            return TransitionCallbackReturn.FAILURE
        for episode_id in recovery.completed:
            self.get_logger().warning(f"finished committing interrupted episode {episode_id}")
        for episode_id, rows in recovery.salvaged.items():
            self.get_logger().warning(f"salvaged {rows} steps of interrupted episode {episode_id} (truncated)")
        for episode_id, reason in recovery.quarantined.items():
            self.get_logger().warning(f"quarantined interrupted episode {episode_id}: {reason}")
        self.recorder = AsyncRecorder(self.store, on_commit=self._on_commit,
                                      on_error=lambda e: self.get_logger().error(f"recording failed: {e}"))
        self.get_logger().info(f"recording to {self.store.root} ({len(self.store.episode_ids())} committed)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if self.recording:  # what was seen so far is kept, marked as cut short
            self._finish("unlabeled", "recorder deactivated mid-episode", truncated=True)
        self.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.recorder.close()
        self.recorder = self.store = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Process exit: keep what the episode in progress has so far, drain the writer."""
        if self.recording:
            self._finish("unlabeled", "recorder shut down mid-episode", truncated=True)
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def _on_policy_status(self, msg: String) -> None:
        status = ros_io.parse_json_msg(msg)
        self.policy_version = f"{status['model_id']}@{status['version']}" if status.get("state") == "serving" else ""

    def _on_event(self, msg: String) -> None:
        try:
            event = ros_io.parse_json_msg(msg)
        except ValueError as err:
            self.get_logger().warning(f"ignoring malformed episode event: {err}")
            return
        if event.get("event") == "start" and self.active:
            self._maybe_finish(force=True)
            if self.recording:
                self._finish("failure", "superseded by a new start")
            # Observations of this episode may have arrived before its announcement: keep them.
            rate = float(event.get("control_rate_hz", 0.0)) or 10.0
            self.assembler.restart(int(event.get("stamp_ns", 0)), tolerance_ns=int(0.5e9 / rate))
            self.recording = True
            self.recorder.begin(self.layout, EpisodeMetadata(
                task=event["task"], robot_id=event.get("robot_id", ""), episode_id=event["episode_id"],
                control_rate_hz=float(event.get("control_rate_hz", 0.0)), policy_version=self.policy_version,
                extra={"campaign": self.get_parameter("campaign").value,
                       **{k: event[k] for k in ("env_name", "seed") if k in event}}))
        elif event.get("event") == "end" and self.recording:
            # Messages on other topics may still be in flight: wait for the step count the
            # robot announced (or a grace period) before committing.
            self._ending = (event, time.monotonic() + END_GRACE_S)
            self._maybe_finish()

    def _maybe_finish(self, force: bool = False) -> None:
        if self._ending is None:
            if not self.recording:  # idle: bound what a continuously publishing robot leaves here
                self.assembler.prune(self.get_clock().now().nanoseconds - IDLE_BUFFER_NS)
            return
        event, deadline = self._ending
        if not force and self.assembler.counts.commands < event.get("steps", 0) and time.monotonic() < deadline:
            return
        self._ending = None
        self._finish("success" if event.get("success") else "failure", event.get("reason", ""),
                     {"held_steps": event.get("held_steps", 0)})

    def _finish(self, outcome: str, reason: str, extra: dict | None = None, truncated: bool = False) -> None:
        for step in self.assembler.ready(final=True):
            self.recorder.add(step)
        counts = self.assembler.counts
        self.recorder.end(outcome, reason, {**(extra or {}), "incomplete_steps": counts.incomplete_steps,
                                            "uncommanded_observations": counts.uncommanded_observations},
                          truncated)
        self.recording = False

    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            self.assembler.add_image(camera, ros_io.stamp_ns(msg.header), ros_io.image_from_msg(msg).copy())
        except ValueError as err:
            self.get_logger().warning(f"camera {camera}: {err}", throttle_duration_sec=1.0)

    def _vector(self, msg: JointState, names):
        try:
            return ros_io.stamp_ns(msg.header), ros_io.values_by_name(msg, names)
        except ValueError as err:
            self.get_logger().warning(f"dropping message: {err}", throttle_duration_sec=1.0)
            return None, None

    def _on_state(self, msg: JointState) -> None:
        stamp, state = self._vector(msg, self.layout.state_names)
        if stamp is not None:
            self.assembler.add_state(stamp, state)

    def _on_policy_command(self, msg: JointState) -> None:
        stamp, action = self._vector(msg, self.layout.action_names)
        if stamp is not None:
            self.assembler.add_policy_command(stamp, action)

    def _on_executed(self, msg: JointState) -> None:
        stamp, action = self._vector(msg, self.layout.action_names)
        if stamp is None:
            return
        self.assembler.add_command(stamp, action, msg.header.frame_id)
        if self.recording:
            for step in self.assembler.ready():
                self.recorder.add(step)
            self._maybe_finish()

    def _on_commit(self, path, writer) -> None:
        self.status_pub.publish(ros_io.json_msg(
            event="committed", episode_id=writer.metadata.episode_id, path=str(path), steps=writer.steps,
            outcome=writer.metadata.outcome, dropped_steps=self.recorder.stats.dropped_steps))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(RecorderNode())


if __name__ == "__main__":
    main()
