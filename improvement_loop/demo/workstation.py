"""The demo's workstation: keys made by the fleet library, the ingest server (`robot-runtime-ingest`) on
loopback, the fleet page, first releases signed and assigned, and the nightly daemon (`robot-runtime-daemon`)
with its YAML file, run as the commands a team runs.

Layout under ROOT: keys/{server,robots,release}/, trust/ (the robots' trust store), fleet/ (the ingest
server's episode store and catalog.sqlite), train/ (the pretrain stage), daemon/ (the daemon's cycle work
dirs), daemon.yaml, logs/.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from robot_runtime.bringup.launcher import stop_with_parent
from robot_runtime.fleet import keys
from robot_runtime.fleet.releases import Release, sign_bundle
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.demo.robots import AgentKeys
from robot_runtime.improvement_loop.fleet.catalog import Catalog
from robot_runtime.improvement_loop.fleet.deployments import Deployments

log = logging.getLogger("demo")
SERVER, RELEASE_KEY = "ingest", "demo"


def console_script(name: str) -> str:
    """A console script of this install (beside the interpreter: the venv's bin/)."""
    return str(Path(sys.executable).with_name(name))


class Workstation:
    def __init__(self, root: Path, robots: list[str]):
        self.root, self.robots = root.resolve(), robots
        self.keys, self.trust = self.root / "keys", self.root / "trust"
        self.store, self.train, self.logs = self.root / "fleet", self.root / "train", self.root / "logs"
        self.catalog = self.store / "catalog.sqlite"
        self.config_file = self.root / "daemon.yaml"
        self.endpoint = ""
        self.page_url = ""
        self._ingest: subprocess.Popen | None = None
        self._page = None

    # --- keys and the ingest server ---

    def make_keys(self) -> dict[str, AgentKeys]:
        """A CURVE certificate per robot and for the server, a release key, and the robots' trust store."""
        for robot in self.robots:
            keys.create_curve_certificate(self.keys / "robots", robot)
        server_public, _ = keys.create_curve_certificate(self.keys / "server", SERVER)
        public, _ = keys.create_release_key(self.keys / "release", RELEASE_KEY)
        self.trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, self.trust)
        return {r: AgentKeys(self.keys / "robots" / f"{r}{keys.CURVE_SECRET}", server_public, self.trust)
                for r in self.robots}

    @property
    def release_key(self) -> Path:
        return self.keys / "release" / f"{RELEASE_KEY}{keys.RELEASE_SECRET}"

    def start_ingest(self, timeout: float = 60.0) -> str:
        """robot-runtime-ingest on a free loopback port; returns the endpoint robots connect to."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._ingest = subprocess.Popen(
            [console_script("robot-runtime-ingest"), "--store", str(self.store), "--robots", str(self.keys / "robots"),
             "--server-key", str(self.keys / "server" / f"{SERVER}{keys.CURVE_SECRET}"),
             "--bind", "tcp://127.0.0.1:*"],
            stdout=subprocess.PIPE, stderr=open(self.logs / "ingest.log", "w"), text=True, preexec_fn=stop_with_parent)
        line = self._ingest.stdout.readline().strip()
        if not line.startswith("listening on "):
            self._ingest.wait(timeout)
            raise RuntimeError(f"robot-runtime-ingest did not start ({line or 'no output'}): see "
                               f"{self.logs / 'ingest.log'}")
        self.endpoint = line.removeprefix("listening on ")
        return self.endpoint

    def start_page(self) -> str:
        """The fleet page on a free loopback port ('' and a log line if it cannot start)."""
        try:
            from robot_runtime.improvement_loop.page.app import PageServer

            self._page = PageServer(self.catalog, store=self.store)
            self.page_url = self._page.url
        except Exception as err:  # the page is a view: the demo runs without it
            log.warning("fleet page not available: %s: %s", type(err).__name__, err)
        return self.page_url

    def page_html(self) -> str:
        """The page as it is now ('' without the page)."""
        if not self.page_url:
            return ""
        import urllib.request

        with urllib.request.urlopen(self.page_url + "/", timeout=30) as reply:
            return reply.read().decode()

    # --- the catalog and releases ---

    def cataloged(self) -> set[str]:
        catalog = Catalog(self.catalog)
        try:
            return catalog.ids()
        finally:
            catalog.close()

    def wait_cataloged(self, episode_ids: list[str], timeout: float, check=None) -> None:
        """Until every episode is in the catalog (uploaded, verified, stored)."""
        deadline = time.monotonic() + timeout
        while missing := set(episode_ids) - self.cataloged():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(episode_ids)} episodes not cataloged after "
                                   f"{timeout:.0f} s (robot logs: fleet_agent.log; {self.logs / 'ingest.log'})")
            if check is not None:
                check()
            self.check()
            time.sleep(0.5)

    def release(self, bundle: str, sequence: int, robots: list[str], reason: str) -> Release:
        """Sign `bundle` and assign it to `robots` (their agents fetch and install it at their next poll)."""
        release = sign_bundle(bundle, self.release_key, sequence)
        deployments = Deployments(self.catalog)
        try:
            deployments.assign(bundle, robots, reason)
        finally:
            deployments.close()
        return release

    def fleet_state(self) -> dict[str, tuple[str, str]]:
        """robot -> (its target's release name, the version its model store reports current)."""
        deployments = Deployments(self.catalog)
        try:
            states = deployments.robot_states()
            out = {}
            for robot in self.robots:
                target, state = deployments.target(robot), states.get(robot)
                out[robot] = (target.name if target else "", state.current if state else "")
            return out
        finally:
            deployments.close()

    def wait_installed(self, timeout: float, check=None) -> dict[str, str]:
        """Until every robot reports its target current; returns robot -> release name."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.fleet_state()
            if all(target and target == current for target, current in state.values()):
                return {robot: current for robot, (_, current) in state.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(f"robots did not install their targets within {timeout:.0f} s: {state} "
                                   "(target, current) (see each robot's fleet_agent.log)")
            if check is not None:
                check()
            self.check()
            time.sleep(0.5)

    # --- the daemon ---

    def write_daemon_config(self, settings: dict) -> Path:
        """daemon.yaml for this fleet: paths here, the rest from `settings` (daemon.yaml's keys)."""
        config = {"store": str(self.store), "catalog": str(self.catalog), "work": str(self.root / "daemon"),
                  "release_key": str(self.release_key), **settings}
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_file

    def run_now(self) -> subprocess.Popen:
        """`robot-runtime-daemon --config daemon.yaml run-now`: one cycle, to its end, in its own process."""
        self.logs.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([console_script("robot-runtime-daemon"), "--config", str(self.config_file), "run-now"],
                                stdout=open(self.logs / "daemon.out", "w"), stderr=open(self.logs / "daemon.log", "w"),
                                preexec_fn=stop_with_parent)

    def cycle(self) -> records.Cycle | None:
        """The latest cycle, as the daemon recorded it."""
        conn = records.connect(self.catalog)
        try:
            latest = records.cycles(conn, limit=1)
            return latest[0] if latest else None
        finally:
            conn.close()

    def decisions(self, cycle_id: int) -> list[records.Decision]:
        conn = records.connect(self.catalog)
        try:
            return records.decisions(conn, cycle_id)
        finally:
            conn.close()

    def check(self) -> None:
        if self._ingest is not None and self._ingest.poll() is not None:
            raise RuntimeError(f"robot-runtime-ingest exited with {self._ingest.returncode}: see "
                               f"{self.logs / 'ingest.log'}")

    def stop(self) -> None:
        if self._page is not None:
            self._page.stop()
            self._page = None
        if self._ingest is not None:
            self._ingest.terminate()
            try:
                self._ingest.wait(15)
            except subprocess.TimeoutExpired:
                self._ingest.kill()
                self._ingest.wait()
            self._ingest = None
