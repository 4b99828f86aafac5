"""One simulated robot of the demo's fleet: its node graph under its own namespace, its episode store, its
fleet agent (uploads to the workstation, installs the releases assigned to it into its model store and points
policy_node's bundle_path at the current version), and a client that runs episodes on it.

The graph and the agent are the product's own processes (robot-runtime-launch's GraphProcesses); the agent
runs as the robot graph's `fleet_agent` node beside the simulated graph, as it does beside a real driver.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.metrics import EpisodeOutcome
from robot_runtime.nodes.graph_client import SIM_NODES, SIM_TOPICS, GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_HIGH, ACTION_LOW, ACTION_NAMES, STATE_NAMES

log = logging.getLogger("demo")
CAMERAS, IMAGE_SIZE = ["corner", "gripperPOV"], 96   # config/sim.yaml's cameras


@dataclass(frozen=True)
class Ran:
    """One episode as the robot ran it: its id, outcome, the policy that ran it (policy_node's status after
    the episode: a bundle set between episodes takes over at the next one's first tick) and the
    policy_version the recorder wrote."""

    robot: str
    episode_id: str
    outcome: EpisodeOutcome
    policy: str
    recorded: str


@dataclass(frozen=True)
class AgentKeys:
    key_file: Path          # the robot's secret CURVE certificate
    server_key_file: Path   # the ingest server's public certificate
    trust_dir: Path         # release public keys this robot trusts


class SimRobot:
    def __init__(self, name: str, root: Path, env_name: str, control_rate_hz: float, max_steps: int,
                 env: dict[str, str]):
        self.name, self.namespace = name, f"/{name}"
        self.root = root
        self.store_path, self.model_root = root / "episodes", root / "models"
        self.env_name, self.control_rate_hz, self.max_steps = env_name, control_rate_hz, max_steps
        self.env = env
        self.graph: GraphProcesses | None = None
        self.agent: GraphProcesses | None = None
        self.client: GraphClient | None = None
        self.halt = threading.Event()   # set: run() starts no further episode

    def start(self, endpoint: str, keys: AgentKeys, release_poll_s: float) -> SimRobot:
        overrides = {
            "sim_robot": {"env_name": self.env_name, "control_rate_hz": self.control_rate_hz,
                          "max_steps": self.max_steps, "robot_id": self.name},
            "scripted_operator": {"env_name": self.env_name},
            "recorder": {"store_path": str(self.store_path.resolve())},
        }
        agent = {"store_path": str(self.store_path.resolve()), "server_endpoint": endpoint,
                 "key_file": str(keys.key_file), "server_key_file": str(keys.server_key_file),
                 "model_root": str(self.model_root.resolve()), "trust_dir": str(keys.trust_dir),
                 "release_poll_s": release_poll_s, "scan_interval_s": 1.0, "cameras": CAMERAS,
                 "image_size": IMAGE_SIZE, "state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES),
                 "action_low": list(ACTION_LOW), "action_high": list(ACTION_HIGH)}
        logs = self.root / "logs"
        self.graph = GraphProcesses("sim", overrides, log_dir=logs, env=self.env, namespace=self.namespace).start()
        self.agent = GraphProcesses("robot", {"fleet_agent": agent}, log_dir=logs, env=self.env,
                                    only=["fleet_agent"], namespace=self.namespace).start()
        self.client = GraphClient(f"demo_{self.name}", namespace=self.namespace)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.client.wait_for_graph(SIM_NODES, SIM_TOPICS, timeout)
        self.check()

    def check(self) -> None:
        """Raise, quoting its log, if a node of this robot has exited."""
        for processes in (self.graph, self.agent):
            if processes is not None:
                processes.check()

    def serving(self) -> str:
        """The label (model_id@version) policy_node serves, '' if none."""
        s = self.client.policy_status
        return f"{s['model_id']}@{s['version']}" if s.get("state") == "serving" else ""

    def wait_serving(self, label: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.serving() != label and not (self.client.policy_status.get("staged") == label):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: policy_node serves '{self.serving() or 'nothing'}' after "
                                   f"{timeout:.0f} s, not {label} (logs: {self.root / 'logs'})")
            self.check()
            time.sleep(0.2)

    def run(self, stage: str, episodes: int, seed: int, operator: str, bundle: str = "", stop=None) -> list[Ran]:
        """`episodes` episodes from layout seed `seed` (or until `stop()` is true), the scripted operator in
        `operator` mode (demonstrate | correct | off); `bundle` set on policy_node first if given."""
        c = self.client
        if bundle:
            c.set_parameters("policy_node", {"bundle_path": bundle})
        c.set_parameters("scripted_operator", {"mode": operator})
        c.set_parameters("recorder", {"campaign": stage})
        c.set_parameters("sim_robot", {"seed": seed})
        store = EpisodeStore(self.store_path)
        timeout = 2 * self.max_steps / self.control_rate_hz + 60
        ran = []
        for i in range(episodes):
            if self.halt.is_set() or (stop is not None and stop()):
                break
            end, commit = c.run_episode(timeout)
            ep = store.open(commit["episode_id"])
            outcome = EpisodeOutcome(bool(end["success"]), ep.steps, int(ep.array("intervention").sum()))
            ran.append(Ran(self.name, ep.episode_id, outcome, self.serving() or "operator",
                           ep.meta["policy_version"]))
            log.info("%s %s %d: %s in %d steps, %d operator steps (%s)", self.name, stage, i + 1,
                     "success" if outcome.success else end["reason"], ep.steps, outcome.intervention_steps,
                     ran[-1].policy)
        return ran

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.stop_agent()
        if self.graph is not None:
            self.graph.stop()
            self.graph = None
