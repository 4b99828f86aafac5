"""policy_node alone over DDS: it refuses bad bundles at start-up and then commands nothing."""
import time

import numpy as np
import pytest

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.nodes import ros_io
from robot_runtime.nodes.graph_client import GraphClient

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder


@pytest.fixture
def broken_bundle(tmp_path):
    bundle = make_reference_bundle(tmp_path / "broken")
    (bundle.path / "manifest.json").write_text('{"schema_version": 1, "model_id": "x",')  # truncated
    return bundle


def test_refuses_broken_bundle_at_startup_then_serves_a_good_one(tmp_path, broken_bundle):
    graph = GraphProcesses("sim", {"policy_node": {"bundle_path": str(broken_bundle.path)}},
                           log_dir=tmp_path / "logs", only=["policy_node"]).start()
    client = GraphClient("policy_test")
    try:
        client.wait_for_graph(["policy_node"], {ros_io.STATE_TOPIC: (0, 1), ros_io.POLICY_COMMAND_TOPIC: (1, 0)})
        status = client.wait_for(lambda: client.policy_status.get("state") == "error" and client.policy_status,
                                 10, "the policy to refuse its bundle")
        assert "manifest.json: invalid JSON" in status["error"] and str(broken_bundle.path) in status["error"]
        feeder = Feeder(client)
        time.sleep(0.5)  # let the feeder's publishers match
        feeder.start()
        feeder.play(1.5)
        assert feeder.policy_commands == []  # a refused bundle commands nothing
        assert "refusing bundle" in (tmp_path / "logs" / "policy_node.log").read_text()

        good = make_reference_bundle(tmp_path / "good")
        client.set_parameters("policy_node", {"bundle_path": str(good.path)})
        feeder.start()
        stamps = feeder.play(1.5)
        answered = feeder.commands_for(stamps)
        assert len(answered) >= len(stamps) - 2  # the same feed does produce commands from a good bundle
        assert all(np.isfinite(c.position).all() for c in answered.values())
    finally:
        client.close()
        graph.stop()


def test_value_guidance_refuses_a_bundle_without_a_critic_then_serves_one_with(tmp_path):
    plain = make_reference_bundle(tmp_path / "plain", noise_scale=0.5)
    params = {"bundle_path": str(plain.path), "value_guided": True, "value_candidates": 4,
              "value_fallback": "refuse"}
    graph = GraphProcesses("sim", {"policy_node": params}, log_dir=tmp_path / "logs", only=["policy_node"]).start()
    client = GraphClient("policy_guided_test")
    try:
        client.wait_for_graph(["policy_node"], {ros_io.STATE_TOPIC: (0, 1), ros_io.POLICY_COMMAND_TOPIC: (1, 0)})
        status = client.wait_for(lambda: client.policy_status.get("state") == "error" and client.policy_status,
                                 10, "the policy to refuse a bundle without value.onnx")
        assert "no value.onnx" in status["error"] and "fallback 'refuse'" in status["error"]
        values = client.get_parameters("policy_node", ["value_guided", "value_candidates", "value_fallback"])
        assert values == {"value_guided": True, "value_candidates": 4, "value_fallback": "refuse"}
        guided = make_reference_bundle(tmp_path / "guided", noise_scale=0.5, critic_target=np.zeros((8, 4)))
        client.set_parameters("policy_node", {"bundle_path": str(guided.path)})
        feeder = Feeder(client)
        time.sleep(0.5)
        feeder.start()
        answered = feeder.commands_for(feeder.play(1.5))
        assert answered and all(np.isfinite(c.position).all() for c in answered.values())
    finally:
        client.close()
        graph.stop()
