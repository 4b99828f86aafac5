"""The fleet demo's stages, in the order a team lives them:

  setup           keys (CURVE per robot and server, an Ed25519 release key), robot-runtime-ingest on loopback,
                  the fleet page, two simulated robots each under its own namespace with its own store and agent;
  demonstrations  the scripted operator demonstrates on both robots; the agents upload every episode;
  pretrain        robot-runtime-train --stage pretrain on the workstation's store (value + behaviour cloning);
  release         the pretrained bundle signed (release 1), assigned to both robots, installed by their agents;
  rollouts        autonomous episodes on both robots, the operator correcting; uploads land in the catalog;
  cycle           robot-runtime-daemon run-now: snapshot -> value -> advantages -> policy -> export -> sign ->
                  gate; if the gate passes, canary on the first robot while both robots keep working (the
                  canary robot on the candidate, the other on the incumbent, same layouts), then promote or
                  roll back, and the fleet installs what the daemon decided;
  evaluation      incumbent and candidate without the operator on the same held-out layouts, one per robot.

Every stage's wall time is measured; `stop_after` ends the run after a stage (for building and debugging).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.methods import DEFAULT_METHOD
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.demo.robots import Ran, SimRobot
from robot_runtime.improvement_loop.demo.workstation import Workstation, console_script, stop_with_parent
from robot_runtime.improvement_loop.fleet.deployments import Deployments
from robot_runtime.improvement_loop.metrics import summarize

log = logging.getLogger("demo")
STAGES = ("setup", "demonstrations", "pretrain", "release", "rollouts", "cycle", "evaluation")
LAYOUTS = {"demonstrations": 0, "rollouts": 1000, "canary": 3000, "evaluation": 10_000}  # per robot: + 500 * index


@dataclass
class DemoConfig:
    out: Path = Path("demo_output")
    env_name: str = "push-v3"
    robots: tuple[str, ...] = ("r1", "r2")   # the first is the canary
    domain_id: int = 200                                 # ROS_DOMAIN_ID of both graphs (namespaces keep them apart)
    demos: int = 3                                       # per robot
    rollouts: int = 8                                    # per robot
    eval_episodes: int = 16                              # per policy (one robot each, the same layouts)
    control_rate_hz: float = 20.0
    max_steps: int = 120
    pretrain_value_steps: int = 800                      # training budget: see the README's "What `make demo` does"
    pretrain_policy_steps: int = 800
    round_value_steps: int = 400                         # per fold (2 folds)
    round_policy_steps: int = 800
    threads: int = 2                                     # torch threads of the training commands
    gate_episodes: int = 16                              # per policy, simulated
    gate_rule: str = "not_worse"
    method: str = DEFAULT_METHOD                         # what the daemon's cycle trains (cycle/methods.py)
    canary_episodes: int = 6
    stop_after: str = "evaluation"
    release_poll_s: float = 2.0


@dataclass
class Row:
    stage: str
    robot: str
    policy: str
    summary: dict           # RateSummary.to_json()


@dataclass
class Report:
    env_name: str
    robots: list[str]
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    cycle: dict | None = None
    fleet: dict = field(default_factory=dict)            # robot -> (target, current) at the end
    page_url: str = ""
    notes: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def add(self, stage: str, ran: list[Ran]) -> None:
        """Rows per (robot, policy that ran) from the episodes as the robots ran them."""
        groups = defaultdict(list)
        for r in ran:
            groups[(r.robot, r.policy)].append(r.outcome)
        for (robot, policy), outcomes in sorted(groups.items()):
            self.rows.append(Row(stage, robot, policy, summarize(outcomes).to_json()))
        mislabeled = [r for r in ran if r.recorded and r.policy not in (r.recorded, "operator")]
        for r in mislabeled:
            self.notes.append(f"{stage}: {r.robot}'s episode {r.episode_id} ran {r.policy} but was recorded as "
                              f"{r.recorded} (the recorder credits an episode to the bundle its policy proposals "
                              "name; this one's did not name the bundle that ran)")

    def to_json(self) -> dict:
        return asdict(self)


class FleetDemo:
    def __init__(self, cfg: DemoConfig):
        if cfg.stop_after not in STAGES:
            raise ValueError(f"stop_after {cfg.stop_after!r}: one of {STAGES}")
        self.cfg = cfg
        self.out = cfg.out.resolve()
        self.ws = Workstation(self.out / "workstation", list(cfg.robots))
        self.env = {**os.environ, "ROS_DOMAIN_ID": str(cfg.domain_id)}
        self.robots = [SimRobot(name, self.out / "robots" / name, cfg.env_name, cfg.control_rate_hz, cfg.max_steps,
                                self.env) for name in cfg.robots]
        self.report = Report(cfg.env_name, list(cfg.robots))
        self.pretrained: dict = {}

    def run(self) -> Report:
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        os.environ["ROS_DOMAIN_ID"] = str(self.cfg.domain_id)   # this process's own DDS client joins the graphs
        started = time.monotonic()
        try:
            for stage in STAGES:
                t = time.monotonic()
                getattr(self, "_" + stage)()
                self.report.seconds[stage] = round(time.monotonic() - t, 1)
                log.info("stage %s: %.0f s", stage, self.report.seconds[stage])
                write_json_atomic(self.out / "summary.json", self.report.to_json())   # so far
                if stage == self.cfg.stop_after:
                    break
            self.report.fleet = self.ws.fleet_state() if self.ws.catalog.is_file() else {}
            self._save_page()
        finally:
            for robot in reversed(self.robots):   # the first robot's client owns the DDS context: last
                robot.stop()
            self.ws.stop()
            self.report.seconds["total"] = round(time.monotonic() - started, 1)
        return self.report

    def _check(self) -> None:
        for robot in self.robots:
            robot.check()

    def _both(self, work) -> list[Ran]:
        """work(robot, index) on every robot at once; their episodes, robot by robot. Interrupted (Ctrl-C,
        SIGTERM), the robots stop after their current episode."""
        pool = ThreadPoolExecutor(len(self.robots))
        try:
            futures = [pool.submit(work, robot, i) for i, robot in enumerate(self.robots)]
            return [r for f in futures for r in f.result()]
        except BaseException:
            for robot in self.robots:
                robot.halt.set()
            raise
        finally:
            pool.shutdown(wait=True)

    # --- stages ---

    def _setup(self) -> None:
        agent_keys = self.ws.make_keys()
        endpoint = self.ws.start_ingest()
        records.connect(self.ws.catalog).close()      # the daemon's and deployments' tables, for the page
        Deployments(self.ws.catalog).close()
        self.report.page_url = self.ws.start_page()
        log.info("ingest server %s; fleet page %s", endpoint, self.report.page_url or "not available")
        for robot in self.robots:
            robot.start(endpoint, agent_keys[robot.name], self.cfg.release_poll_s)
        for robot in self.robots:
            robot.wait_ready()

    def _demonstrations(self) -> None:
        ran = self._both(lambda robot, i: robot.run("demonstrations", self.cfg.demos,
                                                    LAYOUTS["demonstrations"] + 500 * i, "demonstrate"))
        self.report.add("demonstrations", ran)
        self.ws.wait_cataloged([r.episode_id for r in ran], 300, self._check)

    def _pretrain(self) -> None:
        cmd = [console_script("robot-runtime-train"), "--store", str(self.ws.store), "--work", str(self.ws.train),
               "--stage", "pretrain", "--value-steps", str(self.cfg.pretrain_value_steps),
               "--policy-steps", str(self.cfg.pretrain_policy_steps), "--threads", str(self.cfg.threads)]
        self.ws.logs.mkdir(parents=True, exist_ok=True)
        with open(self.ws.logs / "pretrain.log", "w") as err:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env,
                                  preexec_fn=stop_with_parent)
        if done.returncode != 0:
            raise RuntimeError(f"pretrain failed ({done.returncode}): see {self.ws.logs / 'pretrain.log'}")
        self.pretrained = json.loads(done.stdout)
        self.report.paths["pretrained bundle"] = self.pretrained["bundle_path"]

    def _release(self) -> None:
        release = self.ws.release(self.pretrained["bundle_path"], 1, list(self.cfg.robots),
                                  "first release: the policy pretrained on the demonstrations")
        self.ws.wait_installed(120, self._check)
        label = f"{release.model_id}@{release.version}"
        for robot in self.robots:
            robot.wait_serving(label, 120)
        log.info("release 1 (%s) installed on %s", release.name, ", ".join(self.cfg.robots))

    def _rollouts(self) -> None:
        ran = self._both(lambda robot, i: robot.run("rollouts", self.cfg.rollouts, LAYOUTS["rollouts"] + 500 * i,
                                                    "correct"))
        self.report.add("rollouts + corrections", ran)
        self.ws.wait_cataloged([r.episode_id for r in ran], 300, self._check)

    def _cycle(self) -> None:
        self.ws.write_daemon_config(self.daemon_settings())
        daemon = self.ws.run_now()
        canary: list[Ran] = []
        while daemon.poll() is None:
            c = self.ws.cycle()
            if c is not None and c.status == records.RUNNING and c.state == "canary" and not canary:
                canary = self._canary(c, daemon)
                self.report.add("canary", canary)
            self._check()
            self.ws.check()
            time.sleep(1.0)
        c = self.ws.cycle()
        if c is None:
            raise RuntimeError(f"robot-runtime-daemon run-now exited with {daemon.returncode} and recorded no "
                               f"cycle: see {self.ws.logs / 'daemon.log'}")
        self.report.cycle = {k: v for k, v in asdict(c).items() if k != "snapshot"}
        self.report.cycle["snapshot"] = {k: v for k, v in c.snapshot.items() if k != "episodes"}
        self.report.cycle["method"] = self.cfg.method
        self.report.decisions = [asdict(d) for d in self.ws.decisions(c.id)]
        if daemon.returncode != 0:
            self.report.notes.append(f"robot-runtime-daemon run-now exited with {daemon.returncode}: "
                                     f"{(self.ws.logs / 'daemon.log').read_text()[-500:]}")
        if any(d.kind in ("promote", "rollback") for d in self.ws.decisions(c.id)):
            self.ws.wait_installed(180, self._check)     # the fleet runs what the daemon decided

    def _canary(self, c: records.Cycle, daemon: subprocess.Popen) -> list[Ran]:
        """Both robots work while the daemon judges the canary: the first on the candidate (once its agent has
        installed it), the others on the incumbent, from the same layouts; until the daemon decides."""
        decided = threading.Event()
        limit = 6 * self.cfg.canary_episodes

        def work(robot: SimRobot, index: int) -> list[Ran]:
            if index == 0:
                robot.wait_serving(c.candidate, 300)
            return robot.run("canary", limit, LAYOUTS["canary"], "correct", stop=decided.is_set)

        def watch() -> None:
            while daemon.poll() is None:
                now = self.ws.cycle()
                if now is None or now.id != c.id or now.state != "canary" or now.status != records.RUNNING:
                    break
                time.sleep(1.0)
            decided.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            return self._both(work)
        finally:
            decided.set()

    def _evaluation(self) -> None:
        c = self.ws.cycle()
        export = Path(c.work_dir) / "states" / "export.json" if c else None
        if export is None or not export.is_file():
            self.report.notes.append("evaluation skipped: the cycle exported no candidate")
            return
        candidate, incumbent = json.loads(export.read_text())["bundle"], self.pretrained["bundle_path"]
        for robot in self.robots:
            robot.stop_agent()   # evaluation episodes stay off the fleet's catalog and no release moves under them
        bundles = [incumbent, candidate] + [incumbent] * (len(self.robots) - 2)
        ran = self._both(lambda robot, i: robot.run("evaluation", self.cfg.eval_episodes, LAYOUTS["evaluation"],
                                                    "off", bundles[i]) if i < 2 else [])
        self.report.add("evaluation (held-out layouts, no operator)", ran)

    def daemon_settings(self) -> dict:
        """daemon.yaml's keys for this demo (paths are the workstation's)."""
        cfg = self.cfg
        return {
            "fleet": {"robots": list(cfg.robots), "canary": [cfg.robots[0]]},
            "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
            "min_new_episodes": len(cfg.robots) * cfg.rollouts,
            "training": {"pretrained": str(self.ws.train / "pretrain" / "result.json"),
                         "value_steps": cfg.round_value_steps, "policy_steps": cfg.round_policy_steps,
                         "threads": cfg.threads, "method": cfg.method},
            "gate": {"tasks": [cfg.env_name], "episodes": cfg.gate_episodes, "max_steps": cfg.max_steps,
                     "control_rate_hz": cfg.control_rate_hz, "rule": cfg.gate_rule, "first_layout": 100_000},
            "canary": {"episodes": cfg.canary_episodes, "rule": "not_worse", "margin": 0.1, "timeout_hours": 1.0,
                       "poll_seconds": 2.0},
        }

    def _save_page(self) -> None:
        try:
            html = self.ws.page_html()
        except OSError as err:
            self.report.notes.append(f"fleet page not saved: {err}")
            return
        if html:
            (self.out / "fleet_page.html").write_text(html)
            self.report.paths["fleet page (saved)"] = str(self.out / "fleet_page.html")
