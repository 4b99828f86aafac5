"""A gamepad takes over the simulated robot and hands back, over DDS: flags, smoothness, replanning."""
import time

import numpy as np
from sensor_msgs.msg import JointState, Joy

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES

from bundle_factory import make_reference_bundle

MAX_DELTA = 0.25


def test_gamepad_takeover_and_smooth_handback(tmp_path):
    bundle = make_reference_bundle(tmp_path / "bundle")
    rate_limit = {"max_delta": [MAX_DELTA] * 4}
    sim = GraphProcesses("sim", {"recorder": {"store_path": str(tmp_path / "store")},
                                 "sim_robot": {"max_steps": 90, "lockstep": True},
                                 "policy_node": {"bundle_path": str(bundle.path)}, "teleop_mux": rate_limit},
                         log_dir=tmp_path / "logs", only=["sim_robot", "teleop_mux", "policy_node", "recorder"])
    pad = GraphProcesses("robot", {"teleop_device": {
        "device": "joy", "device_topic": "joy", "buttons_topic": "", "deadman": "buttons[4]",
        "action_names": list(ACTION_NAMES),
        "mapping": {"ee_dx": "axes[0] * 1.0", "ee_dy": "axes[1] * 1.0", "ee_dz": "0.0", "gripper": "-1.0"}}},
        log_dir=tmp_path / "logs", only=["teleop_device"])
    sim.start()
    pad.start()
    client = GraphClient("handover_test")
    try:
        client.wait_for_graph(["sim_robot", "teleop_mux", "policy_node", "recorder", "teleop_device"],
                              {ros_io.STATE_TOPIC: (1, 3), ros_io.TELEOP_COMMAND_TOPIC: (1, 1)})
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 20, "the policy")
        joy = client.node.create_publisher(Joy, "joy", ros_io.STREAM_QOS)
        steps = []
        client.node.create_subscription(JointState, ros_io.STATE_TOPIC, steps.append, ros_io.STREAM_QOS)
        time.sleep(0.5)
        episode_id = client.start_episode()

        def press(count, held):
            """Hold (or not) for `count` robot steps: a busy machine slows the lockstep sim, not this clock."""
            until, deadline = len(steps) + count, time.monotonic() + 60
            while len(steps) < until and time.monotonic() < deadline:
                joy.publish(Joy(axes=[1.0, -1.0], buttons=[0, 0, 0, 0, int(held)]))
                time.sleep(0.02)

        press(20, False)  # the policy drives
        press(30, True)   # the operator pushes the stick hard
        press(30, False)  # and lets go
        client.wait_for_end(episode_id, 30)
        client.wait_for_commit(episode_id)
        ep = EpisodeStore(tmp_path / "store").open(episode_id)
        flags, actions, held = ep.array("intervention"), ep.array("action"), ep.array("held")
        segments = ep.meta["intervention_segments"]
        assert len(segments) == 1 and segments[0][1] - segments[0][0] >= 10, segments
        start, end = segments[0]
        assert not flags[:start].any() and not flags[end:].any()
        operator = actions[start + 8:end]  # past the rate-limited ramp (at most 2 / 0.25 steps): the stick
        np.testing.assert_allclose(operator[:, :2], np.tile([1.0, -1.0], (len(operator), 1)), atol=1e-6)
        steps = np.abs(np.diff(actions[~held], axis=0))
        assert steps.max() <= MAX_DELTA + 1e-6  # no jump into the takeover nor back out of it
        log = (tmp_path / "logs" / "policy_node.log").read_text()
        assert "operator released: replanning from the current observation" in log
    finally:
        client.close()
        pad.stop()
        sim.stop()
