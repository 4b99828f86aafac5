"""A fleet's catalog as the page finds it after ten nights, built through the real writers: tiny real episodes in
a real EpisodeStore cataloged with `row_for`, signed releases assigned and reported through `Deployments`, and
the daemon's cycles and decisions through `daemon.records`. Also makes docs/fleet_page.png:

    .venv/bin/python tests/improvement_loop/page/page_world.py --screenshot docs/fleet_page.png
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "support"))

from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step  # noqa: E402
from robot_runtime.fleet import keys  # noqa: E402
from robot_runtime.fleet.protocol import content_sha256, describe_episode  # noqa: E402
from robot_runtime.fleet.releases import sign_bundle, sign_rollback  # noqa: E402
from robot_runtime.improvement_loop.daemon import records  # noqa: E402
from robot_runtime.improvement_loop.fleet.catalog import Catalog, row_for  # noqa: E402
from robot_runtime.improvement_loop.fleet.deployments import Deployments  # noqa: E402
from robot_runtime.improvement_loop.metrics import wilson_interval  # noqa: E402

from bundle_factory import make_reference_bundle  # noqa: E402

LAYOUT = EpisodeLayout({"front": (24, 32)}, ("x", "y"), ("vx", "vy"))
ROBOTS = ("arm-1", "arm-2", "arm-3")
DAY = 86400.0
# (first day, last day) relative to today, success and intervention probability of each version on the fleet
VERSIONS = {"v1": (-9, -6, 0.45, 0.25), "v2": (-5, 0, 0.70, 0.10), "v3": (0, 0, 0.40, 0.25)}
TASK = "push the puck to the goal"


@dataclass
class World:
    root: Path
    store: EpisodeStore
    catalog: Path
    now: float
    episode_ids: list[str]
    offline: str = "arm-3"


def _episode(store: EpisodeStore, rng, robot: str, version: str, start: float, success: bool,
             intervention_p: float, steps: int) -> Path:
    meta = EpisodeMetadata(task=TASK, robot_id=robot, control_rate_hz=10.0, policy_version=f"reference@{version}",
                           operator="ops-1", start_time=start)
    writer = store.writer(LAYOUT, meta, chunk_steps=steps)
    for t in range(steps):
        image = np.full((24, 32, 3), 40 + 4 * t, np.uint8)
        image[8:16, (t % 24):(t % 24) + 8] = (230, 120, 20)
        writer.append(Step(start + 0.1 * t, {"front": image}, rng.normal(size=2).astype(np.float32),
                           np.tanh(rng.normal(size=2)).astype(np.float32), intervention=rng.random() < intervention_p,
                           policy_action=np.tanh(rng.normal(size=2)).astype(np.float32)))
    return writer.commit("success" if success else "failure")


def _fleet_episodes(store: EpisodeStore, catalog: Catalog, now: float, per_day: int, seed: int) -> list[str]:
    rng, today, ids = np.random.default_rng(seed), int(now // DAY), []
    for day in range(-9, 1):
        for robot in ROBOTS:
            if day == 0 and robot == "arm-3":
                continue  # offline since yesterday
            version = next(v for v, (a, b, *_) in VERSIONS.items() if a <= day <= b and (
                day < 0 or (v == "v3") == (robot == "arm-1")))  # today arm-1 runs the v3 canary
            _, _, success_p, intervention_p = VERSIONS[version]
            for k in range(per_day):
                start = min((today + day) * DAY + 3600 * (8 + 10 * k / per_day) + rng.uniform(0, 600), now - 600)
                path = _episode(store, rng, robot, version, start, rng.random() < success_p, intervention_p,
                                int(rng.integers(12, 24)))
                episode = store.open(path.name)
                catalog.add(row_for(episode, robot, content_sha256(describe_episode(path)), start + 120))
                ids.append(path.name)
    return ids


def _deployments(root: Path, db: Path, now: float) -> None:
    """v1 then v2 on every robot, v3 as a canary on arm-1 and rolled back, each install reported."""
    keys.create_release_key(root / "release", "nightly")
    secret = root / "release" / "nightly.release.pem"
    bundles = {}
    for sequence, version in enumerate(("v1", "v2", "v3"), 1):
        bundles[version] = make_reference_bundle(root / "bundles" / version, version=version, seed=sequence).path
        sign_bundle(bundles[version], secret, sequence)
    sign_rollback(bundles["v2"], root / "rollbacks" / "4", secret, 4)
    deployments = Deployments(db)
    try:
        for version, robots, why in (("v1", ROBOTS, "first release (demonstrations)"),
                                     ("v2", ROBOTS, "cycle 1 promoted")):
            deployments.assign(bundles[version], list(robots), why)
            for robot in robots:
                deployments.report(robot, f"reference-{version}", int(version[1]), True, "", "installed",
                                   f"reference-{version}")
        deployments.assign(bundles["v3"], ["arm-1"], "cycle 2 canary")
        deployments.report("arm-1", "reference-v3", 3, True, "", "installed", "reference-v3")
        deployments.rollback(["arm-1"], "reference-v2", root / "rollbacks" / "4", "cycle 2 canary regressed")
        deployments.report("arm-1", "reference-v2", 4, True, "", "rolled back", "reference-v2")
        for robot in ROBOTS[:2]:
            deployments.seen(robot, "reference-v2", 4 if robot == "arm-1" else 2)
        # arm-3 went quiet yesterday evening: the only write not made through Deployments (it stamps time.time())
        deployments.db.execute("UPDATE robots SET last_seen = ? WHERE robot = 'arm-3'", (now - 11 * 3600,))
    finally:
        deployments.close()


def _sim(version: str, success: float, episodes: int = 50) -> dict:
    """Simulated figures of one policy, shaped as the daemon's gate records them."""
    wins = round(success * episodes)
    figures = {"episodes": episodes, "success_rate": wins / episodes, "ci95": list(wilson_interval(wins, episodes)),
               "intervention_rate": 0.0, "mean_steps_to_success": 140.0 + 10 * int(version[1]), "successes": wins}
    return {"release": f"reference@{version}", **figures, "per_task": {"push-v3": figures}}


def _gate(candidate: dict, incumbent: dict, p_value: float) -> dict:
    return {"rule": "one_sided_test", "candidate": candidate, "incumbent": incumbent, "p_value": p_value,
            "offline": {"ok": True, "problems": [], "observations": 64, "max_parity_error": 3.1e-6},
            "episodes_per_task": 50, "tasks": ["push-v3"], "first_layout": 100000}


def _daemon(db: Path) -> None:
    """Cycle 1 promoted v2; cycle 2's v3 passed the gate, failed its canary and was rolled back; cycle 3's v4
    was refused at the gate; cycle 4 is training."""
    conn = records.connect(db)
    try:
        trained = ("snapshot", "value", "advantages", "policy", "export", "sign", "gate")

        def run(incumbent: str, candidate: str, states: tuple[str, ...], new: int) -> int:
            """A cycle that went through `states` in order (the last one entered, not finished)."""
            cycle = records.new_cycle(conn, "cfg-1", f"reference@{incumbent}", db.parent / "work")
            for finished, to in zip(states, states[1:]):
                extra = {"snapshot": {"episodes": [], "high_water": None, "new": new}} if finished == "snapshot" \
                    else {"candidate": f"reference@{candidate}"} if finished == "export" else {}
                records.advance(conn, cycle.id, finished, to, **extra)
            return cycle.id

        c1 = run("v1", "v2", trained + ("canary", "promote"), 61)
        records.record_decision(conn, c1, "gate", True, _gate(_sim("v2", 0.72), _sim("v1", 0.48), 0.0075),
                                "better: success 72% vs 48%: one-sided test p = 0.0075 < 0.05")
        records.record_decision(conn, c1, "canary", True, {"candidate": {"release": "reference@v2", "episodes": 12,
                                                                         "success_rate": 0.67},
                                                           "incumbent": {"release": "reference@v1", "episodes": 24,
                                                                         "success_rate": 0.46}},
                                "not worse than the incumbent over 12 episodes")
        records.record_decision(conn, c1, "promote", True, {"robots": 3}, "promoted to the fleet")
        records.finish(conn, c1, records.DONE, "promoted reference@v2")
        c2 = run("v2", "v3", trained + ("canary", "rollback"), 88)
        records.record_decision(conn, c2, "gate", True, _gate(_sim("v3", 0.82), _sim("v2", 0.66), 0.033),
                                "better: success 82% vs 66%: one-sided test p = 0.033 < 0.05")
        records.record_decision(conn, c2, "canary", False, {"candidate": {"release": "reference@v3", "episodes": 10,
                                                                          "success_rate": 0.4,
                                                                          "intervention_rate": 0.25},
                                                            "incumbent": {"release": "reference@v2", "episodes": 20,
                                                                          "success_rate": 0.7,
                                                                          "intervention_rate": 0.1}},
                                "success 40% below the incumbent's 70% on the same period")
        records.record_decision(conn, c2, "rollback", True, {"robots": ["arm-1"]}, "arm-1 back on reference-v2")
        records.finish(conn, c2, records.REFUSED, "canary regressed: rolled back")
        c3 = run("v2", "v4", trained, 40)
        records.record_decision(conn, c3, "gate", False, _gate(_sim("v4", 0.58), _sim("v2", 0.70), 0.90),
                                "not better: success 58% vs 70%: one-sided test p = 0.9 >= 0.05")
        records.finish(conn, c3, records.REFUSED, "gate refused reference@v4")
        run("v2", "v5", trained[:4], 57)
    finally:
        conn.close()


def build(root: Path, per_day: int = 3, seed: int = 0) -> World:
    root.mkdir(parents=True, exist_ok=True)
    store, now = EpisodeStore(root / "fleet"), time.time()
    db = store.root / "catalog.sqlite"
    catalog = Catalog(db)
    try:
        ids = _fleet_episodes(store, catalog, now, per_day, seed)
    finally:
        catalog.close()
    _deployments(root, db, now)
    _daemon(db)
    return World(root, store, db, now, ids)


def chromium() -> str | None:
    return shutil.which("chromium")


def browse(url: str, profile: Path, screenshot: Path | None = None, size=(1280, 2600)) -> str:
    """The DOM Debian's headless Chromium built from `url` (after redirects), optionally a screenshot too."""
    # --no-sandbox: Chromium's sandbox refuses to start as root (CI runs as root); the page is our own.
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"]
    if screenshot is not None:
        subprocess.run(args + [f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run(args + ["--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout


def main() -> None:
    from robot_runtime.improvement_loop.page.app import PageServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = build(Path(tmp) / "world", per_day=6)
        server = PageServer(world.catalog)
        try:
            browse(server.url + "/", Path(tmp) / "profile", Path(args.screenshot).resolve())
        finally:
            server.stop()
    print(args.screenshot)


if __name__ == "__main__":
    main()
