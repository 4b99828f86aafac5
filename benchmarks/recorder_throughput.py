"""Capture throughput: three 224x224 cameras at 30 Hz and joint states at 100 Hz, over DDS into Zarr.

    python benchmarks/recorder_throughput.py --duration 60 --out benchmarks/results/recorder_throughput

The recorder node runs as its own process. This script plays the robot: joint
states every 10 ms, and at each 30 Hz control tick three camera frames (real
MetaWorld renders, cycled, so compression sees realistic images) plus the
executed command, in episodes of `--episode-seconds`. Afterwards it reads the
store back. Writes DIR/results.json: frames_sent, frames_written,
dropped_frames, episodes_short (each episode with fewer steps than sent: what the recorder counted as
incomplete steps, uncommanded observations and late messages), completed_in_grace (steps that were due
while a frame or state was still in flight, written whole once it came: the recorder's step_grace_s at
work) and late_messages (arrived after their step was written or given up), writer_realtime_factor
(the EpisodeWriter alone, in-process, on the same frames, relative to 30 Hz), mb_per_s (raw image data recorded per
second), disk_mb_per_s, compression_ratio (raw / on disk), cpu_percent (the
recorder process, of one core). `--codec`/`--quality` set the recorder's image_codec and
image_quality (the writer-alone figure uses the same codec).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cpu_load import cpu_hogs, driver_scheduling

from robot_runtime.capture.codecs import CODECS, CameraCodec
from robot_runtime.runtime.realtime import POLICIES

os.environ.setdefault("MUJOCO_GL", "egl")
CAMERAS = ("corner", "corner2", "gripperPOV")
SIZE, CAMERA_HZ, STATE_HZ = 224, 30.0, 100.0


def rendered_frames(count: int) -> list[dict[str, np.ndarray]]:
    """Frames of an expert push episode from three cameras, to cycle through."""
    from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig
    from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator

    robot = MetaWorldRobot(SimConfig(cameras=CAMERAS, image_size=SIZE, max_steps=count))
    operator = ScriptedOperator("push-v3", OperatorConfig(mode="demonstrate"))
    obs, frames = robot.reset(0), []
    while len(frames) < count:
        frames.append(obs.images)
        obs = robot.step(operator.step(obs.state)[1]) if not robot.success else robot.reset(len(frames))
    robot.close()
    return frames


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_alone(frames, steps: int, root: Path, codec) -> float:
    """Steps per second of the EpisodeWriter by itself on the same data."""
    from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
    from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

    layout = EpisodeLayout(dict.fromkeys(CAMERAS, (SIZE, SIZE)), STATE_NAMES, ACTION_NAMES)
    writer = EpisodeStore(root).writer(layout, EpisodeMetadata(task="bench", robot_id="bench", control_rate_hz=30),
                                       codecs=dict.fromkeys(CAMERAS, codec))
    state, action = np.zeros(len(STATE_NAMES), np.float32), np.zeros(len(ACTION_NAMES), np.float32)
    started = time.perf_counter()
    for i in range(steps):
        writer.append(Step(float(i), frames[i % len(frames)], state, action))
    writer.commit("success")
    return steps / (time.perf_counter() - started)


def run(duration: float, episode_seconds: float, out: Path, realtime: str = "off", codec=None) -> dict:
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from robot_runtime.bringup.launcher import GraphProcesses
    from robot_runtime.capture.disk_guard import tree_bytes
    from robot_runtime.episode import EpisodeStore
    from robot_runtime.messages import EpisodeEnd, EpisodeStart
    from robot_runtime.nodes import ros_io
    from robot_runtime.nodes.graph_client import GraphClient
    from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

    frames = rendered_frames(90)
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        tmp = Path(tmp)
        store_path = tmp / "store"
        graph = GraphProcesses("sim", {"recorder": {"store_path": str(store_path), "cameras": list(CAMERAS),
                                                    "image_size": SIZE, "calibration_file": "",
                                                    "realtime": realtime, "image_codec": codec.name,
                                                    "image_quality": -1 if codec.quality is None else codec.quality}},
                               log_dir=tmp / "logs", only=["recorder"]).start()
        client = GraphClient("recorder_bench")
        driver = driver_scheduling(realtime)
        node = client.node
        try:
            client.wait_for_graph(["recorder"], {ros_io.STATE_TOPIC: (0, 1)})
            image_pubs = {c: node.create_publisher(Image, ros_io.camera_topic(c), ros_io.STREAM_QOS) for c in CAMERAS}
            state_pub = node.create_publisher(JointState, ros_io.STATE_TOPIC, ros_io.STREAM_QOS)
            executed_pub = node.create_publisher(JointState, ros_io.ROBOT_EXECUTED_TOPIC, ros_io.STREAM_QOS)
            events = node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
            time.sleep(1.0)
            pid = graph.processes["recorder"].pid
            cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
            state = np.zeros(len(STATE_NAMES), np.float32)
            action = np.zeros(len(ACTION_NAMES), np.float32)
            frames_sent, episode_ids, tick, ticks_in_episode, sent_steps = 0, [], 0, 0, {}
            start = time.monotonic()
            next_state, next_tick, episode_end = start, start, start
            last_state_stamp, pending = 0, None
            while time.monotonic() - start < duration:
                now = time.monotonic()
                if now >= episode_end:
                    if episode_ids:  # the last tick's command, then the end, as a robot driver would
                        sent_steps[episode_ids[-1]] = ticks_in_episode
                        executed_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, action, pending, "policy"))
                        events.publish(ros_io.to_string_msg(EpisodeEnd(
                            episode_id=episode_ids[-1], reason="success", steps=ticks_in_episode, success=True)))
                    episode_ids.append(f"bench-{len(episode_ids)}")
                    events.publish(ros_io.to_string_msg(EpisodeStart(
                        episode_id=episode_ids[-1], task="bench", robot_id="bench", control_rate_hz=CAMERA_HZ,
                        stamp_ns=node.get_clock().now().nanoseconds)))
                    episode_end, ticks_in_episode, pending = now + episode_seconds, 0, None
                    last_state_stamp, next_state = 0, now  # the first step needs a state of this episode
                if now >= next_state:
                    last_state_stamp = node.get_clock().now().nanoseconds
                    state_pub.publish(ros_io.joint_state_msg(STATE_NAMES, state, last_state_stamp))
                    next_state += 1.0 / STATE_HZ
                if now >= next_tick and last_state_stamp:
                    if pending is not None:  # the robot reports what it applied for the previous tick
                        executed_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, action, pending, "policy"))
                    for camera in CAMERAS:
                        image_pubs[camera].publish(ros_io.image_msg(frames[tick % len(frames)][camera],
                                                                    last_state_stamp, camera))
                    frames_sent += len(CAMERAS)
                    pending, tick, ticks_in_episode = last_state_stamp, tick + 1, ticks_in_episode + 1
                    next_tick += 1.0 / CAMERA_HZ
                time.sleep(max(0.0, min(next_state, next_tick) - time.monotonic()))
            sent_steps[episode_ids[-1]] = ticks_in_episode
            executed_pub.publish(ros_io.joint_state_msg(ACTION_NAMES, action, pending, "policy"))
            events.publish(ros_io.to_string_msg(EpisodeEnd(episode_id=episode_ids[-1], reason="success",
                                                           steps=ticks_in_episode, success=True)))
            for episode_id in episode_ids:
                client.wait_for_commit(episode_id, 60)
            cpu = (cpu_seconds(pid) - cpu_start) / (time.monotonic() - wall_start) * 100
        finally:
            client.close()
            graph.stop()
        store = EpisodeStore(store_path)
        steps, short = 0, {}  # short: where frames went missing, and what the recorder saw of those steps
        assembly = dict.fromkeys(("completed_in_grace", "late_messages"), 0)
        for ep in store.episodes():
            steps += ep.steps
            for key in assembly:
                assembly[key] += ep.meta["extra"].get(key, 0)
            sent = sent_steps.get(ep.meta["episode_id"], 0)
            if ep.steps < sent:
                counts = {k: ep.meta["extra"].get(k)
                          for k in ("incomplete_steps", "uncommanded_observations", "late_messages")}
                short[ep.meta["episode_id"]] = {"sent": sent, "written": ep.steps, **counts}
        frames_written = steps * len(CAMERAS)
        raw = frames_written * SIZE * SIZE * 3
        disk = sum(tree_bytes(store.episodes_dir / eid / "images") for eid in store.episode_ids())
        factor = writer_alone(frames, int(CAMERA_HZ * 20), tmp / "writer", codec) / CAMERA_HZ
    return {"duration_s": duration, "cameras": len(CAMERAS), "image_size": SIZE, "camera_hz": CAMERA_HZ,
            "state_hz": STATE_HZ, "episodes": len(episode_ids), "frames_sent": frames_sent,
            "frames_written": frames_written, "dropped_frames": frames_sent - frames_written,
            "episodes_short": short, **assembly,
            "writer_realtime_factor": round(factor, 2), "mb_per_s": round(raw / 1e6 / duration, 2),
            "disk_mb_per_s": round(disk / 1e6 / duration, 2), "compression_ratio": round(raw / disk, 2),
            "cpu_percent": round(cpu, 1), "driver_scheduling": driver}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--episode-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the recorder (cpu_load.py)")
    parser.add_argument("--realtime", choices=POLICIES, default="off",
                        help="the recorder's scheduling (its `realtime` parameter), and the driver's this script plays")
    parser.add_argument("--codec", choices=CODECS, default="lossless", help="the recorder's image_codec")
    parser.add_argument("--quality", type=int, default=None, help="its image_quality (default: the codec's)")
    args = parser.parse_args(argv)
    codec = CameraCodec(args.codec, args.quality)
    args.out.mkdir(parents=True, exist_ok=True)
    with cpu_hogs(args.load):
        results = run(args.duration, args.episode_seconds, args.out, args.realtime, codec)
    results.update(load=args.load, realtime=args.realtime, load_average=os.getloadavg()[0], **codec.to_json())
    results["targets"] = {"zero_dropped_frames": results["dropped_frames"] == 0,
                          "writer_at_least_3x_realtime": results["writer_realtime_factor"] >= 3}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
