"""Release fan-out: how long one signed release takes to reach N robots and become current on each.

`robot-runtime-ingest` runs as its own process on loopback with CURVE; N robots are ReleaseClients in
threads of this process, each with its own key and model store (real ModelStore.install: copy, fsync,
signature and hash checks). The release is the tests' reference bundle plus a `--payload-mb` weights file.
Time runs from `Deployments.assign` to the last robot's store reporting the release current; every robot
polls every `--poll-s`, so the figure includes up to one poll interval of waiting.

    python benchmarks/release_fanout.py --robots 1 4 16 --payload-mb 32 --out benchmarks/results/release_fanout
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from robot_runtime.bundle import write_bundle
from robot_runtime.episode import EpisodeLayout
from robot_runtime.fleet import keys
from robot_runtime.fleet.model_store import ModelStore, RobotDescription
from robot_runtime.fleet.releases import sign_bundle
from robot_runtime.fleet.releases_client import ReleaseClient, ReleaseClientConfig
from robot_runtime.improvement_loop.fleet.deployments import Deployments
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

from bundle_factory import make_reference_bundle

ROBOT = RobotDescription.from_layout(
    EpisodeLayout(cameras={"corner": (96, 96), "gripperPOV": (96, 96)}, state_names=STATE_NAMES,
                  action_names=ACTION_NAMES), action_low=[-1.0] * 4, action_high=[1.0] * 4)


def fan_out(root: Path, robots: int, payload_mb: float, poll_s: float, port: int) -> dict:
    for name in [f"r{i}" for i in range(robots)]:
        keys.create_curve_certificate(root / "robots", name)
    server_public, server_secret = keys.create_curve_certificate(root / "server", "ingest")
    keys.create_release_key(root / "release", "nightly")
    trust = root / "trust"
    trust.mkdir()
    shutil.copy(root / "release" / "nightly.release.pub", trust)
    small = make_reference_bundle(root / "small", version="v1")
    payload = root / "weights.bin"
    payload.write_bytes(np.random.default_rng(0).integers(0, 256, int(payload_mb * 1e6), np.uint8).tobytes())
    release = root / "release-v1"
    write_bundle(release, small.manifest, {"policy.onnx": small.policy_path, "weights.bin": payload})
    sign_bundle(release, root / "release" / "nightly.release.pem", 1)
    size = sum(p.stat().st_size for p in release.iterdir())
    server = subprocess.Popen([sys.executable, "-m", "robot_runtime.improvement_loop.fleet.ingest",
                               "--store", str(root / "fleet"), "--robots", str(root / "robots"),
                               "--server-key", str(server_secret), "--bind", f"tcp://127.0.0.1:{port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    clients = []
    try:
        assert server.stdout.readline().startswith("listening"), "ingest server did not start"
        clients = [ReleaseClient(ModelStore(root / f"robot{i}" / "models", trust, ROBOT), ReleaseClientConfig(
            f"tcp://127.0.0.1:{port}", str(root / "robots" / f"r{i}.key_secret"), str(server_public),
            poll_interval_s=poll_s, reply_timeout_s=60.0)) for i in range(robots)]
        for client in clients:
            client.start()
        time.sleep(2 * poll_s)  # every robot has polled (and found nothing) once
        deployments = Deployments(root / "fleet" / "catalog.sqlite")
        started = time.monotonic()
        deployments.assign(release, [f"r{i}" for i in range(robots)], "benchmark")
        arrived = {}
        while len(arrived) < robots and time.monotonic() - started < 600:
            for i, client in enumerate(clients):
                if i not in arrived and client.status().current == "reference-v1":
                    arrived[i] = time.monotonic() - started
            time.sleep(0.01)
        reported = sum(s.current == "reference-v1" for s in deployments.robot_states().values())
        deployments.close()
    finally:
        for client in clients:
            client.stop()
        server.terminate()
        server.wait(10)
    times = sorted(arrived.values())
    return {"robots": robots, "installed": len(times), "reported": reported, "release_mb": size / 1e6,
            "first_s": round(times[0], 3) if times else None, "all_s": round(times[-1], 3) if times else None,
            "aggregate_mb_per_s": round(size * len(times) / 1e6 / times[-1], 1) if times else None,
            "poll_s": poll_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--payload-mb", type=float, default=32.0, help="weights file added to the bundle")
    parser.add_argument("--poll-s", type=float, default=0.2)
    parser.add_argument("--port", type=int, default=5871)
    parser.add_argument("--out", default="", help="write DIR/results.json")
    args = parser.parse_args()
    results = []
    for n in args.robots:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(fan_out(Path(tmp), n, args.payload_mb, args.poll_s, args.port))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps({"fanout": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
