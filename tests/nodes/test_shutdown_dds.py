"""A node stopped with SIGTERM while it publishes exits cleanly (code 0, no traceback in its log).

rclpy's signal handler shuts the context down from under a running callback; before spin_node treated
that as the stop it is, sim_robot died with `RCLError: publisher's context is invalid` (exit 1) in
about 4 of 5 stops mid-episode, and the graph tests' teardown failed on it now and then."""
import random
import time

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.nodes.graph_client import GraphClient


def test_sim_robot_stopped_mid_episode_exits_cleanly(tmp_path):
    rng = random.Random(0)
    for attempt in range(4):
        logs = tmp_path / f"logs{attempt}"
        processes = GraphProcesses("sim", {"sim_robot": {"lockstep": False, "control_rate_hz": 100.0,
                                                         "max_steps": 1_000_000}},
                                   log_dir=logs, only=["sim_robot"]).start()
        client = GraphClient(f"shutdown_client_{attempt}")
        try:
            client.wait_for_graph(["sim_robot"])
            client.start_episode()
            time.sleep(rng.uniform(0.5, 1.5))  # publishing frames at 100 Hz when the signal comes
        finally:
            client.close()
            codes = processes.stop()
        log = (logs / "sim_robot.log").read_text()
        assert codes == {"sim_robot": 0}, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
