"""The on-robot runtime over real DDS: hot swap and rollback, watchdog, NaN hold, e-stop, limits.

policy_node and teleop_mux run as their own processes; the test plays the robot
(frames + joint states at 20 Hz) and the operator, and reads what reaches
`policy/command` and `robot/command`.
"""
import time

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder

HOLD_DELTAS = slice(0, 3)  # ee_dx, ee_dy, ee_dz hold at zero (config/sim.yaml)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    first = make_reference_bundle(root / "first", version="first")
    graph = GraphProcesses("sim", {"policy_node": {"bundle_path": str(first.path)}}, log_dir=root / "logs",
                           only=["policy_node", "teleop_mux"]).start()
    client = GraphClient("runtime_test")
    try:
        client.wait_for_graph(["policy_node", "teleop_mux"], {ros_io.STATE_TOPIC: (0, 2),
                                                              ros_io.POLICY_COMMAND_TOPIC: (1, 1)})
        feeder = Feeder(client)
        client.wait_for(lambda: client.policy_status.get("state") == "serving", 20, "the policy to serve")
        time.sleep(0.5)
        feeder.start()
        yield client, feeder, root
    finally:
        client.close()
        graph.stop()


def values(msg: JointState) -> np.ndarray:
    return np.array(msg.position)


def test_hot_swap_misses_no_tick(runtime):
    client, feeder, root = runtime
    second = make_reference_bundle(root / "second", version="second", seed=3)
    before = feeder.play(1.0)
    client.set_parameters("policy_node", {"bundle_path": str(second.path)})
    during = feeder.play(2.0)
    stamps = before + during
    answered = feeder.commands_for(stamps)
    missing = [i for i, s in enumerate(stamps) if s not in answered]
    assert not missing, f"ticks {missing} of {len(stamps)} went unanswered across the swap (at {len(before)})"
    client.wait_for(lambda: client.policy_status.get("version") == "second", 10, "the swap")
    assert client.policy_status["swaps"] >= 1


def test_new_bundle_with_invalid_outputs_is_rolled_back(runtime):
    client, feeder, root = runtime
    serving = client.policy_status["version"]
    feeder.state[0] = 1.0  # the bad bundle answers this state with NaN
    bad = make_reference_bundle(root / "nan", version="nan", nan_above=0.5)
    client.set_parameters("policy_node", {"bundle_path": str(bad.path)})  # valid files: accepted
    stamps = feeder.play(2.0)
    feeder.state[0] = 0.0
    answered = feeder.commands_for(stamps)
    assert all(np.isfinite(values(c)).all() for c in answered.values())  # NaN never left the node
    assert len(answered) >= len(stamps) - 1
    status = client.wait_for(lambda: "rejected new bundle reference@nan" in client.policy_status.get("error", "")
                             and client.policy_status, 10, "the rollback report")
    assert status["version"] == serving and status["rollbacks"] >= 1


def test_watchdog_holds_when_a_camera_goes_stale(runtime):
    client, feeder, root = runtime
    feeder.state[:] = 0.3  # a state the reference policy answers with motion
    feeder.play(0.5)
    stamps = feeder.play(1.5, cameras=["corner"])  # gripperPOV stops delivering
    answered = feeder.commands_for(stamps)
    late = [answered[s] for s in stamps[8:] if s in answered]
    assert len(late) >= len(stamps[8:]) - 1
    assert all(np.all(values(c)[HOLD_DELTAS] == 0.0) for c in late)  # holding still
    feeder.play(0.5)  # frames back: the policy drives again
    recovered = feeder.commands_for(feeder.play(1.0))
    assert all(np.any(values(c)[HOLD_DELTAS] != 0.0) for c in recovered.values())
    feeder.state[:] = 0.0


def test_estop_latches_until_cleared_for_policy_and_operator(runtime):
    client, feeder, root = runtime
    estop = client.node.create_publisher(Bool, ros_io.ESTOP_TOPIC, ros_io.LATCHED_QOS)
    teleop = client.node.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, ros_io.STREAM_QOS)
    time.sleep(0.5)
    estop.publish(Bool(data=True))
    time.sleep(0.3)
    stamps = feeder.play(1.0)
    for stamp in stamps[:5]:  # the operator tries to move too
        teleop.publish(ros_io.joint_state_msg(ACTION_NAMES, [1.0, 1.0, 1.0, 1.0], stamp))
    time.sleep(0.3)
    stopped = feeder.commands_for(stamps, "robot")
    assert len(stopped) >= len(stamps) - 1
    assert all(c.header.frame_id == "hold" and np.all(values(c)[HOLD_DELTAS] == 0.0) for c in stopped.values())
    estop.publish(Bool(data=False))  # releasing the button does not clear the latch
    time.sleep(0.6)  # past the deadman timeout: the policy has the robot again
    still = feeder.commands_for(feeder.play(0.5), "robot")
    assert all(c.header.frame_id == "hold" for c in still.values())
    reply = client.call(Trigger, "/teleop_mux/clear_estop", Trigger.Request())
    assert reply.success
    moving = feeder.commands_for(feeder.play(1.0), "robot")
    assert moving and all(c.header.frame_id == "policy" for c in moving.values())


def test_mux_clips_operator_commands_to_limits(runtime):
    client, feeder, root = runtime
    teleop = client.node.create_publisher(JointState, ros_io.TELEOP_COMMAND_TOPIC, ros_io.STREAM_QOS)
    time.sleep(0.5)
    stamp = client.node.get_clock().now().nanoseconds
    teleop.publish(ros_io.joint_state_msg(ACTION_NAMES, [5.0, -7.0, 0.5, np.nan], stamp))  # NaN -> hold
    teleop.publish(ros_io.joint_state_msg(ACTION_NAMES, [5.0, -7.0, 0.5, 0.2], stamp + 1))
    time.sleep(0.5)
    got = feeder.commands_for([stamp, stamp + 1], "robot")
    assert got[stamp].header.frame_id == "hold"
    np.testing.assert_allclose(values(got[stamp + 1]), [1.0, -1.0, 0.5, 0.2], atol=1e-6)
    assert got[stamp + 1].header.frame_id == "operator"


def test_lifecycle_deactivate_stops_commands_and_activate_resumes(runtime):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    client, feeder, root = runtime
    state = client.call(GetState, "/policy_node/get_state", GetState.Request())
    assert state.current_state.label == "active"
    change = ChangeState.Request()
    change.transition.id = Transition.TRANSITION_DEACTIVATE
    assert client.call(ChangeState, "/policy_node/change_state", change).success
    assert feeder.commands_for(feeder.play(1.0)) == {}  # inactive: not a single command
    change.transition.id = Transition.TRANSITION_ACTIVATE
    assert client.call(ChangeState, "/policy_node/change_state", change).success
    stamps = feeder.play(1.0)
    assert len(feeder.commands_for(stamps)) >= len(stamps) - 1
