"""Camera frames between two processes over DDS, by frame size, with and without the shipped transport profile.

    python benchmarks/dds_frames.py --out benchmarks/results/dds_frames

A publisher process sends sensor_msgs/Image frames at `--rate` Hz for `--seconds` once it has matched
its subscriber, which runs as a second process and counts what arrives. Both start with the
environment a launcher gives its nodes: `shipped` (config/fastdds.xml, robot_runtime/bringup/transport.py)
or `fastdds_default` (no profile: Fast DDS's 512 KiB shared-memory segment). QoS: best effort, depth 5
(the sensor-data profile camera drivers publish with) unless `--reliable`. Same computer, so the
frames go through shared memory when they fit the publisher's segment.

DIR/results.json: per frame size and profile, frames sent and received in each repeat and the
median share delivered; `--sizes` takes WIDTHxHEIGHTxCHANNELS entries.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from robot_runtime.bringup.transport import PROFILE_VARIABLE, with_transport

SIZES = ("224x224x3", "640x480x1", "640x480x3", "1280x720x3", "1920x1080x3")
PROFILES = ("fastdds_default", "shipped")
MATCH_TIMEOUT_S = 20.0
QUIET_S = 2.0          # the subscriber stops this long after the last frame


def profile_environment(profile: str) -> dict[str, str]:
    """The environment both processes start with under `profile`."""
    env = {k: v for k, v in os.environ.items() if k != PROFILE_VARIABLE}
    return with_transport(env) if profile == "shipped" else env


def qos(reliable: bool):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data


def publish(size: str, rate: float, seconds: float, reliable: bool) -> None:
    """The publisher process: waits for a subscriber, sends the frames, prints how many."""
    import rclpy
    from sensor_msgs.msg import Image

    width, height, channels = (int(x) for x in size.split("x"))
    rclpy.init()
    node = rclpy.create_node("dds_frames_publisher")
    pub = node.create_publisher(Image, "dds_frames", qos(reliable))
    msg = Image(width=width, height=height, encoding="rgb8" if channels == 3 else "mono8", step=width * channels,
                data=bytes(width * height * channels))
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)   # the subscriber's side of discovery
    start, sent = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        msg.header.frame_id = str(sent)
        pub.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    time.sleep(1.0)   # let the last frames arrive before the participant goes
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def subscribe(seconds: float, reliable: bool) -> None:
    """The subscriber process: counts frames until `seconds` pass without one (after the first)."""
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_frames_subscriber")
    received, last = set(), [time.monotonic() + MATCH_TIMEOUT_S]

    def take(msg):
        received.add(msg.header.frame_id)
        last[0] = time.monotonic()

    node.create_subscription(Image, "dds_frames", take, qos(reliable))
    while time.monotonic() - last[0] < seconds:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"received": len(received)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def trial(size: str, profile: str, rate: float, seconds: float, reliable: bool) -> dict:
    """One publisher and one subscriber process under `profile`; frames sent and received."""
    env = profile_environment(profile)
    flags = ["--reliable"] if reliable else []
    me = [sys.executable, str(Path(__file__).resolve())]
    sub = subprocess.Popen([*me, "--role", "subscribe", "--seconds", str(QUIET_S), *flags], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pub = subprocess.run([*me, "--role", "publish", "--size", size, "--rate", str(rate), "--seconds",
                              str(seconds), *flags], env=env, capture_output=True, text=True,
                             timeout=seconds + MATCH_TIMEOUT_S + 30)
        out, _ = sub.communicate(timeout=MATCH_TIMEOUT_S + 30)
    finally:
        sub.kill()
    if pub.returncode != 0:
        raise RuntimeError(f"publisher of {size} under {profile} failed:\n{pub.stderr[-2000:]}")
    sent = json.loads(pub.stdout.strip().splitlines()[-1])["sent"]
    received = json.loads(out.strip().splitlines()[-1])["received"]
    return {"sent": sent, "received": received}


def measure(sizes, profiles, repeats: int, rate: float, seconds: float, reliable: bool) -> list[dict]:
    rows = []
    for size in sizes:
        width, height, channels = (int(x) for x in size.split("x"))
        for profile in profiles:
            trials = [trial(size, profile, rate, seconds, reliable) for _ in range(repeats)]
            counts = ", ".join(f"{t['received']}/{t['sent']}" for t in trials)
            share = statistics.median(t["received"] / t["sent"] for t in trials)
            rows.append({"size": size, "frame_bytes": width * height * channels, "profile": profile,
                         "trials": trials, "delivered_median": round(share, 3)})
            print(f"{size:>12} {width * height * channels / 1e6:6.2f} MB  {profile:<16} delivered "
                  f"{100 * share:5.1f}%  ({counts})", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), metavar="WxHxC")
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--seconds", type=float, default=6.0, help="publishing time per trial")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS instead of best effort")
    parser.add_argument("--role", choices=("publish", "subscribe"), help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "publish":
        return publish(args.size, args.rate, args.seconds, args.reliable)
    if args.role == "subscribe":
        return subscribe(args.seconds, args.reliable)
    if args.out is None:
        parser.error("--out is required")
    rows = measure(args.sizes, args.profiles, args.repeats, args.rate, args.seconds, args.reliable)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"rate_hz": args.rate, "seconds": args.seconds, "qos": "reliable" if args.reliable else "best_effort",
               "repeats": args.repeats, "load_average": round(os.getloadavg()[0], 2), "rows": rows}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
