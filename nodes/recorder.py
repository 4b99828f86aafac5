"""recorder: writes every episode (frames, state, commands, interventions, outcome) to Zarr.

Joins the robot's observations with the command it executed (and the policy's
proposal) by stamp, hands whole steps to a writer thread, and commits the
episode when its end is announced on `episode/events`: success -> 'success',
failure -> 'failure', an end without a verdict (an operator's stop) ->
'unlabeled'. Committed episodes are announced on `recorder/status`.

Operator interface: `~/start_episode` and `~/stop_episode` (std_srvs/Trigger)
announce episode boundaries on a real robot (the task comes from the `task`
parameter); `operator/label` (`messages.OperatorLabel`: episode_id (default: the
last one), outcome, progress 1-5, note, operator) labels a committed episode.
A malformed event, label or status is refused with a warning and changes nothing.
Frames come raw or compressed (`image_transport`, robot_runtime.nodes.images); the
camera geometry stored with each episode comes from `calibration_file`, or without
one from the drivers' `camera/<name>/camera_info` (intrinsics only).
A disk quota and a free-space floor stop recording (never control)
before the disk fills; the reason goes to /diagnostics.

Nothing lost on a busy computer: the recorded streams are subscribed reliable while every publisher of
the topic offers reliable (a dropped sample is re-sent) and best effort otherwise, as rosbag2 records
(`record_reliability`, nodes/adaptive_qos.py); a step still missing a frame or its state when the next
command arrives waits `step_grace_s` for it (robot_runtime.capture.assembler).
"""
from __future__ import annotations

import time
from dataclasses import asdict

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_runtime.calibration.cameras import CalibrationError, load_calibration
from robot_runtime.capture.assembler import StepAssembler
from robot_runtime.capture.codecs import CODECS, RECORDING, CameraCodec, CodecError
from robot_runtime.capture.disk_guard import DiskGuard, tree_bytes
from robot_runtime.capture.recording import AsyncRecorder
from robot_runtime.episode import EpisodeError, EpisodeLayout, EpisodeMetadata, EpisodeStore, new_episode_id
from robot_runtime.messages import (
    EpisodeCommitted,
    EpisodeEnd,
    EpisodeLabeled,
    EpisodeStart,
    LabelRefused,
    MessageError,
    clip,
    parse_episode_event,
    parse_operator_label,
    parse_policy_status,
)
from robot_runtime.nodes import diagnostics, images, ros_io
from robot_runtime.nodes.adaptive_qos import MODES, RecordingSubscriptions
from robot_runtime.nodes.parameters import apply_realtime, declare

END_GRACE_S = 1.0
IDLE_BUFFER_NS = 2_000_000_000


class RecorderNode(LifecycleNode):
    def __init__(self):
        super().__init__("recorder")
        apply_realtime(self)  # subscriptions ahead of busy processes: a frame not taken in time is dropped
        self.store_path = declare(self, "store_path", "episodes", "episode store directory", read_only=True)
        cameras = declare(self, "cameras", ["corner", "gripperPOV"], "cameras to record", read_only=True)
        image_size = declare(self, "image_size", 96, "square image size of every camera", read_only=True,
                             low=1, high=8192)
        transport = declare(self, "image_transport", "raw", "camera frames as sensor_msgs/Image (raw) or "
                            "CompressedImage (compressed, on <camera>/image_raw/compressed)", read_only=True,
                            choices=images.TRANSPORTS)
        codec = declare(self, "image_codec", RECORDING, "how frames are stored: lossless, jpeg per frame, h264 or "
                        "av1 video per chunk (each chunk starts with a keyframe)", read_only=True, choices=CODECS)
        quality = declare(self, "image_quality", -1, "jpeg quality 1-100 (higher is better), h264 CRF 0-51 or av1 "
                          "CRF 0-63 (lower is better); -1 = the codec's default", read_only=True, low=-1, high=100)
        try:
            self.codecs = dict.fromkeys(cameras, CameraCodec(codec, None if quality < 0 or codec == "lossless"
                                                             else quality))
        except CodecError as err:
            raise SystemExit(f"{self.get_fully_qualified_name()}: parameter 'image_quality': {err}") from None
        state_names = declare(self, "state_names", [""], "state entries to record, in order", read_only=True)
        action_names = declare(self, "action_names", [""], "command entries to record, in order", read_only=True)
        declare(self, "campaign", "", "label stored with each episode (e.g. demonstrations, round-1)")
        executed_topic = declare(self, "executed_topic", ros_io.ROBOT_EXECUTED_TOPIC,
                                 "what the robot executed: robot/executed if the driver reports it, "
                                 "else robot/command (the mux output)", read_only=True)
        autostart = declare(self, "autostart", True, "configure and activate at start-up", read_only=True)
        self.calibration_file = declare(self, "calibration_file", "",
                                        "camera calibration YAML copied into each episode; empty = the "
                                        "intrinsics on camera/<name>/camera_info",
                                        read_only=True)
        self.calibration: dict = {}
        declare(self, "task", "", "instruction of episodes started with ~/start_episode")
        declare(self, "robot_id", "robot", "robot id of episodes started with ~/start_episode")
        declare(self, "control_rate_hz", 20.0, "control rate of episodes started with ~/start_episode",
                low=0.1, high=1000.0)
        self.quota_mb = declare(self, "disk_quota_mb", 0.0, "maximum store size; 0 = no quota", read_only=True,
                                low=0.0, high=1e9)
        self.min_free_mb = declare(self, "min_free_mb", 500.0, "stop recording below this much free disk",
                                   read_only=True, low=0.0, high=1e9)
        self.layout = EpisodeLayout(cameras=dict.fromkeys(cameras, (image_size, image_size)),
                                    state_names=tuple(state_names), action_names=tuple(action_names))
        self.store: EpisodeStore | None = None
        self.recorder: AsyncRecorder | None = None
        self.active = False
        grace = declare(self, "step_grace_s", 0.5, "robot time a commanded step missing its state or a frame waits "
                        "for it (topics arrive independently; a large frame may trail the next command)",
                        read_only=True, low=0.0, high=10.0)
        self.assembler = StepAssembler(self.layout, grace_ns=int(grace * 1e9))
        self.recording = False
        self.recorder_episode_id = ""
        self._ending: tuple[EpisodeEnd, float] | None = None
        self.create_timer(0.1, self._maybe_finish)
        self.policy_version = ""
        self.guard: DiskGuard | None = None
        self.blocked = ""  # why recording is refused right now
        self.last_episode_id = ""
        self.episodes_committed = 0
        self.status_pub = self.create_publisher(String, ros_io.RECORDER_STATUS_TOPIC, ros_io.LATCHED_QOS)
        self.event_pub = self.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_service(Trigger, "~/start_episode", self._start_service)
        self.create_service(Trigger, "~/stop_episode", self._stop_service)
        self.create_subscription(String, ros_io.OPERATOR_LABEL_TOPIC, self._on_label, ros_io.STREAM_QOS)
        self.create_timer(1.0, self._check_disk_and_report)
        self.streams = RecordingSubscriptions(self, ros_io.RECORD_QOS, declare(
            self, "record_reliability", "adaptive", "recorded streams' subscriptions: adaptive (reliable while "
            "every publisher of the topic is, so dropped samples are re-sent; else best effort), best_effort or "
            "reliable", read_only=True, choices=MODES))
        for camera in cameras:
            self.streams.add(*images.camera_stream(self, camera, transport, (image_size, image_size),
                                                   self._on_image))
            if not self.calibration_file:
                self.create_subscription(CameraInfo, ros_io.camera_info_topic(camera),
                                         lambda msg, c=camera: self._on_camera_info(c, msg), ros_io.SENSOR_QOS)
        self.streams.add(JointState, ros_io.STATE_TOPIC, self._on_state)
        self.streams.add(JointState, executed_topic, self._on_executed)
        self.streams.add(JointState, ros_io.POLICY_COMMAND_TOPIC, self._on_policy_command)
        self.create_timer(0.5, self._adapt_reliability)
        self.create_subscription(String, ros_io.POLICY_STATUS_TOPIC, self._on_policy_status, ros_io.LATCHED_QOS)
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        if autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle: configure opens the store (recovering what a crash left), activate records --
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            if self.calibration_file:
                cameras = load_calibration(self.calibration_file)
                missing = set(self.layout.cameras) - set(cameras)
                if missing:
                    raise CalibrationError(f"{self.calibration_file}: no calibration for camera(s) {sorted(missing)}")
                self.calibration = {c: asdict(cameras[c]) for c in self.layout.cameras}
            self.store = EpisodeStore(self.store_path)
            recovery = self.store.recover()
        except (OSError, CalibrationError) as err:
            self.blocked = f"cannot start recording: {err}"
            self.get_logger().error(self.blocked)
            return TransitionCallbackReturn.FAILURE
        for episode_id in recovery.completed:
            self.get_logger().warning(f"finished committing interrupted episode {episode_id}")
        for episode_id, rows in recovery.salvaged.items():
            self.get_logger().warning(f"salvaged {rows} steps of interrupted episode {episode_id} (truncated)")
        for episode_id, reason in recovery.quarantined.items():
            self.get_logger().warning(f"quarantined interrupted episode {episode_id}: {reason}")
        self.guard = DiskGuard(self.store.root, int(self.quota_mb * 1e6), int(self.min_free_mb * 1e6))
        self.recorder = AsyncRecorder(self.store, on_commit=self._on_commit, on_error=self._on_write_error)
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
        try:
            status = parse_policy_status(msg.data)
        except MessageError as err:
            self.get_logger().warning(f"ignoring policy status: {err}", throttle_duration_sec=1.0)
            return
        self.policy_version = f"{status.model_id}@{status.version}" if status.state == "serving" else ""

    def _on_event(self, msg: String) -> None:
        try:
            event = parse_episode_event(msg.data)
        except MessageError as err:
            self.get_logger().warning(f"ignoring episode event: {err}", throttle_duration_sec=1.0)
            return
        if isinstance(event, EpisodeStart) and self.active:
            self._maybe_finish(force=True)
            if self.recording:
                self._finish("unlabeled", "superseded by a new start", truncated=True)
            self.blocked = self.guard.problem()
            if self.blocked:
                self.get_logger().error(f"not recording episode {event.episode_id}: {self.blocked}")
                return
            # Observations of this episode may have arrived before its announcement: keep them.
            self.assembler.restart(event.stamp_ns, tolerance_ns=int(0.5e9 / event.control_rate_hz))
            self.recording = True
            self.recorder_episode_id = event.episode_id
            self.recorder.begin(self.layout, EpisodeMetadata(
                task=event.task, robot_id=event.robot_id, episode_id=event.episode_id,
                control_rate_hz=event.control_rate_hz, policy_version=self.policy_version,
                extra={"campaign": self.get_parameter("campaign").value, "calibration": dict(self.calibration),
                       **{k: getattr(event, k) for k in ("env_name", "seed") if getattr(event, k) is not None}}),
                self.codecs)
        elif isinstance(event, EpisodeEnd) and self.recording:
            if event.episode_id != self.recorder_episode_id:
                self.get_logger().warning(f"ignoring the end of episode {event.episode_id}: recording "
                                          f"{self.recorder_episode_id}", throttle_duration_sec=1.0)
                return
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
        if not force and self.assembler.counts.commands < event.steps and time.monotonic() < deadline:
            return
        self._ending = None
        outcome = "unlabeled" if event.success is None else ("success" if event.success else "failure")
        self._finish(outcome, event.reason, {"held_steps": event.held_steps})

    def _finish(self, outcome: str, reason: str, extra: dict | None = None, truncated: bool = False) -> None:
        for step in self.assembler.ready(final=True):
            self.recorder.add(step)
        counts = self.assembler.counts
        extra = {**(extra or {}), "incomplete_steps": counts.incomplete_steps,
                 "uncommanded_observations": counts.uncommanded_observations, "late_messages": counts.late_messages,
                 "completed_in_grace": counts.completed_in_grace}
        version = None  # the version announced at the start stands when no proposal named its bundle
        if counts.policy_versions:
            version = max(counts.policy_versions, key=counts.policy_versions.get)
            if len(counts.policy_versions) > 1:
                extra["policy_versions"] = dict(counts.policy_versions)  # steps proposed by each bundle
        self.recorder.end(outcome, reason, extra, truncated, version)
        self.recording = False

    def _on_image(self, camera: str, stamp: int, image) -> None:
        self.assembler.add_image(camera, stamp, image.copy())  # the writer thread keeps it past the message

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        try:
            calibration = asdict(images.calibration_from_camera_info(msg, camera))
        except CalibrationError as err:
            self.get_logger().warning(f"ignoring camera_info: {err}", throttle_duration_sec=5.0)
            return
        self.calibration[camera] = calibration  # episodes started from now on carry it

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
            self.assembler.add_policy_command(stamp, action, ros_io.bundle_label(msg.header.frame_id))

    def _on_executed(self, msg: JointState) -> None:
        stamp, action = self._vector(msg, self.layout.action_names)
        if stamp is None:
            return
        self.assembler.add_command(stamp, action, msg.header.frame_id)
        if self.recording:
            for step in self.assembler.ready():
                self.recorder.add(step)
            self._maybe_finish()

    # -- operator interface ----------------------------------------------------------------
    def _start_service(self, request, response):
        if self.recording:
            response.success, response.message = False, "an episode is being recorded; stop it first"
            return response
        task = self.get_parameter("task").value
        if not task:
            response.success, response.message = False, "set the `task` parameter (the instruction) first"
            return response
        robot_id = self.get_parameter("robot_id").value
        try:
            start = EpisodeStart(episode_id=new_episode_id(robot_id), task=task, robot_id=robot_id,
                                 control_rate_hz=self.get_parameter("control_rate_hz").value,
                                 stamp_ns=self.get_clock().now().nanoseconds)
        except MessageError as err:  # a parameter that cannot go on the wire (an unsafe robot_id, ...)
            response.success, response.message = False, f"cannot start an episode: {err}"
            return response
        self.event_pub.publish(ros_io.to_string_msg(start))
        response.success, response.message = True, start.episode_id
        return response

    def _stop_service(self, request, response):
        if not self.recording:
            response.success, response.message = False, "no episode is being recorded"
            return response
        # No verdict: the episode stays 'unlabeled' until an operator labels it.
        self.event_pub.publish(ros_io.to_string_msg(EpisodeEnd(
            episode_id=self.recorder_episode_id, reason="stopped by operator", steps=self.assembler.counts.commands)))
        response.success, response.message = True, self.recorder_episode_id
        return response

    def _on_label(self, msg: String) -> None:
        try:
            label = parse_operator_label(msg.data)
            episode_id = label.episode_id or self.last_episode_id
            if self.store is None:
                raise EpisodeError("the recorder has no store open (not configured; see /diagnostics)")
            if not episode_id:
                raise EpisodeError("no episode committed since the recorder started: name the episode_id")
            result = self.store.label(episode_id, label.outcome, label.progress, label.note, label.operator)
        except (MessageError, EpisodeError) as err:
            self.get_logger().warning(f"label refused: {err}", throttle_duration_sec=1.0)
            self.status_pub.publish(ros_io.to_string_msg(LabelRefused(error=clip(str(err)))))
            return
        self.status_pub.publish(ros_io.to_string_msg(EpisodeLabeled(episode_id=episode_id, **result)))

    def _adapt_reliability(self) -> None:
        for change in self.streams.adapt():
            self.get_logger().info(f"recording {change} (its publishers' reliability)")

    # -- disk and health ---------------------------------------------------------------------
    def _on_write_error(self, message: str) -> None:
        self.get_logger().error(f"recording failed: {message}")
        self.blocked = f"write failed: {message}"

    def _check_disk_and_report(self) -> None:
        if self.guard is None:  # not configured: say why, loudly
            self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
                "recorder: episodes", self.get_name(), diagnostics.ERROR, self.blocked or "not configured", {})]))
            return
        in_progress = tree_bytes(self.store.staging_dir) if self.recording else 0
        problem = self.guard.problem(in_progress)
        if problem and self.recording:
            self.get_logger().error(f"stopping recording: {problem}")
            self._finish("unlabeled", f"recording stopped: {problem}", truncated=True)
        if problem or not self.blocked.startswith("write failed"):
            self.blocked = problem
        stats = self.recorder.stats
        level = diagnostics.ERROR if self.blocked else diagnostics.OK
        self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
            "recorder: episodes", self.get_name(), level, self.blocked or ("recording" if self.recording else "idle"),
            {"recording": self.recording, "episodes_committed": self.episodes_committed,
             "written_steps": stats.written_steps, "dropped_steps": stats.dropped_steps,
             "rejected_steps": stats.rejected_steps, "queue_depth": self.recorder.queue_depth,
             "store_mb": self.guard.committed_bytes / 1e6, "free_mb": self.guard.free_bytes() / 1e6})]))

    def _on_commit(self, path, writer) -> None:
        self.guard.add_committed(path)
        self.last_episode_id = writer.metadata.episode_id
        self.episodes_committed += 1
        if not rclpy.ok():  # committed while shutting down: nobody to tell
            return
        self.status_pub.publish(ros_io.to_string_msg(EpisodeCommitted(
            episode_id=writer.metadata.episode_id, path=str(path), steps=writer.steps,
            outcome=writer.metadata.outcome, dropped_steps=self.recorder.stats.dropped_steps)))


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(RecorderNode())


if __name__ == "__main__":
    main()
