"""Start a node graph as separate processes where `ros2 launch` is not available.

Reads the same node list as launch/*.launch.py (robot_runtime.bringup.graph), gives each
node the graph's parameter YAML plus one file of its own (its section of that YAML, the
graph's parameters and the overrides) keyed by its full name, so it applies under a
`--namespace`; starts them with the shipped DDS transport profile (bringup/transport.py)
unless the environment names one; and owns the processes: logs go to one file per node, and `stop()` shuts
them down with SIGTERM (then, for a node that hangs, SIGUSR1 for its stacks in its log and SIGKILL).

`--lifecycle auto` (the default): the managed nodes (policy_node, teleop_mux, recorder)
walk themselves to active. `--lifecycle manual`: they start unconfigured and command
nothing until `python -m robot_runtime.nodes.lifecycle_manager up ...` (or any client of
their `~/change_state` services) brings them up.

Usage: `robot-runtime-launch sim --namespace /r1 --set sim_robot.env_name=pick-place-v3`.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from robot_runtime.bringup.graph import (
    GRAPHS,
    PACKAGE,
    config_dir,
    node_parameters,
    normalize_namespace,
    write_node_parameters,
)
from robot_runtime.bringup.transport import with_transport

LIFECYCLE_MODES = ("auto", "manual")
# A node that does not stop on SIGTERM gets this first: every thread's Python stack goes to its log
# (ros_io.spin_node registers faulthandler for it), so a hang says where before SIGKILL ends it.
STACK_DUMP_SIGNAL = signal.SIGUSR1
STACK_DUMP_WAIT_S = 1.0   # for it to write them


def stop_with_parent() -> None:
    """In the child before exec (`preexec_fn`): ask Linux to SIGTERM it when its parent dies, so a killed
    launcher, daemon or demo never leaves nodes (driving a robot) or training running on their own."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class GraphProcesses:
    def __init__(self, graph: str = "sim", overrides: dict[str, dict] | None = None,
                 log_dir: str | os.PathLike | None = None, params_file: str | os.PathLike | None = None,
                 env: dict | None = None, only: list[str] | None = None, namespace: str = "",
                 lifecycle: str = "auto"):
        if lifecycle not in LIFECYCLE_MODES:
            raise ValueError(f"lifecycle '{lifecycle}' is not one of {' | '.join(LIFECYCLE_MODES)}")
        make_graph, config_file = GRAPHS[graph]
        self.specs = [s for s in make_graph() if only is None or s.name in only]
        self.params_file = Path(params_file) if params_file else config_dir() / config_file
        self.overrides = overrides or {}
        self.namespace = normalize_namespace(namespace)
        self.lifecycle = lifecycle
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"{graph}-graph-"))
        self.env = with_transport({**os.environ, **(env or {})})  # config/fastdds.xml unless chosen
        self.processes: dict[str, subprocess.Popen] = {}

    def command(self, spec, overrides_file: Path) -> list[str]:
        remap_namespace = ["-r", f"__ns:={self.namespace}"] if self.namespace else []
        return [sys.executable, "-m", f"{PACKAGE}.nodes.{spec.executable}", "--ros-args",
                "-r", f"__node:={spec.name}", *remap_namespace, "--params-file", str(self.params_file),
                "--params-file", str(overrides_file)]

    def parameters(self, spec) -> dict:
        """Everything the node is given besides the params file's wildcard sections."""
        lifecycle = {"autostart": False} if spec.managed and self.lifecycle == "manual" else {}
        return {**node_parameters(self.params_file, spec), **lifecycle, **self.overrides.get(spec.name, {})}

    def start(self) -> GraphProcesses:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            overrides_file = write_node_parameters(self.log_dir / f"{spec.name}.params.yaml", self.namespace, spec,
                                                   self.parameters(spec))
            log = open(self.log_dir / f"{spec.name}.log", "w")
            self.processes[spec.name] = subprocess.Popen(
                self.command(spec, overrides_file), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                preexec_fn=stop_with_parent)
        return self

    def check(self) -> None:
        """Raise if a node has exited, quoting the end of its log."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"node {name} exited with code {proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(STACK_DUMP_SIGNAL)   # its threads' stacks into its log, then the kill
                try:
                    proc.wait(STACK_DUMP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return {name: proc.returncode for name, proc in self.processes.items()}

    def __enter__(self) -> GraphProcesses:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """['node.param=value', ...] -> {node: {param: value}}, values parsed as YAML."""
    overrides: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"override '{item}' is not node.param=value")
        overrides.setdefault(node, {})[param] = yaml.safe_load(value)
    return overrides


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", choices=sorted(GRAPHS))
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE")
    parser.add_argument("--params-file", help="parameter YAML (default: config/<graph>.yaml)")
    parser.add_argument("--namespace", default="", help="namespace of every node, e.g. /r1")
    parser.add_argument("--lifecycle", choices=LIFECYCLE_MODES, default="auto",
                        help="auto: managed nodes activate themselves; manual: they wait unconfigured")
    parser.add_argument("--log-dir")
    args = parser.parse_args(argv)
    graph = GraphProcesses(args.graph, parse_overrides(args.set), args.log_dir, args.params_file,
                           namespace=args.namespace, lifecycle=args.lifecycle).start()
    print(f"started {', '.join(graph.processes)}; logs in {graph.log_dir}; Ctrl-C stops")
    try:
        while True:
            graph.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        graph.stop()


if __name__ == "__main__":
    main()
