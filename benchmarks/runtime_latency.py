"""Runtime latency on this machine: the bare engine vs the policy node over DDS, and a hot swap.

    python benchmarks/runtime_latency.py --duration 600 --out benchmarks/results/runtime_latency
    python benchmarks/runtime_latency.py --candidates 8 --duration 600 --out benchmarks/results/runtime_latency_k8

Builds the reference policy (the product's VLA: two 96x96 cameras, 21 state
entries, 10-step flow-matching head with CFG and real-time-chunking guidance
inside the graph, untrained weights: the compute does not depend on
training), then:
  1. engine: the bare `engine.run` on fixed inputs, many times;
  2. runtime: policy_node as its own process; this script plays the robot,
     publishing frames + joint states at `--rate` Hz and timing each command that
     comes back on `policy/command`; halfway through it sets `bundle_path` to a
     second bundle (hot swap) and counts ticks left without a command in time.
Writes DIR/results.json with engine_p50_ms, engine_p99_ms, e2e_p50_ms,
e2e_p99_ms (observation published -> command published, as the policy node
stamps it; `roundtrip_*` adds the return hop), tick_jitter_p99_ms, tick_work_p50_ms
(the node's own work per tick, the runtime overhead), deadline_misses, ticks,
swap_missed_ticks, engine and model.

`--candidates K` (K > 1) measures value-guided execution: the bundles also carry the
product's chunk critic (models/critic.py, untrained) as value.onnx, policy_node runs with
`value_guided` and `value_candidates: K`, and the engine figures are one batched policy call
of K rows plus the critic's call on them (`policy_engine_*`, `critic_*` apart), which is
what each inference then costs; the runtime overhead stays the node's own per-tick work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from cpu_load import cpu_hogs, driver_scheduling

from robot_runtime.runtime.realtime import POLICIES

os.environ.setdefault("MUJOCO_GL", "egl")


def reference_bundle(path: Path, version: str, seed: int, critic: bool = False) -> Path:
    """The product's VLA architecture with untrained weights, exported through the real exporter
    (with `critic`, the chunk critic too, as value.onnx)."""
    import torch

    from robot_runtime.bundle import Camera, Manifest, Normalization
    from robot_runtime.improvement_loop.models.critic import ChunkCritic
    from robot_runtime.improvement_loop.models.export import export_bundle
    from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
    from robot_runtime.improvement_loop.models.policy import VLAPolicy
    from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, instruction_for

    torch.manual_seed(seed)
    cameras = [("corner", 96, 96), ("gripperPOV", 96, 96)]
    spec = InputSpec(cameras=tuple(cameras), state_dim=len(STATE_NAMES), action_dim=len(ACTION_NAMES),
                     chunk_length=10)
    policy = VLAPolicy(spec, NetConfig())
    tasks = [instruction_for("push-v3")]
    s, a = len(STATE_NAMES), len(ACTION_NAMES)
    manifest = Manifest(
        model_id="reference", version=version, cameras=[Camera(*c) for c in cameras],
        state_names=list(STATE_NAMES), action_names=list(ACTION_NAMES), action_low=[-1.0] * a,
        action_high=[1.0] * a, chunk_length=10, control_rate_hz=50.0, tasks=tasks,
        normalization=Normalization([0.0] * s, [1.0] * s, [0.0] * a, [1.0] * a),
        conditioning_mode="advantage", beta=1.5, realtime_chunking=True)
    task_table = np.random.default_rng(seed).normal(size=(1, 384)).astype(np.float32)
    chunk_critic = ChunkCritic(spec, NetConfig()) if critic else None
    return export_bundle(policy, task_table, manifest, path, critic=chunk_critic).path


def percentiles(values, *qs) -> list[float]:
    return [round(float(np.percentile(values, q)), 3) if len(values) else None for q in qs]


def bench_engine(bundle_path: Path, seconds: float, candidates: int = 1) -> dict:
    """The bare engine calls of one inference: the policy graph at batch `candidates`, and with K > 1 the
    critic's call on its output (engine_* is their sum per inference)."""
    from robot_runtime.runtime.guidance import ValueGuidance
    from robot_runtime.runtime.policy import PolicyRunner

    runner = PolicyRunner.load(bundle_path, "auto", guidance=ValueGuidance(candidates > 1, candidates))
    runner.select_task(runner.manifest.tasks[0])
    feeds = {t.name: np.zeros(t.shape_for(candidates), t.dtype) for t in runner.manifest.graph_inputs()}
    feeds["beta"] = np.array(1.5, np.float32)
    observation = {t.name: feeds[t.name] for t in runner.manifest.value_inputs() if t.name in feeds}
    total, policy, critic = [], [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        actions = runner.engine.run(feeds)["actions"]
        between = time.perf_counter()
        if runner.critic is not None:
            runner.critic.run({**observation, "actions": actions})
        done = time.perf_counter()
        total.append((done - started) * 1000)
        policy.append((between - started) * 1000)
        critic.append((done - between) * 1000)
    p50, p99 = percentiles(total, 50, 99)
    figures = {"engine": runner.engine.name, "engine_p50_ms": p50, "engine_p99_ms": p99, "engine_calls": len(total),
               "candidates": runner.candidates}
    if runner.critic is not None:
        figures.update(zip(("policy_engine_p50_ms", "policy_engine_p99_ms"), percentiles(policy, 50, 99)))
        figures.update(zip(("critic_p50_ms", "critic_p99_ms"), percentiles(critic, 50, 99)))
    return figures


def bench_runtime(bundle: Path, second: Path, duration: float, rate: float, log_dir: Path,
                  realtime: str = "off", candidates: int = 1) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from robot_runtime.bringup.launcher import GraphProcesses
    from robot_runtime.messages import EpisodeStart
    from robot_runtime.nodes import ros_io
    from robot_runtime.nodes.graph_client import GraphClient
    from robot_runtime.sim.metaworld_robot import STATE_NAMES, instruction_for

    params = {"bundle_path": str(bundle), "threads": 1, "realtime": realtime,
              **({"value_guided": True, "value_candidates": candidates} if candidates > 1 else {})}
    graph = GraphProcesses("sim", {"policy_node": params}, log_dir=log_dir, only=["policy_node"]).start()
    client = GraphClient("latency_bench")
    driver = driver_scheduling(realtime)
    node = client.node
    arrivals: dict[int, float] = {}
    diag: dict = {}
    lock = threading.Lock()

    def on_command(msg):
        now = time.monotonic_ns()
        with lock:
            arrivals.setdefault(ros_io.stamp_ns(msg.header), now)

    def on_diag(msg):
        for status in msg.status:
            if status.name.startswith("policy_node"):
                diag.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(JointState, ros_io.POLICY_COMMAND_TOPIC, on_command, ros_io.STREAM_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    try:
        client.wait_for_graph(["policy_node"], {ros_io.STATE_TOPIC: (0, 1), ros_io.POLICY_COMMAND_TOPIC: (1, 1)})
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 60, "the policy to serve")
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        image_pubs = {c: node.create_publisher(Image, ros_io.camera_topic(c), ros_io.STREAM_QOS)
                      for c in ("corner", "gripperPOV")}
        state_pub = node.create_publisher(JointState, ros_io.STATE_TOPIC, ros_io.STREAM_QOS)
        events = node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
        time.sleep(1.0)
        events.publish(ros_io.to_string_msg(EpisodeStart(
            episode_id="latency", task=instruction_for("push-v3"), robot_id="bench", control_rate_hz=rate,
            stamp_ns=node.get_clock().now().nanoseconds)))
        time.sleep(0.5)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]
        sent: list[tuple[int, int]] = []  # (stamp, monotonic publish time)
        period_ns = int(1e9 / rate)
        start = time.monotonic_ns()
        swap_at = start + int(duration * 0.5e9)
        swap_window: tuple[int, int] | None = None
        k = 0
        while time.monotonic_ns() - start < duration * 1e9:
            target = start + k * period_ns
            while time.monotonic_ns() < target:
                time.sleep(max(0.0, (target - time.monotonic_ns()) / 1e9 - 0.0005))
            stamp = node.get_clock().now().nanoseconds
            published = time.monotonic_ns()
            for i, (camera, pub) in enumerate(image_pubs.items()):
                pub.publish(ros_io.image_msg(frames[(k + i) % 4], stamp, camera))
            state_pub.publish(ros_io.joint_state_msg(STATE_NAMES, rng.normal(0, 0.1, len(STATE_NAMES)), stamp))
            sent.append((stamp, published))
            k += 1
            if swap_window is None and time.monotonic_ns() >= swap_at:
                swap_started = len(sent)
                threading.Thread(target=client.set_parameters, args=("policy_node", {"bundle_path": str(second)}),
                                 daemon=True).start()
                swap_window = (swap_started, None)
        time.sleep(0.5)
        status = dict(client.policy_status)
        time.sleep(1.2)  # one more diagnostics period
    finally:
        client.close()
        graph.stop()
    with lock:
        got = dict(arrivals)
    roundtrip, late = [], []
    for stamp, published in sent:
        if stamp in got:
            roundtrip.append((got[stamp] - published) / 1e6)
        in_time = stamp in got and got[stamp] - published <= period_ns
        late.append(not in_time)
    arrival_times = sorted(got.values())
    jitter = [abs((b - a) - period_ns) / 1e6 for a, b in zip(arrival_times, arrival_times[1:])]
    swap_from = swap_window[0] if swap_window else len(sent)
    swap_slice = late[swap_from: swap_from + int(5 * rate)]  # the 5 s after the swap was requested
    rt50, rt99 = percentiles(roundtrip, 50, 99)
    return {
        "rate_hz": rate, "duration_s": duration, "ticks": len(sent), "answered": len(got),
        "missed_ticks": int(sum(late)), "swap_missed_ticks": int(sum(swap_slice)),
        "swapped_to": status.get("version"), "swaps": status.get("swaps"),
        "deadline_misses": status.get("deadline_misses"),
        "e2e_p50_ms": float(diag.get("e2e_p50_ms", "nan")), "e2e_p99_ms": float(diag.get("e2e_p99_ms", "nan")),
        "tick_work_p50_ms": float(diag.get("tick_work_p50_ms", "nan")),
        "tick_work_p99_ms": float(diag.get("tick_work_p99_ms", "nan")),
        "roundtrip_p50_ms": rt50, "roundtrip_p99_ms": rt99,
        "tick_jitter_p99_ms": percentiles(jitter, 99)[0], "node_inference_p50_ms": float(diag.get("inference_p50_ms",
                                                                                                 "nan")),
        "node_engine": diag.get("engine"), "model": diag.get("model"), "driver_scheduling": driver,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of 50 Hz control")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--engine-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the runtime (cpu_load.py)")
    parser.add_argument("--candidates", type=int, default=1,
                        help="K > 1: value-guided execution, K chunks per inference ranked by the bundle's critic")
    parser.add_argument("--realtime", choices=POLICIES, default="off",
                        help="policy_node's scheduling (its `realtime` parameter), and the driver's this script plays")
    args = parser.parse_args(argv)
    from robot_runtime.runtime.guidance import MAX_CANDIDATES

    if not 1 <= args.candidates <= MAX_CANDIDATES:
        parser.error(f"--candidates must be from 1 to {MAX_CANDIDATES}, got {args.candidates}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        tmp = Path(tmp)
        guided = args.candidates > 1
        first = reference_bundle(tmp / "reference-a", "a", 0, guided)
        second = reference_bundle(tmp / "reference-b", "b", 1, guided)
        engine = bench_engine(first, args.engine_seconds, args.candidates)  # the bare engine, before any load
        with cpu_hogs(args.load):
            runtime = bench_runtime(first, second, args.duration, args.rate, tmp / "logs", args.realtime,
                                    args.candidates)
        results = {**engine, **runtime, "load": args.load, "realtime": args.realtime,
                   "load_average": os.getloadavg()[0]}
    results["targets"] = {
        "overhead_p50_le_1ms": results["tick_work_p50_ms"] <= 1.0,
        "e2e_p99_le_2x_engine_p99_plus_2ms": results["e2e_p99_ms"] <= 2 * results["engine_p99_ms"] + 2,
        "zero_deadline_misses": results["deadline_misses"] == 0,
        "zero_swap_missed_ticks": results["swap_missed_ticks"] == 0,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
