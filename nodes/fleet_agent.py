"""fleet_agent: uploads this robot's committed episodes to the workstation's ingest server.

A thin node around `robot_runtime.fleet.uploader.Uploader`, which runs in its own thread in this process
(never in the control loop's): the recorder's store is watched, each committed episode and each label
added later goes to the server over CURVE-encrypted ZeroMQ, and uploaded episodes are deleted only as the
retention parameters allow (by default never). Parameters are read once at start. Every second,
/diagnostics says how many episodes are stored on the server, pending and refused (with the reason), and
whether the server refuses this robot's key.
"""
from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from robot_runtime.episode import EpisodeError, EpisodeStore
from robot_runtime.fleet.keys import FleetKeyError
from robot_runtime.fleet.uploader import Retention, Uploader, UploaderConfig
from robot_runtime.nodes import diagnostics, ros_io
from robot_runtime.nodes.parameters import declare


class FleetAgentNode(Node):
    def __init__(self):
        super().__init__("fleet_agent")
        store_path = declare(self, "store_path", "episodes", "episode store to upload (the recorder's)", True)
        config = UploaderConfig(
            endpoint=declare(self, "server_endpoint", "tcp://127.0.0.1:5870",
                             "the ingest server, tcp://HOST:PORT (the workstation binds, robots connect)", True),
            key_file=declare(self, "key_file", "", "this robot's secret CURVE certificate (<robot>.key_secret)",
                             True),
            server_key_file=declare(self, "server_key_file", "",
                                    "the ingest server's public CURVE certificate (<server>.key)", True),
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
            reply_timeout_s=declare(self, "reply_timeout_s", 30.0,
                                    "seconds without an answer before the link counts as cut", True))
        self.problem = ""
        self.uploader: Uploader | None = None
        try:
            self.uploader = Uploader(EpisodeStore(store_path), config)
            self.uploader.start()
            self.get_logger().info(f"uploading {store_path} to {config.endpoint}")
        except (FleetKeyError, EpisodeError, OSError, ValueError) as err:
            self.problem = f"not uploading: {err}"
            self.get_logger().error(self.problem)
        self.diag_pub = self.create_publisher(DiagnosticArray, diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_timer(1.0, self._report)

    def _report(self) -> None:
        try:
            if self.uploader is None:
                level, message, values = diagnostics.ERROR, self.problem, {}
            else:
                status = self.uploader.status()
                level = diagnostics.ERROR if status.denied else diagnostics.WARN if status.refused \
                    else diagnostics.OK
                message = status.denied or (f"{len(status.refused)} refused" if status.refused else
                                            f"uploading {status.current}" if status.current else "idle")
                values = {"stored": status.stored, "pending": status.pending, "refused": len(status.refused),
                          "deleted": status.deleted, "mb_sent": status.bytes_sent / 1e6, "cuts": status.cuts,
                          "last_error": status.last_error,
                          **{f"refused/{k}": v for k, v in sorted(status.refused.items())[:10]}}
            self.diag_pub.publish(diagnostics.array(self, [diagnostics.status(
                "fleet_agent: uploads", self.get_name(), level, message, values)]))
        except Exception as err:  # a report must never take the node down
            self.get_logger().error(f"status report failed: {type(err).__name__}: {err}")

    def close(self) -> None:
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None


def main(args=None):
    rclpy.init(args=args)
    ros_io.spin_node(FleetAgentNode())


if __name__ == "__main__":
    main()
