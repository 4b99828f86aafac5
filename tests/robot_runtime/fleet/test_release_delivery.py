"""Releases reach robots over the fleet link: an assigned release is installed and reported; a tampered or
misfit one is refused by the robot and the refusal reaches the workstation; a signed rollback brings the
previous version back; a robot not targeted, and a key not on the allowlist, get nothing. Over DDS: the
fleet_agent node idles with an empty endpoint, and sets policy_node's bundle_path only after an episode end."""
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from fleet_world import ServerThread, make_keys
from std_msgs.msg import String

from robot_runtime.episode import EpisodeLayout
from robot_runtime.fleet import keys
from robot_runtime.fleet.model_store import ModelStore, RobotDescription, current_version
from robot_runtime.fleet.protocol import ReleasePoll, file_offsets
from robot_runtime.fleet.releases import sign_bundle, sign_rollback
from robot_runtime.fleet.releases_client import BundleSwitch, ReleaseClient, ReleaseClientConfig
from robot_runtime.improvement_loop.fleet.deployments import DeploymentError, Deployments
from robot_runtime.messages import EpisodeEnd, EpisodeStart
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

from bundle_factory import make_reference_bundle

ROBOT = RobotDescription.from_layout(
    EpisodeLayout(cameras={"corner": (96, 96), "gripperPOV": (96, 96)}, state_names=STATE_NAMES,
                  action_names=ACTION_NAMES), action_low=[-1.0] * 4, action_high=[1.0] * 4)


class World:
    """Release keys, a trust store, an ingest server, and robots with model stores and release clients."""

    def __init__(self, tmp_path, robots=("r1", "r2")):
        self.tmp = tmp_path
        self.made = make_keys(tmp_path, robots)
        keys.create_release_key(tmp_path / "release", "nightly")
        self.trust = tmp_path / "trust"
        self.trust.mkdir()
        shutil.copy(tmp_path / "release" / "nightly.release.pub", self.trust)
        self.server = ServerThread(tmp_path / "fleet", self.made, release_chunk_bytes=64 << 10)
        self.deployments = Deployments(tmp_path / "fleet" / "catalog.sqlite")
        self.clients = []

    def release(self, version: str, sequence: int, **bundle):
        path = make_reference_bundle(self.tmp / "bundles" / f"{version}-{sequence}", version=version, **bundle).path
        sign_bundle(path, self.tmp / "release" / "nightly.release.pem", sequence)
        return path

    def rollback(self, bundle_dir, sequence: int):
        out = self.tmp / "rollbacks" / str(sequence)
        sign_rollback(bundle_dir, out, self.tmp / "release" / "nightly.release.pem", sequence)
        return out

    def client(self, robot: str, key_file=None) -> ReleaseClient:
        store = ModelStore(self.tmp / "robots" / robot / "models", self.trust, ROBOT)
        client = ReleaseClient(store, ReleaseClientConfig(
            self.server.endpoint, str(key_file or self.made.robot(robot)), str(self.made.server_public),
            poll_interval_s=0.1, reply_timeout_s=5.0))
        self.clients.append(client)
        return client

    def close(self):
        for client in self.clients:
            client.stop()
        self.deployments.close()
        self.server.close()


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path)
    yield made
    made.close()


def test_an_assigned_release_is_installed_reported_and_rolled_back(world):
    r1, r2 = world.client("r1"), world.client("r2")
    v1 = world.release("v1", 1)
    world.deployments.assign(v1, ["r1"], "first model")
    result = r1.poll_once()
    assert result.installed and result.version == "reference-v1", result.reason
    assert r1.store.current().name == "reference-v1"
    assert r2.poll_once() is None and r2.store.current() is None  # not targeted: nothing
    assert r1.poll_once() is None  # already current: nothing more
    assert not list(r1.incoming.iterdir())  # the download is gone once installed
    world.deployments.assign(world.release("v2", 2), ["r1", "r2"], "better")
    assert r1.poll_once().installed and r2.poll_once().installed
    assert r1.store.current().name == r2.store.current().name == "reference-v2"
    world.deployments.rollback(["r1"], "reference-v1", world.rollback(v1, 3), "v2 drops the cup")
    result = r1.poll_once()
    assert result.installed and result.rollback and r1.store.current().name == "reference-v1", result.reason
    states = world.deployments.robot_states()
    assert states["r1"].current == "reference-v1" and states["r1"].last_installed is True
    assert states["r2"].current == "reference-v2" and states["r2"].sequence == 2
    assert [(e.event, e.release) for e in world.deployments.history("r1")] == [
        ("assign", "reference-v1"), ("installed", "reference-v1"), ("assign", "reference-v2"),
        ("installed", "reference-v2"), ("rollback", "reference-v1"), ("installed", "reference-v1")]


def test_tampered_and_misfit_releases_are_refused_on_the_robot_and_reported(world):
    r1, r2 = world.client("r1"), world.client("r2")
    tampered = world.release("v1", 1)
    weights = max(tampered.iterdir(), key=lambda p: p.stat().st_size)  # the model file
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    world.deployments.assign(tampered, ["r1"], "tampered on the way")
    world.deployments.assign(world.release("v2", 2, action_names=(*ACTION_NAMES[:-1], "wrist_roll")), ["r2"],
                             "built for another arm")
    assert not r1.poll_once().installed and not r2.poll_once().installed
    assert r1.store.current() is None and r2.store.current() is None
    states = world.deployments.robot_states()
    assert states["r1"].last_cause == "tampered" and weights.name in states["r1"].last_reason
    assert states["r2"].last_cause == "incompatible" and "wrist_roll" in states["r2"].last_reason
    assert states["r1"].last_installed is False and "tampered" in r1.status().refused
    assert r1.poll_once() is None  # a refused release is not fetched again until a restart


def test_an_unknown_key_gets_nothing(world, tmp_path):
    world.deployments.assign(world.release("v1", 1), ["intruder"], "a name is not a key")
    keys.create_curve_certificate(tmp_path / "elsewhere", "intruder")
    intruder = world.client("intruder", key_file=tmp_path / "elsewhere" / "intruder.key_secret")
    assert intruder.poll_once() is None
    assert "refused this robot's key" in intruder.status().last_error
    assert intruder.store.current() is None and "intruder" not in world.deployments.robot_states()


def test_a_rollback_must_name_what_it_rolls_back_to(world):
    v1 = world.release("v1", 1)
    with pytest.raises(DeploymentError, match="never released"):
        world.deployments.rollback(["r1"], "reference-v1", world.rollback(v1, 2), "not yet")
    world.deployments.assign(v1, ["r1"], "first")
    with pytest.raises(DeploymentError, match="not a rollback instruction to reference-v9"):
        world.deployments.rollback(["r1"], "reference-v9", world.rollback(v1, 3), "wrong name")
    with pytest.raises(DeploymentError, match="rollback instruction; use rollback"):
        world.deployments.assign(world.rollback(v1, 4), ["r1"], "wrong call")


def test_a_cut_download_resumes_after_the_complete_files(world):
    r1 = world.client("r1")
    v1 = world.release("v1", 1)
    world.deployments.assign(v1, ["r1"], "first")
    offer = world.server.server.releases.on_poll("r1", ReleasePoll("", 0))
    partial = r1.incoming / offer.content_sha256[:16]
    partial.mkdir()
    first = offer.files[0]
    shutil.copy(v1 / first.path, partial / first.path)
    offsets = file_offsets(offer.files)
    assert r1._complete_chunks(partial, offer, offsets) == offsets[1] // offer.chunk_size
    assert r1.poll_once().installed


def test_bundle_path_changes_only_between_episodes():
    switch = BundleSwitch()
    v2 = "/models/versions/reference-v2"
    start = EpisodeStart("ep1", "push", "r1", 20.0, 1)
    switch.on_event(start)
    assert switch.due(None) is None and switch.due(v2) is None  # during an episode: never
    switch.on_event(EpisodeEnd("ep1", "done", 10, True))
    assert switch.due(v2) == v2
    switch.sent(v2)
    assert switch.due(v2) is None  # one request at a time
    switch.done(v2, None)  # no answer: ask again
    assert switch.due(v2) == v2
    switch.sent(v2)
    switch.done(v2, True)
    assert switch.due(v2) is None  # set once
    switch.on_event(EpisodeStart("ep2", "push", "r1", 20.0, 2))
    assert switch.due("/models/versions/reference-v3") is None
    switch.on_event(EpisodeEnd("ep2", "done", 10, False))
    switch.sent("/models/versions/reference-v3")
    switch.done("/models/versions/reference-v3", False, "bundle refused")
    assert switch.refusal == "bundle refused" and switch.due("/models/versions/reference-v3") is None


def agent_status(diagnostics, name: str = "fleet_agent: uploads"):
    for msg in reversed(diagnostics):
        for status in msg.status:
            if status.name == name:
                return status
    return None


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def test_an_empty_endpoint_idles_quietly(tmp_path):
    node = subprocess.Popen([sys.executable, "-m", "robot_runtime.nodes.fleet_agent", "--ros-args",
                             "-p", "server_endpoint:=''", "-p", f"model_root:={tmp_path / 'models'}"])
    client = GraphClient("fleet_agent_idle_test")
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        status = wait(lambda: agent_status(diagnostics), 30, "diagnostics")
        assert status.level == status.OK and "disabled" in status.message
        assert node.poll() is None and not (tmp_path / "models").exists()
    finally:
        client.close()
        node.terminate()
        assert node.wait(10) == 0


def test_bundle_path_follows_the_installed_release_after_the_episode_ends(tmp_path):
    world = World(tmp_path, robots=("r1",))
    diagnostics = []
    models = tmp_path / "robot" / "models"
    params = tmp_path / "agent.yaml"
    params.write_text(yaml.safe_dump({"fleet_agent": {"ros__parameters": {
        "server_endpoint": world.server.endpoint, "key_file": str(world.made.robot("r1")),
        "server_key_file": str(world.made.server_public), "store_path": str(tmp_path / "robot" / "episodes"),
        "model_root": str(models), "trust_dir": str(world.trust), "release_poll_s": 0.2,
        "cameras": ["corner", "gripperPOV"], "image_size": 96, "state_names": list(STATE_NAMES),
        "action_names": list(ACTION_NAMES), "action_low": [-1.0] * 4, "action_high": [1.0] * 4}}}))
    policy = subprocess.Popen([sys.executable, "-m", "robot_runtime.nodes.policy_node"])
    client = GraphClient("fleet_agent_release_test")
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    events = client.node.create_publisher(String, ros_io.EPISODE_EVENTS_TOPIC, ros_io.LATCHED_QOS)
    agent = subprocess.Popen([sys.executable, "-m", "robot_runtime.nodes.fleet_agent", "--ros-args",
                              "--params-file", str(params)])
    try:
        client.wait_for_graph(["policy_node", "fleet_agent"], timeout=60)
        time.sleep(1.0)  # the event publisher matched to both nodes
        events.publish(ros_io.to_string_msg(EpisodeStart("ep1", "push", "r1", 20.0, 1)))
        time.sleep(1.0)
        world.deployments.assign(world.release("v1", 1), ["r1"], "first model")
        installed = wait(lambda: current_version(models), 30, "the release to be installed")
        time.sleep(3.0)  # past the agent's settle time, with the episode still running
        assert client.get_parameters("policy_node", ["bundle_path"])["bundle_path"] == ""
        events.publish(ros_io.to_string_msg(EpisodeEnd("ep1", "done", 10, True)))
        wait(lambda: client.get_parameters("policy_node", ["bundle_path"])["bundle_path"] == str(installed), 30,
             "bundle_path to be set")
        assert world.deployments.robot_states()["r1"].current == "reference-v1"
        models_status = wait(lambda: agent_status(diagnostics, "fleet_agent: models"), 10, "model diagnostics")
        assert "running reference-v1" in models_status.message, models_status.message
    finally:
        client.close()
        for process in (agent, policy):
            process.terminate()
        for process in (agent, policy):
            process.wait(10)
        world.close()
