"""robot-runtime-calibrate, the console script: the calibration CLI (robot_runtime.calibration.cli) with live
collection of board views from a camera topic (sensor_msgs/Image, any driver encoding) over ROS 2.

Frames are taken as they come (best effort, the latest only: detection is slower than a camera's rate) and
handed to the collector, which keeps a frame when the board has moved and prints what coverage still lacks.
"""
from __future__ import annotations

import sys
import time

import rclpy
from sensor_msgs.msg import Image

from robot_runtime.calibration import cli
from robot_runtime.calibration.views import ViewCollector
from robot_runtime.nodes import images, ros_io


def collect_from_topic(topic: str, collector: ViewCollector, timeout_s: float) -> None:
    """Feed `collector` the frames of `topic` until it has its views and coverage, or `timeout_s` passes."""
    rclpy.init(args=None)
    node = rclpy.create_node("calibrate")
    latest: list[Image] = []

    def on_frame(msg: Image) -> None:
        latest[:] = [msg]

    node.create_subscription(Image, topic, on_frame, ros_io.SENSOR_QOS)
    print(f"collecting {collector.views_wanted} views from {topic}: hold the board in view and move it between "
          "views, to every part of the image and tilted each way", flush=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not collector.done and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
            if latest:
                msg = latest.pop()
                try:
                    frame = images.rgb_from_image(msg, (msg.height, msg.width))
                except images.ImageError as err:
                    node.get_logger().warning(f"dropping frame: {err}", throttle_duration_sec=1.0)
                    continue
                collector.add(frame)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, live=collect_from_topic)


if __name__ == "__main__":
    sys.exit(main())
