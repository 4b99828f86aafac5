"""lifecycle_manager: drive managed nodes through their lifecycle over `~/get_state` and `~/change_state`.

For nodes started with autostart off (`robot-runtime-launch --lifecycle manual`, or
`ros2 launch ... autostart:=false`):

    python -m robot_runtime.nodes.lifecycle_manager up                  # configure + activate all
    python -m robot_runtime.nodes.lifecycle_manager --namespace /r1 down teleop_mux
    ros2 run robot_runtime lifecycle_manager state

`up` brings nodes up in the order given (configure if unconfigured, then activate), `down` takes them
down in reverse (deactivate if active, then clean up), `configure`, `activate`, `deactivate` and `cleanup`
ask for one transition, `state` only reports. The default nodes are the graph's managed ones, in an
order that brings the gate (teleop_mux) up last and takes it down first, so no command reaches the
robot before the rest is ready or after it went. Prints each node's state; exits non-zero naming
the node that did not get there (its log and /diagnostics say why).
"""
from __future__ import annotations

import argparse
import sys

from robot_runtime.nodes.graph_client import TRANSITIONS, GraphClient

MANAGED_NODES = ["recorder", "policy_node", "teleop_mux"]
ACTIONS = ("up", "down", "state", *TRANSITIONS)


def take_down(client: GraphClient, node: str, timeout: float) -> str:
    """Deactivate (if active) and clean up (if inactive) a managed node; returns the state it ended in."""
    state = client.lifecycle_state(node, timeout)
    if state == "active" and client.change_state(node, "deactivate", timeout):
        state = "inactive"
    if state == "inactive" and client.change_state(node, "cleanup", timeout):
        state = "unconfigured"
    return state


def run(client: GraphClient, action: str, nodes: list[str], timeout: float = 60.0) -> list[str]:
    """Apply `action` to `nodes`; returns one problem per node that did not get where it was asked to."""
    problems = []
    goal = {"up": "active", "down": "unconfigured", "configure": "inactive", "activate": "active",
            "deactivate": "inactive", "cleanup": "unconfigured"}.get(action)
    for node in reversed(nodes) if action == "down" else nodes:
        try:
            if action == "up":
                state = client.bring_up(node, timeout)
            elif action == "down":
                state = take_down(client, node, timeout)
            elif action == "state":
                state = client.lifecycle_state(node, timeout)
            else:
                client.change_state(node, action, timeout)
                state = client.lifecycle_state(node, timeout)
        except TimeoutError as err:
            problems.append(f"{node}: {err} (is it running, and in this namespace?)")
            continue
        print(f"{client.namespace}/{node}: {state}")
        if goal and state != goal:
            problems.append(f"{node}: {action} left it {state}, not {goal}; see its log and /diagnostics")
    return problems


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("nodes", nargs="*", default=MANAGED_NODES, help=f"default: {' '.join(MANAGED_NODES)}")
    parser.add_argument("--namespace", default="", help="the graph's namespace, e.g. /r1")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each node's services and each transition")
    args, _ = parser.parse_known_args(argv)  # leaves --ros-args to rclpy
    client = GraphClient("lifecycle_manager", namespace=args.namespace)
    try:
        problems = run(client, args.action, args.nodes, args.timeout)
    finally:
        client.close()
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
