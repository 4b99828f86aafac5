"""The fleet_agent node over DDS: it uploads the recorder's store and says so on /diagnostics."""
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from fleet_world import ServerThread, make_keys, write_episode

from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes.graph_client import GraphClient


def agent_status(diagnostics):
    for msg in reversed(diagnostics):
        for status in msg.status:
            if status.name == "fleet_agent: uploads":
                return status, {kv.key: kv.value for kv in status.values}
    return None, {}


def test_the_node_uploads_and_reports_on_diagnostics(tmp_path):
    made = make_keys(tmp_path)
    robot = EpisodeStore(tmp_path / "robot")
    for i in range(2):
        write_episode(robot, f"r1-ep{i}", seed=i)
    with ServerThread(tmp_path / "fleet", made) as server:
        node = subprocess.Popen([sys.executable, "-m", "robot_runtime.nodes.fleet_agent", "--ros-args",
                                 "-p", f"store_path:={robot.root}", "-p", f"server_endpoint:={server.endpoint}",
                                 "-p", f"key_file:={made.robot('r1')}", "-p", f"server_key_file:={made.server_public}",
                                 "-p", "chunk_size:=16384", "-p", "scan_interval_s:=0.2"])
        client = GraphClient("fleet_agent_test")
        diagnostics = []
        client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        try:
            deadline = time.monotonic() + 30
            while agent_status(diagnostics)[1].get("stored") != "2" and time.monotonic() < deadline:
                time.sleep(0.1)
            status, values = agent_status(diagnostics)
            assert status is not None and status.level == status.OK and values["pending"] == "0"
        finally:
            client.close()
            node.terminate()
            assert node.wait(10) == 0
    assert EpisodeStore(tmp_path / "fleet").episode_ids() == ["r1-ep0", "r1-ep1"]


def test_the_node_reports_why_it_cannot_upload(tmp_path):
    node = subprocess.Popen([sys.executable, "-m", "robot_runtime.nodes.fleet_agent", "--ros-args",
                             "-p", f"store_path:={tmp_path / 'store'}", "-p", f"key_file:={tmp_path / 'missing'}"])
    client = GraphClient("fleet_agent_test")
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        deadline = time.monotonic() + 30
        while agent_status(diagnostics)[0] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        status, _ = agent_status(diagnostics)
        assert status.level == status.ERROR and "not uploading" in status.message and "missing" in status.message
    finally:
        client.close()
        node.terminate()
        node.wait(10)
