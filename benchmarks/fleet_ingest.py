"""Fleet ingest: N robot processes upload their episodes to one ingest server on loopback, CURVE on.

    python benchmarks/fleet_ingest.py --robots 4 --episodes 6 --out benchmarks/results/fleet_ingest/n4

Each robot's store holds `--episodes` episodes of the recorder benchmark's shape: three 224x224 cameras at
30 Hz with MetaWorld's state and action names, `--episode-seconds` long, frames synthetic but compressing like
its renders (~3.3x). The server is `robot-runtime-ingest` in its own process; each robot is a process running
the fleet agent's `Uploader` (1 MiB chunks, nice 10 as in the node) from the same instant. Afterwards the
fleet store is checked against what the robots hold. Writes DIR/results.json: robots, episodes_sent,
episodes_stored, lost, duplicated (same content stored twice), mb_per_s (episode bytes stored per second of
wall time), episode_latency_p50_s / _p99_s (offer to `stored`, per episode), server_cpu_percent (of one core),
raw_copy_mb_per_s (the same files copied, hashed and fsynced on this disk: the physical limit here) and
robot_days_per_hour (robots recording 24 h at the recorder benchmark's 4 MB/s on disk). With
`--jitter-seconds`, also a 50 Hz loop's tick lateness in this process: idle, beside a busy uploader process
(the fleet agent's way) and beside a busy uploader thread in the loop's own process (the worst case).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CAMERAS, SIZE, RATE_HZ = ("corner", "corner2", "gripperPOV"), 224, 30.0
RECORDER_DISK_MB_PER_S = 4.0  # benchmarks/results/recorder_throughput: disk_mb_per_s
JITTER_EPISODES = 16  # per condition: ~5 s of uploading at this machine's rate


def write_episode(args: tuple[str, str, str, int, int]) -> int:
    """One synthetic episode (tiles that move, a band of noise: ~3.3x compression); returns its bytes."""
    from robot_runtime.capture.disk_guard import tree_bytes
    from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
    from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

    root, robot, episode_id, steps, seed = args
    rng = np.random.default_rng(seed)
    layout = EpisodeLayout(dict.fromkeys(CAMERAS, (SIZE, SIZE)), STATE_NAMES, ACTION_NAMES)
    writer = EpisodeStore(root).writer(layout, EpisodeMetadata(task="push the puck to the goal", robot_id=robot,
                                                               control_rate_hz=RATE_HZ, episode_id=episode_id))
    tiles = [np.repeat(np.repeat(rng.integers(0, 256, (SIZE // 16, SIZE // 16, 3), np.uint8), 16, 0), 16, 1)
             for _ in CAMERAS]
    state, action = np.zeros(len(STATE_NAMES), np.float32), np.zeros(len(ACTION_NAMES), np.float32)
    for t in range(steps):
        images = {}
        for camera, tile in zip(CAMERAS, tiles):
            frame = np.roll(tile, t, axis=1)
            frame[SIZE // 2:SIZE // 2 + 64] = rng.integers(0, 256, (64, SIZE, 3), np.uint8)
            images[camera] = frame
        writer.append(Step(t / RATE_HZ, images, state, action, intervention=t % 10 == 0))
    return tree_bytes(writer.commit("success"))


def raw_copy_mb_per_s(stores: list[Path], scratch: Path) -> float:
    """Every episode file read, hashed, written and fsynced, as the ingest server must at least do."""
    from robot_runtime.files import fsync_tree

    total, started = 0, time.perf_counter()
    for store in stores:
        for episode in sorted((store / "episodes").iterdir()):
            target = scratch / store.name / episode.name
            for path in sorted(p for p in episode.rglob("*") if p.is_file()):
                data = path.read_bytes()
                hashlib.sha256(data).digest()
                out = target / path.relative_to(episode)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                total += len(data)
            fsync_tree(target)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return total / 1e6 / elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def robot(store: str, endpoint: str, key: str, server_key: str, out: str, go: str) -> None:
    """One robot process: upload everything from the instant `go` appears, then write what it saw."""
    from robot_runtime.episode import EpisodeStore
    from robot_runtime.fleet.uploader import Uploader, UploaderConfig

    episodes = EpisodeStore(store)
    uploader = Uploader(episodes, UploaderConfig(endpoint, key, server_key, reply_timeout_s=120.0, nice=10))
    while not os.path.exists(go):
        time.sleep(0.005)
    uploader.start()  # its own thread, as in the fleet agent
    while uploader.status().stored < len(episodes.episode_ids()):
        time.sleep(0.01)
    status = uploader.status()
    uploader.stop()
    Path(out).write_text(json.dumps({"done_at": time.time(), "stored": status.stored, "refused": status.refused,
                                     "cuts": status.cuts, "last_error": status.last_error,
                                     "latencies_s": [s for _, s, _ in status.uploads]}))


def tick_lateness_ms(busy) -> list[float]:
    """A 50 Hz loop (a little numpy per tick) while `busy()`; how late each tick woke, in ms."""
    period, late, work = 0.02, [], np.eye(64, dtype=np.float32)
    deadline = time.perf_counter() + period
    while busy():
        time.sleep(max(0.0, deadline - time.perf_counter()))
        late.append((time.perf_counter() - deadline) * 1e3)
        work = work @ work
        deadline += period
    return late


def jitter(root: Path, endpoint: str, keys: dict, seconds: float, steps: int, server_pid: int) -> dict:
    """Tick lateness of a 50 Hz loop in this process: idle, beside an uploader process (the fleet agent's way),
    and beside an uploader thread in this very process (the worst case), each while the upload runs. The
    server stands in for the workstation, which a robot does not share its cores with: every thread of it is
    reniced to 19 first, so it takes what the robot side leaves."""
    from robot_runtime.episode import EpisodeStore
    from robot_runtime.fleet.uploader import Uploader, UploaderConfig

    for task in Path(f"/proc/{server_pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), 19)

    stores = {mode: root / f"jitter-{mode}" for mode in ("process", "thread")}
    with Pool(2) as pool:
        pool.map(write_episode, [(str(store), "jitter", f"jitter-{mode}-ep{i}", steps, 10_000 + i)
                                 for mode, store in stores.items() for i in range(JITTER_EPISODES)])
    os.sync()
    end = time.perf_counter() + seconds
    idle = tick_lateness_ms(lambda: time.perf_counter() < end)
    go = root / "go-jitter"
    worker = subprocess.Popen([sys.executable, __file__, "--robot", str(stores["process"]), endpoint, keys["jitter"],
                               keys["server"], str(root / "jitter-process.json"), str(go)])
    time.sleep(3.0)
    go.touch()
    beside_process = tick_lateness_ms(lambda: worker.poll() is None)
    uploader = Uploader(EpisodeStore(stores["thread"]), UploaderConfig(endpoint, keys["jitter"], keys["server"]))
    uploader.start()
    beside_thread = tick_lateness_ms(lambda: uploader.status().stored < JITTER_EPISODES)
    uploader.stop()

    def stats(late):
        return {"p50": round(float(np.percentile(late, 50)), 2), "p99": round(float(np.percentile(late, 99)), 2),
                "max": round(max(late), 2), "ticks": len(late)}
    return {"control_loop_lateness_ms": {"idle": stats(idle), "uploader_process": stats(beside_process),
                                         "uploader_thread_same_process": stats(beside_thread)}}


def run(robots: int, episodes: int, steps: int, jitter_seconds: float, work: Path) -> dict:
    from robot_runtime.fleet.keys import create_curve_certificate
    from robot_runtime.improvement_loop.fleet.catalog import Catalog

    load = os.getloadavg()[0]  # other work on the machine shows in every figure below
    names = [f"bench{i:02d}" for i in range(robots)]
    server_public, server_secret = create_curve_certificate(work / "keys" / "server", "ingest")
    keys = {"server": str(server_public)}
    for name in [*names, "jitter"]:
        keys[name] = str(create_curve_certificate(work / "keys" / "robots", name)[1])
    jobs = [(str(work / name), name, f"{name}-ep{k:03d}", steps, i * 1000 + k)
            for i, name in enumerate(names) for k in range(episodes)]
    with Pool(2) as pool:
        sizes = pool.map(write_episode, jobs)
    os.sync()  # the episodes' writeback must not land on either measurement
    raw = raw_copy_mb_per_s([work / n for n in names], work / "raw-copy")
    os.sync()

    port = 20000 + os.getpid() % 20000
    server = subprocess.Popen([sys.executable, "-m", "robot_runtime.improvement_loop.fleet.ingest", "--store",
                               str(work / "fleet"), "--robots", str(work / "keys" / "robots"), "--server-key",
                               str(server_secret), "--bind", f"tcp://127.0.0.1:{port}"],
                              stdout=subprocess.PIPE, stderr=open(work / "server.log", "w"), text=True)
    assert server.stdout.readline().startswith("listening"), f"server did not start: see {work / 'server.log'}"
    endpoint, go = f"tcp://127.0.0.1:{port}", work / "go"
    workers = [subprocess.Popen([sys.executable, __file__, "--robot", str(work / n), endpoint, keys[n], keys["server"],
                                 str(work / f"{n}.json"), str(go)]) for n in names]
    time.sleep(3.0)  # every robot process imported and holds its keys
    cpu_before, started = cpu_seconds(server.pid), time.time()
    go.touch()
    for worker in workers:
        worker.wait()
    reports = [json.loads((work / f"{n}.json").read_text()) for n in names]
    elapsed = max(r["done_at"] for r in reports) - started
    server_cpu = (cpu_seconds(server.pid) - cpu_before) / elapsed * 100
    extra = jitter(work, endpoint, keys, jitter_seconds, steps, server.pid) if jitter_seconds > 0 else {}
    server.terminate()
    server.wait(30)

    stored = {row.episode_id: row.content_sha256 for row in Catalog(work / "fleet" / "catalog.sqlite").rows()}
    sent = {job[2] for job in jobs}
    latencies = [s for r in reports for s in r["latencies_s"]]
    mb_per_s = sum(sizes) / 1e6 / elapsed
    return {
        "robots": robots, "episodes_sent": len(sent), "episodes_stored": len(sent & set(stored)),
        "lost": len(sent - set(stored)), "duplicated": len(stored) - len(set(stored.values())),
        "refused": sum(len(r["refused"]) for r in reports), "cuts": sum(r["cuts"] for r in reports),
        "errors": sorted({r["last_error"] for r in reports if r["last_error"]}),
        "episode_mb": round(sum(sizes) / len(sizes) / 1e6, 1), "total_mb": round(sum(sizes) / 1e6, 1),
        "duration_s": round(elapsed, 1), "mb_per_s": round(mb_per_s, 1),
        "episode_latency_p50_s": round(float(np.percentile(latencies, 50)), 2),
        "episode_latency_p99_s": round(float(np.percentile(latencies, 99)), 2),
        "server_cpu_percent": round(server_cpu, 1), "raw_copy_mb_per_s": round(raw, 1),
        "ingest_over_raw_copy": round(mb_per_s / raw, 2),
        "robot_days_per_hour": round(mb_per_s * 3600 / (RECORDER_DISK_MB_PER_S * 86400), 2),
        "cores": os.cpu_count(), "load_average_before": round(load, 2), **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per robot")
    parser.add_argument("--episode-seconds", type=float, default=10.0)
    parser.add_argument("--jitter-seconds", type=float, default=0.0, help="also measure a 50 Hz loop's jitter")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--robot", nargs=6, help=argparse.SUPPRESS)  # internal: one robot process
    args = parser.parse_args()
    if args.robot:
        robot(*args.robot)
        return
    if args.out is None:
        parser.error("--out DIR is required")
    with tempfile.TemporaryDirectory(prefix="fleet-ingest-") as work:
        results = run(args.robots, args.episodes, int(args.episode_seconds * RATE_HZ), args.jitter_seconds,
                      Path(work))
    results["targets"] = {"zero_lost": results["lost"] == 0, "zero_duplicated": results["duplicated"] == 0,
                          "ingest_at_least_0.3x_raw_copy": results["ingest_over_raw_copy"] >= 0.3}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
