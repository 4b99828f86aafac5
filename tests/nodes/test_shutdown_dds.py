"""A node stopped with SIGTERM while it publishes exits cleanly (code 0, no traceback in its log).

rclpy's signal handler shuts the context down from under a running callback; before spin_node treated
that as the stop it is, sim_robot died with `RCLError: publisher's context is invalid` (exit 1) in
about 4 of 5 stops mid-episode, and the graph tests' teardown failed on it now and then. A node that
does not stop at all is killed, and first writes every thread's stack into its log (SIGUSR1,
faulthandler), so the hang can be found."""
import random
import subprocess
import sys
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


HUNG_NODE = """
import time
import rclpy
from robot_runtime.nodes import ros_io

def stuck_in_a_callback():
    time.sleep(3600)   # a callback that never returns: SIGTERM cannot stop the spin

rclpy.init()
node = rclpy.create_node("hung_node")
node.create_timer(0.05, stuck_in_a_callback)
ros_io.spin_node(node)
"""


def test_a_node_that_does_not_stop_leaves_its_stacks_in_its_log_before_the_kill(tmp_path):
    script = tmp_path / "hung_node.py"
    script.write_text(HUNG_NODE)
    log = tmp_path / "hung_node.log"
    processes = GraphProcesses("sim", log_dir=tmp_path, only=[])
    with log.open("w") as out:
        processes.processes["hung_node"] = subprocess.Popen([sys.executable, str(script)], stdout=out,
                                                            stderr=subprocess.STDOUT, env=processes.env)
    time.sleep(3.0)   # inside the callback by now
    started = time.monotonic()
    codes = processes.stop(timeout=2.0)
    assert codes["hung_node"] == -9 and time.monotonic() - started < 10
    text = log.read_text()
    assert "stuck_in_a_callback" in text and "hung_node.py" in text, text[-3000:]
