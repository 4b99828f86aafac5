"""fleet_agent: this robot's link to the workstation: episodes go up, signed releases come down.

A thin node around two library threads in this process (never in the control loop's): the
`robot_runtime.fleet.uploader.Uploader` sends each committed episode of the recorder's store and each label
added later, deleting uploaded episodes only as the retention parameters allow (by default never); the
`robot_runtime.fleet.releases_client.ReleaseClient` polls for the release assigned to this robot, installs
it into the model store (`model_root`, signatures checked against `trust_dir`, fit checked against this
robot's cameras, state and action names and bounds) and reports the result. When the store's current
version changes, policy_node's `bundle_path` is set to it over its SetParameters service, only between
episodes (`releases_client.BundleSwitch` reads episode/events). An empty `server_endpoint` disables both:
the node idles and says so. Parameters are read once at start. Every second /diagnostics says how many
episodes are stored, pending and refused, the model store's state and any refusal, with the reason.
"""
from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from robot_runtime.episode import EpisodeError, EpisodeStore
from robot_runtime.fleet.keys import FleetKeyError
from robot_runtime.fleet.model_store import ModelStore, RobotDescription, StoreError, current_version
from robot_runtime.fleet.releases_client import BundleSwitch, ReleaseClient, ReleaseClientConfig
from robot_runtime.fleet.uploader import Retention, Uploader, UploaderConfig
from robot_runtime.messages import MessageError, parse_episode_event
from robot_runtime.nodes import diagnostics, ros_io
from robot_runtime.nodes.parameters import declare

# Before bundle_path is ever set, the latched episode events must have arrived: wait this long after an events
# publisher is first matched (or, with none, after start: then nothing runs episodes).
SETTLE_S = 3.0


class FleetAgentNode(Node):
    def __init__(self):
        super().__init__("fleet_agent")
        store_path = declare(self, "store_path", "episodes", "episode store to upload (the recorder's)", True)
        endpoint = declare(self, "server_endpoint", "tcp://127.0.0.1:5870",
                           "the ingest server, tcp://HOST:PORT (the workstation binds, robots connect); "
                           "empty: the agent is disabled", True)
        key_file = declare(self, "key_file", "", "this robot's secret CURVE certificate (<robot>.key_secret)", True)
        server_key_file = declare(self, "server_key_file", "",
                                  "the ingest server's public CURVE certificate (<server>.key)", True)
        reply_timeout_s = declare(self, "reply_timeout_s", 30.0,
                                  "seconds without an answer before the link counts as cut", True)
        self.nice = declare(self, "nice", 10, "CPU priority (Linux nice) of the upload and release threads: this "
                            "process yields the cores to the control loop's", True, low=0, high=19)
        config = UploaderConfig(
            endpoint=endpoint, key_file=key_file, server_key_file=server_key_file,
            chunk_size=declare(self, "chunk_size", 1 << 20, "bytes per upload chunk (the server caps it)", True),
            bandwidth_bytes_per_s=declare(self, "bandwidth_mb_per_s", 0.0,
                                          "upload cap in MB/s for metered links; 0 = uncapped", True) * 1e6,
            retention=Retention(
                max_age_hours=declare(self, "retention_max_age_hours", 0.0,
                                      "delete uploaded episodes committed longer ago than this; 0 = keep", True),
                max_store_mb=declare(self, "retention_max_store_mb", 0.0,
                                     "delete uploaded episodes, oldest first, above this store size; 0 = keep",
                                     True)),
            scan_interval_s=declare(self, "scan_interval_s", 2.0, "how often to look for new episodes", True),
            reply_timeout_s=reply_timeout_s, nice=self.nice)
        self.model_root = declare(self, "model_root", "", "the model store (versions/, current.json); "
                                  "empty: releases are not fetched", True)
        self.policy_node = declare(self, "policy_node", "policy_node", "the node whose bundle_path is set", True)
        self.problem = "disabled: no server_endpoint" if not endpoint else ""
        self.uploader: Uploader | None = None
        self.releases: ReleaseClient | None = None
        self.release_problem = ""
        self.switch = BundleSwitch()
        if endpoint:
            try:
                self.uploader = Uploader(EpisodeStore(store_path), config)
                self.uploader.start()
                self.get_logger().info(f"uploading {store_path} to {config.endpoint}")
            except (FleetKeyError, EpisodeError, OSError, ValueError) as err:
                self.problem = f"not uploading: {err}"
                self.get_logger().error(self.problem)
            if self.model_root:
                self._start_releases(endpoint, key_file, server_key_file, reply_timeout_s)
        self._started = self.get_clock().now()
        self._events_seen = None  # when an episode/events publisher was first matched
        self.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC, self._on_event, ros_io.LATCHED_QOS)
        self.param_client = self.create_client(SetParameters, f"{self.policy_node}/set_parameters")
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_timer(1.0, self._report)
        self.create_timer(0.5, self._maybe_switch)

    def _start_releases(self, endpoint: str, key_file: str, server_key_file: str, reply_timeout_s: float) -> None:
        cameras = declare(self, "cameras", [""], "this robot's camera names (the recorder's)", True)
        size = declare(self, "image_size", 224, "the cameras' image size (square, as the recorder stores it)", True)
        try:
            robot = RobotDescription(
                {c: (size, size) for c in cameras if c},
                tuple(declare(self, "state_names", [""], "state names this robot publishes", True)),
                tuple(declare(self, "action_names", [""], "actions this robot's driver accepts", True)),
                tuple(declare(self, "action_low", [0.0], "lower bound of each action", True)),
                tuple(declare(self, "action_high", [0.0], "upper bound of each action", True)))
            store = ModelStore(self.model_root, declare(self, "trust_dir", "", "trusted release public keys", True),
                               robot, declare(self, "keep_versions", 3, "versions kept on disk (>= 2)", True))
            self.releases = ReleaseClient(store, ReleaseClientConfig(
                endpoint, key_file, server_key_file,
                poll_interval_s=declare(self, "release_poll_s", 30.0, "how often to ask for this robot's release",
                                        True), reply_timeout_s=reply_timeout_s, nice=self.nice))
            self.releases.start()
        except (FleetKeyError, StoreError, OSError, ValueError) as err:
            self.release_problem = f"not fetching releases: {err}"
            self.get_logger().error(self.release_problem)

    def _on_event(self, msg: String) -> None:
        try:
            self.switch.on_event(parse_episode_event(msg.data))
        except MessageError as err:
            self.get_logger().warning(f"ignoring {err}", throttle_duration_sec=1.0)

    def _maybe_switch(self) -> None:
        """Point policy_node at the store's current version, between episodes only."""
        try:
            if self.releases is None or not self._settled():
                return
            path = self.switch.due(current_version(self.model_root))
            if path is None:
                return
            if not self.param_client.service_is_ready():
                return
            self.switch.sent(path)
            request = SetParameters.Request(parameters=[Parameter("bundle_path", value=path).to_parameter_msg()])
            self.param_client.call_async(request).add_done_callback(lambda f, path=path: self._switched(path, f))
        except Exception as err:  # a timer must never take the node down
            self.get_logger().error(f"bundle switch failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0)

    def _settled(self) -> bool:
        now = self.get_clock().now()
        if self._events_seen is None and self.count_publishers(ros_io.EPISODE_EVENTS_TOPIC):
            self._events_seen = now
        since = self._events_seen or self._started
        return (now - since).nanoseconds >= SETTLE_S * 1e9

    def _switched(self, path: str, future) -> None:
        try:
            result = future.result().results[0]
            self.switch.done(path, result.successful, result.reason)
            log = self.get_logger().info if result.successful else self.get_logger().error
            log(f"{self.policy_node} bundle_path {path}: {'set' if result.successful else result.reason}")
        except Exception as err:
            self.switch.done(path, None)
            self.get_logger().warning(f"setting bundle_path failed ({err}); trying again")

    def _report(self) -> None:
        try:
            statuses = [self._upload_status()]
            if self.releases is not None or self.release_problem:
                statuses.append(self._release_status())
            self.diag_pub.publish(diagnostics.array(self, statuses))
        except Exception as err:  # a report must never take the node down
            self.get_logger().error(f"status report failed: {type(err).__name__}: {err}")

    def _upload_status(self):
        if self.uploader is None:
            level = diagnostics.OK if self.problem.startswith("disabled") else diagnostics.ERROR
            return diagnostics.status("fleet_agent: uploads", self.get_name(), level, self.problem, {})
        status = self.uploader.status()
        level = diagnostics.ERROR if status.denied else diagnostics.WARN if status.refused else diagnostics.OK
        message = status.denied or (f"{len(status.refused)} refused" if status.refused else
                                    f"uploading {status.current}" if status.current else "idle")
        values = {"stored": status.stored, "pending": status.pending, "refused": len(status.refused),
                  "deleted": status.deleted, "mb_sent": status.bytes_sent / 1e6, "cuts": status.cuts,
                  "last_error": status.last_error,
                  **{f"refused/{k}": v for k, v in sorted(status.refused.items())[:10]}}
        return diagnostics.status("fleet_agent: uploads", self.get_name(), level, message, values)

    def _release_status(self):
        if self.releases is None:
            return diagnostics.status("fleet_agent: models", self.get_name(), diagnostics.ERROR,
                                      self.release_problem, {})
        status = self.releases.status()
        refused = status.refused or self.switch.refusal
        level = diagnostics.WARN if refused else diagnostics.OK
        message = refused or (f"downloading {status.downloading}" if status.downloading else
                              f"running {status.current}" if status.current else "no model installed")
        values = {"current": status.current, "sequence": status.sequence, "target": status.target,
                  "bundle_path": self.switch.applied, "bundle_path_refused": self.switch.refusal,
                  "last_result": status.last.reason if status.last else "", "last_error": status.last_error}
        return diagnostics.status("fleet_agent: models", self.get_name(), level, message, values)

    def close(self) -> None:
        workers = [w for w in (self.uploader, self.releases) if w is not None]
        for worker in workers:  # both asked first, so their waits overlap instead of adding up
            worker.request_stop()
        for worker in workers:
            worker.stop()
        self.uploader = self.releases = None


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(FleetAgentNode())


if __name__ == "__main__":
    main()
