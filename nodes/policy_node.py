"""policy_node: a managed node that runs a model bundle and proposes one command per observation.

Lifecycle: configure loads, validates and warms the bundle named by
`bundle_path` (a bad bundle is refused with the file and the problem, and the
node stays unconfigured and commands nothing); activate starts commanding;
deactivate stops. With `autostart` (the default) the node walks itself to active;
without, it waits unconfigured for a lifecycle manager. A configure that failed (no
bundle yet, or a bad one) is retried when `bundle_path` is set.

Cameras: `image_transport` raw (sensor_msgs/Image: rgb8, bgr8, mono8) or compressed
(jpeg/png on `.../image_raw/compressed`); frames of another size than the bundle's
are refused with a warning (robot_runtime.nodes.images), and the robot holds.
With a `calibration_file` (this robot's cameras), configure compares each camera
with the calibration the bundle was trained with (robot_runtime.calibration.records):
a difference beyond `calibration_tolerance_px` refuses the bundle, or with
`calibration_mismatch: warn` only warns, naming the camera and the change; frames are
then mapped onto the trained geometry (undistorted, cropped, resized) before the
policy sees them. A bundle without a calibration record loads with a warning.

Control: each joint state, paired with camera frames of the same moment, is a
tick; the executor answers it at once from the planned chunk while the next
chunk is inferred in the background. The safety filter turns a missing plan
(deadline miss), camera frames that do not arrive (`max_frame_wait`) or NaN
into the hold command and clips
everything else to the bundle's limits, rate and workspace. Setting
`bundle_path` while active validates the new bundle at once (refusing the
parameter if it is bad), then loads and warms it in the background and swaps
it in at a chunk boundary; if it misbehaves the previous one takes over again.

Value guidance (`value_guided`, `value_candidates` K, `value_fallback`): each inference samples K
chunks in one batched engine call and the bundle's chunk critic (value.onnx) picks the one to
execute; a bundle without a critic runs the policy alone with a warning, or is refused with
`value_fallback: refuse` (robot_runtime.runtime.guidance).

The background load shares the interpreter with the control path, and two of
its steps hold the GIL for milliseconds (parsing the ONNX graph, ONNX Runtime's
session constructor: ~20 ms for the reference policy). Each starts right after
a command went out, so the hold falls in the gap before the next observation
instead of in the middle of answering one.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String

from robot_runtime.bundle import MANIFEST, Bundle, BundleError, load_bundle
from robot_runtime.calibration.cameras import CalibrationError, load_calibration
from robot_runtime.calibration.records import MISMATCH_ACTIONS, CameraCheck, check_cameras
from robot_runtime.messages import EpisodeEnd, EpisodeStart, MessageError, PolicyStatus, clip, parse_episode_event
from robot_runtime.nodes import diagnostics, images, ros_io
from robot_runtime.nodes.parameters import INT_MAX, apply_realtime, declare, declare_safety, safety_filter
from robot_runtime.runtime.engines.base import EngineError
from robot_runtime.runtime.executor import PolicyExecutor, SwapError
from robot_runtime.runtime.guidance import FALLBACKS, MAX_CANDIDATES, GuidanceError, ValueGuidance
from robot_runtime.runtime.policy import PolicyInputError, PolicyOutputError, PolicyRunner
from robot_runtime.runtime.realtime import normal_priority
from robot_runtime.runtime.safety import SafetyFilter
from robot_runtime.runtime.sync import ObservationSync

LOAD_ERRORS = (BundleError, EngineError, PolicyOutputError, PolicyInputError, SwapError, CalibrationError,
               GuidanceError)


class PolicyNode(LifecycleNode):
    def __init__(self):
        super().__init__("policy_node")
        apply_realtime(self)  # first, so the control path is ahead of busy processes from the start
        self.engine_kind = declare(self, "engine", "auto", "inference engine", read_only=True,
                                   choices=("auto", "tensorrt", "onnxruntime"))
        self.fp16 = declare(self, "fp16", False, "build TensorRT engines in FP16", read_only=True)
        self.engine_cache_dir = declare(self, "engine_cache_dir", "", "TensorRT engine cache; empty = default",
                                        read_only=True)
        self.threads = declare(self, "threads", 1, "engine threads", read_only=True, low=1, high=256)
        self.seed = declare(self, "seed", 0, "seed of the flow-matching noise", read_only=True, low=0, high=INT_MAX)
        declare(self, "beta", -1.0, "CFG guidance; < 0 uses the bundle's default", low=-1.0, high=100.0)
        self.guidance = ValueGuidance(
            declare(self, "value_guided", False, "execute the best of value_candidates sampled chunks as ranked by "
                                                 "the bundle's chunk critic (value.onnx)", read_only=True),
            declare(self, "value_candidates", 8, "K, candidate chunks per inference under value guidance (one "
                                                 "batched engine call)", read_only=True, low=1, high=MAX_CANDIDATES),
            declare(self, "value_fallback", "policy", "under value guidance, a bundle without value.onnx: run the "
                                                      "policy alone (with a warning) or refuse the bundle",
                    read_only=True, choices=FALLBACKS))
        declare(self, "execution_horizon", 0, "actions executed per chunk before the next; 0 = half the chunk",
                low=0, high=10_000)
        declare(self, "blend_steps", 2, "ticks over which a new chunk takes over from the old plan", low=0, high=10_000)
        self._max_frame_wait = declare(self, "max_frame_wait", 0.1,
                                       "seconds to wait for an observation's camera frames before holding",
                                       low=0.001, high=10.0)
        self.image_transport = declare(self, "image_transport", "raw", "camera frames as sensor_msgs/Image (raw) or "
                                       "CompressedImage (compressed, on <camera>/image_raw/compressed)",
                                       read_only=True, choices=images.TRANSPORTS)
        self.calibration_file = declare(self, "calibration_file", "", "this robot's camera calibration YAML, checked "
                                        "against the bundle's and used to map frames onto its geometry; empty: "
                                        "no check, frames must come at the bundle's size", read_only=True)
        self.calibration_tolerance_px = declare(self, "calibration_tolerance_px", 1.0, "largest pixel difference "
                                                "between this robot's and the bundle's calibration of a camera",
                                                read_only=True, low=0.0, high=10_000.0)
        self.calibration_mismatch = declare(self, "calibration_mismatch", "refuse", "beyond the tolerance: refuse "
                                            "the bundle, or warn and serve it", read_only=True,
                                            choices=MISMATCH_ACTIONS)
        self.cameras: CameraCheck = CameraCheck()
        declare_safety(self)
        declare(self, "bundle_path", "", "model bundle directory to serve")
        self.autostart = declare(self, "autostart", True, "configure and activate at start-up; false: wait for a "
                                 "lifecycle manager", read_only=True)
        self._configure_requested = False  # by autostart or a lifecycle manager: retried when a bundle comes
        self.runner: PolicyRunner | None = None
        self.control: PolicyExecutor | None = None
        self.safety: SafetyFilter | None = None
        self.sync: ObservationSync | None = None
        self.active = False
        self.task = ""
        self._episode_start_ns = 0
        self.episode_running = False
        self.status = PolicyStatus(state="unconfigured")
        self._image_subs = []
        self._loader: threading.Thread | None = None
        self._validated: dict[str, Bundle] = {}  # checked by the parameter callback, loaded by the loader
        self._command_sent = threading.Event()  # set after every command: the start of a gap between ticks
        self._tick_times: deque = deque(maxlen=2000)
        self._e2e_ms: deque = deque(maxlen=2000)
        self._work_ms: deque = deque(maxlen=2000)
        self._callback_started = time.perf_counter()
        self._counts = {"stale_holds": 0, "safety_events": 0}
        self._last_event = ""
        self.command_pub = self.create_lifecycle_publisher(JointState, ros_io.POLICY_COMMAND_TOPIC,
                                                           ros_io.STREAM_QOS)
        self.status_pub = self.create_publisher(String, ros_io.POLICY_STATUS_TOPIC, ros_io.LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(JointState, ros_io.STATE_TOPIC, self._on_state, ros_io.SENSOR_QOS)
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        self.create_subscription(Bool, ros_io.TELEOP_ENGAGED_TOPIC, self._on_engaged, ros_io.COMMAND_QOS)
        self._operator_engaged = False
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.01, self._watch_frames)
        self._waiting_since = time.monotonic()
        self._publish_status()
        if self.autostart:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        self._configure_requested = True
        path = self.get_parameter("bundle_path").value
        if not path:
            self._fail("no bundle_path set")
            return TransitionCallbackReturn.FAILURE
        try:
            runner = self._load_runner(self._validated.pop(path, None) or path)
            self.cameras = self._check_cameras(runner.bundle)
            self.safety = self._safety_filter(runner)
        except (*LOAD_ERRORS, ValueError) as err:
            self._fail(f"refusing bundle: {err}")
            return TransitionCallbackReturn.FAILURE
        self.runner = runner
        self.control = PolicyExecutor(runner, self.get_parameter("execution_horizon").value,
                                       self.get_parameter("blend_steps").value)
        cameras = runner.manifest.cameras
        self.sync = ObservationSync([c.name for c in cameras], int(0.5e9 / runner.manifest.control_rate_hz))
        self._image_subs = [images.subscribe_camera(self, c.name, self.image_transport, self._frame_size(c),
                                                    self._on_frame, ros_io.SENSOR_QOS)
                            for c in cameras]
        if self.task:
            self._start_episode(self.task)
        self._set_serving("inactive")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.active = True
        self._set_serving("serving")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        self.control.scheduler.reset()
        self._set_serving("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        for sub in self._image_subs:
            self.destroy_subscription(sub)
        self._image_subs = []
        self.control.close()
        self.runner = self.control = self.safety = self.sync = None
        self.cameras = CameraCheck()
        self._configure_requested = False
        self.status = replace(self.status, state="unconfigured", bundle="")
        self._publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        if self.control:
            self.control.close()

    # -- bundles ----------------------------------------------------------------------------
    def _load_runner(self, path: str | Bundle) -> PolicyRunner:
        beta = self.get_parameter("beta").value
        runner = PolicyRunner.load(path, self.engine_kind, self.threads, beta if beta >= 0 else None, self.seed,
                                   fp16=self.fp16, cache_dir=self.engine_cache_dir or None, guidance=self.guidance)
        if runner.guidance_note:
            self.get_logger().warning(runner.guidance_note)
        return runner

    def _check_cameras(self, bundle: Bundle) -> CameraCheck:
        """This robot's calibration against the bundle's record; CalibrationError with every refusal."""
        m = bundle.manifest
        robot = load_calibration(self.calibration_file) if self.calibration_file else {}
        check = check_cameras({c.name: (c.height, c.width) for c in m.cameras}, m.calibration, robot,
                              self.calibration_tolerance_px, self.calibration_mismatch, bundle.path / MANIFEST)
        for warning in check.warnings:
            self.get_logger().warning(f"{bundle.label}: {warning}")
        if check.refusals:
            raise CalibrationError("; ".join(check.refusals))
        return check

    def _frame_size(self, camera) -> tuple[int, int]:
        """The size frames arrive at: the calibrated camera's when they are preprocessed, else the bundle's."""
        pre = self.cameras.preprocessors.get(camera.name)
        return (pre.camera.height, pre.camera.width) if pre else (camera.height, camera.width)

    def _on_frame(self, camera: str, stamp: int, image: np.ndarray) -> None:
        pre = self.cameras.preprocessors.get(camera)
        self._on_image(camera, stamp, image if pre is None or pre.identity else pre(image))

    def _safety_filter(self, runner: PolicyRunner) -> SafetyFilter:
        m = runner.manifest
        return safety_filter(self, m.action_names, m.action_low, m.action_high, m.state_names)

    def _validate_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "bundle_path" and p.value:
                try:
                    # manifest, hashes, graph signature: a few ms, before accepting
                    bundle = load_bundle(p.value)
                    if self.control is not None:
                        self._check_same_geometry(self._check_cameras(bundle))
                    self._validated = {p.value: bundle}
                except (BundleError, CalibrationError) as err:
                    self.get_logger().error(f"refusing bundle: {err}")
                    return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _check_same_geometry(self, check: CameraCheck) -> None:
        """A hot swap keeps the camera subscriptions and their preprocessing: the new bundle must map frames alike."""
        for name in set(check.preprocessors) | set(self.cameras.preprocessors):
            new, old = check.preprocessors.get(name), self.cameras.preprocessors.get(name)
            if new is None or old is None or new.preprocessing != old.preprocessing:
                raise CalibrationError(f"camera {name}: the new bundle was trained on another camera geometry than "
                                       "the running one; deactivate and reconfigure the node to switch")

    def _apply_parameters(self, params) -> None:
        for p in params:
            if p.name == "bundle_path" and p.value:
                if self.control is None:
                    if not (self.autostart or self._configure_requested):
                        continue  # unconfigured on purpose: a lifecycle manager configures it
                    if self.trigger_configure() == TransitionCallbackReturn.SUCCESS and self.autostart:
                        self.trigger_activate()
                else:
                    self._loader = threading.Thread(target=self._load_and_stage, args=(p.value,), daemon=True)
                    self._loader.start()
            elif p.name == "max_frame_wait":
                self._max_frame_wait = p.value
            elif p.name == "beta" and self.runner:
                self.runner.beta = p.value if p.value >= 0 else self.runner.manifest.beta

    def _between_ticks(self) -> None:
        """Return right after the next command is published (or after a period when none is due)."""
        self._command_sent.clear()
        self._command_sent.wait(timeout=1.0 / self.runner.manifest.control_rate_hz)

    def _load_and_stage(self, path: str) -> None:
        """Off the control path: build the engine, warm it, stage it for the next chunk boundary."""
        normal_priority()  # loading is heavy; the engine's threads created here must not outrank control
        try:
            bundle = self._validated.pop(path, None)
            if bundle is None:
                self._between_ticks()
                bundle = load_bundle(path)
                self._check_same_geometry(self._check_cameras(bundle))
            self._between_ticks()
            runner = self._load_runner(bundle)
            self.control.stage(runner)
        except LOAD_ERRORS as err:
            self._report(f"keeping {self.runner.bundle.label}: new bundle refused: {err}", error=True)
            return
        self.status = replace(self.status, staged=runner.bundle.label)
        self._report(f"staged {runner.bundle.label}; it takes over at the next chunk boundary")

    def _fail(self, message: str) -> None:
        self.get_logger().error(message)
        self.status = replace(self.status, state="error", error=clip(message))
        self._publish_status()

    def _set_serving(self, state: str) -> None:
        runner = self.runner
        m = runner.manifest
        self.status = replace(self.status, state=state, bundle=str(runner.bundle.path), model_id=m.model_id,
                              version=m.version, engine=runner.engine.name,
                              engine_note=clip(runner.engine.fallback_reason), conditioning=m.conditioning_mode,
                              beta=runner.beta, error="", staged="")
        self._publish_status()

    def _publish_status(self) -> None:
        if self.control:
            stats = self.control.stats
            self.status = replace(self.status, inferences=self.runner.inferences, swaps=stats.swaps,
                                  rollbacks=stats.rollbacks, deadline_misses=stats.deadline_misses, ticks=stats.ticks)
        self.status_pub.publish(ros_io.to_string_msg(self.status))

    def _report(self, message: str, error: bool = False) -> None:
        if error:  # rclpy wants one severity per call site
            self.get_logger().error(message)
        else:
            self.get_logger().info(message)
        self._last_event = message
        if error:
            self.status = replace(self.status, error=clip(message))
        self._publish_status()

    # -- control -----------------------------------------------------------------------------
    def _start_episode(self, task: str) -> None:
        try:
            self.control.start_episode(task)
            self.safety.reset()
            self.sync.forget_before(self._episode_start_ns)
            self.episode_running = True
            self.status = replace(self.status, error="")
        except PolicyInputError as err:
            self.episode_running = False
            self._report(f"not driving this episode: {err}", error=True)

    def _on_event(self, msg: String) -> None:
        try:
            event = parse_episode_event(msg.data)
        except MessageError as err:
            self.get_logger().warning(f"ignoring episode event: {err}", throttle_duration_sec=1.0)
            return
        if isinstance(event, EpisodeStart):
            self.task = event.task
            self._episode_start_ns = event.stamp_ns
            if self.control:
                self._start_episode(self.task)
        elif isinstance(event, EpisodeEnd):
            self.episode_running = False
            if self.runner is not None:
                self.status = replace(self.status, version=self.runner.manifest.version,
                                      bundle=str(self.runner.bundle.path))
            self._publish_status()

    def _on_engaged(self, msg: Bool) -> None:
        """When the operator hands back, plan afresh from where the robot now is (no jump back)."""
        if self._operator_engaged and not msg.data and self.control is not None:
            self.control.replan()
            self._report("operator released: replanning from the current observation")
        self._operator_engaged = bool(msg.data)

    def _on_image(self, camera: str, stamp: int, image: np.ndarray) -> None:
        self._callback_started = time.perf_counter()
        self._act(self.sync.add_image(camera, stamp, image))

    def _on_state(self, msg: JointState) -> None:
        self._callback_started = time.perf_counter()
        if not (self.active and self.episode_running):
            return
        stamp = ros_io.stamp_ns(msg.header)
        try:
            state = ros_io.values_by_name(msg, self.runner.manifest.state_names)
        except ValueError as err:
            self._hold(stamp, None, f"bad joint state: {err}")
            return
        if not np.all(np.isfinite(state)):
            self._hold(stamp, None, "joint state contains NaN or inf")
            return
        if self.sync.pending_stamp is not None:  # the last observation's frames never came
            self._hold_pending("before the next observation")
        observation = self.sync.add_state(stamp, state)
        if observation is None:  # frames of this moment are on their way: act when they land
            self._waiting_since = time.monotonic()
            return
        self._act(observation)

    def _watch_frames(self) -> None:
        """Watchdog: an observation whose frames do not arrive in time is answered with a hold."""
        if self.sync is None or self.sync.pending_stamp is None or not (self.active and self.episode_running):
            return
        wait = self._max_frame_wait
        if time.monotonic() - self._waiting_since > wait:
            self._hold_pending(f"within {wait * 1000:.0f} ms")

    def _hold_pending(self, when: str) -> None:
        stamp = self.sync.pending_stamp
        self.sync.drop_pending()  # answered now; frames arriving later must not answer it twice
        self._counts["stale_holds"] += 1
        self._hold(stamp, None, f"no frames from {self.sync.stale_cameras(stamp, 0)} {when}")

    def _hold(self, stamp: int, state, reason: str) -> None:
        command, _ = self.safety.hold(reason)
        self.get_logger().warning(f"holding: {reason}", throttle_duration_sec=1.0)
        self._publish_command(stamp, command)

    def _act(self, observation) -> None:
        if observation is None or not (self.active and self.episode_running):
            return
        stamp, state, images = observation
        result = self.control.tick(images, state)
        for event in result.events:
            self._report(event, error="failed" in event or "rejected" in event)
        if result.events and self.control.runner is not self.runner:  # swapped or rolled back
            self.runner = self.control.runner
            self._set_serving("serving")
        if result.action is None:
            command, event = self.safety.hold(result.reason)
        else:
            command, event = self.safety.filter(result.action, state)
        if event:
            self._counts["safety_events"] += 1
            self.get_logger().warning(f"safety: {event.reason}", throttle_duration_sec=1.0)
        self._publish_command(stamp, command, result.inline_ms)

    def _publish_command(self, stamp: int, command: np.ndarray, inline_ms: float = 0.0) -> None:
        self.command_pub.publish(ros_io.joint_state_msg(self.runner.manifest.action_names, command, stamp,
                                                        self.runner.bundle.label))
        self._command_sent.set()
        self._tick_times.append(time.monotonic())
        self._e2e_ms.append((self.get_clock().now().nanoseconds - stamp) / 1e6)
        # The runtime's own cost this tick: conversion, sync, scheduling, safety, publishing.
        self._work_ms.append((time.perf_counter() - self._callback_started) * 1000.0 - inline_ms)

    def _publish_diagnostics(self) -> None:
        if self.control is None:
            self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
                "policy_node: policy", self.get_name(), diagnostics.ERROR, self.status.error or "no bundle",
                {"state": self.status.state})]))
            return
        stats = self.control.stats
        now = time.monotonic()
        rate = sum(1 for t in self._tick_times if now - t <= 1.0)
        level, message = diagnostics.OK, self._last_event or "serving"
        if self.status.error:
            level, message = diagnostics.WARN, self.status.error
        values = {
            "state": self.status.state, "model": self.runner.bundle.label, "engine": self.runner.engine.name,
            "engine_note": self.runner.engine.fallback_reason, "rate_hz": float(rate),
            "inference_p50_ms": diagnostics.percentile(stats.inference_ms, 50),
            "inference_p99_ms": diagnostics.percentile(stats.inference_ms, 99),
            "e2e_p50_ms": diagnostics.percentile(self._e2e_ms, 50),
            "e2e_p99_ms": diagnostics.percentile(self._e2e_ms, 99),
            "tick_work_p50_ms": diagnostics.percentile(self._work_ms, 50),
            "tick_work_p99_ms": diagnostics.percentile(self._work_ms, 99),
            "ticks": stats.ticks, "deadline_misses": stats.deadline_misses, "holds": stats.holds,
            "stale_holds": self._counts["stale_holds"], "safety_events": self._counts["safety_events"],
            "swaps": stats.swaps, "rollbacks": stats.rollbacks,
        }
        self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
            "policy_node: policy", self.get_name(), level, message, values)]))
        self._publish_status()


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(PolicyNode())


if __name__ == "__main__":
    main()
