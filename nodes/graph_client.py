"""A client of a running graph: start episodes, wait for their end and commit, parameters, lifecycle.

Used by the demo, the benchmark's DDS mode and the tests; it is what an operator
console or a fleet agent does over ROS 2 services, topics and parameters. Events and
status are parsed by `robot_runtime.messages` (malformed ones are logged and dropped)
and kept as their `to_dict()`, every field present, for scripts that read keys. A graph under a
namespace (`robot-runtime-launch --namespace /r1`) takes `GraphClient(namespace="/r1")`: topics,
services and node names are then resolved there.
"""
from __future__ import annotations

import array
import threading
import time

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_runtime.bringup.graph import normalize_namespace
from robot_runtime.messages import (
    EpisodeCommitted,
    MessageError,
    parse_episode_event,
    parse_policy_status,
    parse_recorder_status,
)
from robot_runtime.nodes import ros_io

REPLY_DISCOVERY_S = 0.3  # DDS discovery of a new client's reply reader on loopback, with margin for a loaded host

# The simulated graph's connections (publishers, subscribers) before episodes can run.
SIM_NODES = ["sim_robot", "scripted_operator", "teleop_mux", "policy_node", "recorder"]
SIM_TOPICS = {
    ros_io.STATE_TOPIC: (1, 3),
    ros_io.ROBOT_COMMAND_TOPIC: (1, 1),
    ros_io.ROBOT_EXECUTED_TOPIC: (1, 1),
    ros_io.POLICY_COMMAND_TOPIC: (1, 2),
    ros_io.TELEOP_COMMAND_TOPIC: (1, 1),
    ros_io.TELEOP_ENGAGED_TOPIC: (1, 1),
    ros_io.EPISODE_EVENTS_TOPIC: (1, 3),
}


TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}


class GraphClient:
    def __init__(self, name: str = "graph_client", namespace: str = ""):
        self._owns_context = not rclpy.ok()
        if self._owns_context:
            # A host process (demo, test, benchmark) keeps its own SIGINT/SIGTERM behaviour.
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.namespace = normalize_namespace(namespace)
        self.node = Node(name, namespace=self.namespace or None)
        self._lock = threading.Condition()
        self.events: list[dict] = []
        self.commits: dict[str, dict] = {}
        self._clients: dict = {}  # service name -> rclpy Client, see _client
        self.policy_status: dict = {}
        self.node.create_subscription(String, ros_io.EPISODE_EVENTS_TOPIC,
                                      lambda m: self._record(parse_episode_event, m, self._on_event),
                                      ros_io.LATCHED_QOS)
        self.node.create_subscription(String, ros_io.RECORDER_STATUS_TOPIC,
                                      lambda m: self._record(parse_recorder_status, m, self._on_recorder),
                                      ros_io.LATCHED_QOS)
        self.node.create_subscription(String, ros_io.POLICY_STATUS_TOPIC,
                                      lambda m: self._record(parse_policy_status, m, self._on_policy_status),
                                      ros_io.LATCHED_QOS)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _record(self, parse, msg: String, store) -> None:
        try:
            message = parse(msg.data)
        except MessageError as err:
            self.node.get_logger().warning(f"ignoring {err}", throttle_duration_sec=1.0)
            return
        with self._lock:
            store(message)
            self._lock.notify_all()

    def _notify(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def _on_event(self, event) -> None:
        self.events.append(event.to_dict())

    def _on_policy_status(self, status) -> None:
        self.policy_status = status.to_dict()

    def _on_recorder(self, status) -> None:
        if isinstance(status, EpisodeCommitted):
            self.commits[status.episode_id] = status.to_dict()

    def wait_for(self, predicate, timeout: float, what: str):
        """Block until predicate() is truthy (checked under the lock); returns its value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (result := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._lock.wait(remaining)
        return result

    def _client(self, service_type, name: str, timeout: float):
        """A service client kept for reuse, returned once its server is up and can answer it.

        `wait_for_service` only means our request can reach the server; the server answers on a
        reply reader of ours that it discovers separately, and a reply sent before that is dropped
        ("failed to send response"). A new client therefore waits `REPLY_DISCOVERY_S` once, and
        clients are reused so that happens once per service, not once per call."""
        client = self._clients.get(name)
        if client is None:
            client = self.node.create_client(service_type, name)
            if not client.wait_for_service(timeout_sec=timeout):
                self.node.destroy_client(client)
                raise TimeoutError(f"service {name} is not available")
            time.sleep(REPLY_DISCOVERY_S)
            self._clients[name] = client
        return client

    def call(self, service_type, name: str, request, timeout: float = 10.0):
        future = self._client(service_type, name, timeout).call_async(request)
        future.add_done_callback(lambda _: self._notify())
        self.wait_for(future.done, timeout, f"a reply from {name}")
        return future.result()

    def service(self, node_name: str, service: str) -> str:
        """The full name of a node's service in this client's namespace."""
        return f"{self.namespace}/{node_name}/{service}"

    def set_parameters(self, node_name: str, values: dict, timeout: float = 30.0) -> None:
        """Set parameters on a running node; raises with the node's reason when it refuses."""
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        response = self.call(SetParameters, self.service(node_name, "set_parameters"), request, timeout)
        for (key, _), result in zip(values.items(), response.results):
            if not result.successful:
                raise RuntimeError(f"{node_name} refused {key}: {result.reason}")

    def get_parameters(self, node_name: str, names: list[str], timeout: float = 30.0) -> dict:
        """Current values of a running node's parameters, as Python values (lists for arrays)."""
        response = self.call(GetParameters, self.service(node_name, "get_parameters"),
                             GetParameters.Request(names=list(names)), timeout)
        values = [parameter_value_to_python(v) for v in response.values]
        return {n: v.tolist() if isinstance(v, array.array) else v for n, v in zip(names, values)}

    def lifecycle_state(self, node_name: str, timeout: float = 30.0) -> str:
        """A managed node's state: unconfigured, inactive, active or finalized."""
        return self.call(GetState, self.service(node_name, "get_state"), GetState.Request(),
                         timeout).current_state.label

    def change_state(self, node_name: str, transition: str, timeout: float = 60.0) -> bool:
        """Ask a managed node for `transition` (configure, activate, deactivate, cleanup); True if it made it."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return self.call(ChangeState, self.service(node_name, "change_state"), request, timeout).success

    def bring_up(self, node_name: str, timeout: float = 60.0) -> str:
        """Configure (if unconfigured) and activate a managed node; returns the state it ended in."""
        state = self.lifecycle_state(node_name, timeout)
        if state == "unconfigured" and self.change_state(node_name, "configure", timeout):
            state = "inactive"
        if state == "inactive" and self.change_state(node_name, "activate", timeout):
            state = "active"
        return state

    def start_episode(self, timeout: float = 30.0) -> str:
        response = self.call(Trigger, self.service("sim_robot", "start_episode"), Trigger.Request(), timeout)
        if not response.success:
            raise RuntimeError(f"could not start an episode: {response.message}")
        return response.message

    def wait_for_end(self, episode_id: str, timeout: float) -> dict:
        return self.wait_for(lambda: next((e for e in self.events if e.get("event") == "end"
                                           and e.get("episode_id") == episode_id), None),
                             timeout, f"the end of episode {episode_id}")

    def wait_for_commit(self, episode_id: str, timeout: float = 30.0) -> dict:
        return self.wait_for(lambda: self.commits.get(episode_id), timeout, f"the commit of {episode_id}")

    def run_episode(self, timeout: float = 120.0) -> tuple[dict, dict]:
        """Start an episode, wait for it to end and be committed: (end event, commit status)."""
        episode_id = self.start_episode()
        end = self.wait_for_end(episode_id, timeout)
        return end, self.wait_for_commit(episode_id)

    def wait_for_graph(self, nodes: list[str], topics: dict[str, tuple[int, int]] | None = None,
                       timeout: float = 60.0) -> None:
        """Wait until every node's parameter service answers (the node finished starting) and
        each topic has at least (publishers, subscribers), so the first episode is not spent
        waiting for DDS discovery."""
        deadline = time.monotonic() + timeout
        for name in nodes:
            try:
                self._client(SetParameters, self.service(name, "set_parameters"),
                             max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"node {name} did not come up within {timeout:.0f} s") from None
        for topic, (publishers, subscribers) in (topics or {}).items():
            while (self.node.count_publishers(topic) < publishers
                   or self.node.count_subscribers(topic) < subscribers):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic} did not connect {publishers} publisher(s) "
                                       f"to {subscribers} subscriber(s) within {timeout:.0f} s")
                time.sleep(0.05)

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()
        if self._owns_context:
            rclpy.try_shutdown()
