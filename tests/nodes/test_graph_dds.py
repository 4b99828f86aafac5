"""End to end over real DDS: the nodes as separate processes, episodes checked in Zarr."""
import json

import numpy as np
import pytest

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes.graph_client import SIM_NODES, SIM_TOPICS, GraphClient
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

from bundle_factory import make_reference_bundle


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    store = root / "episodes"
    overrides = {"recorder": {"store_path": str(store)}, "sim_robot": {"max_steps": 150},
                 "scripted_operator": {"mode": "demonstrate", "stall_steps": 10}}
    processes = GraphProcesses("sim", overrides, log_dir=root / "logs").start()
    client = GraphClient("test_client")
    try:
        client.wait_for_graph(SIM_NODES, SIM_TOPICS)
        yield client, processes, root, EpisodeStore(store)
    finally:
        client.close()
        codes = processes.stop()
    unclean = {name: (root / "logs" / f"{name}.log").read_text()[-2000:] for name, code in codes.items() if code}
    assert not unclean, f"unclean shutdown: {codes}\n{unclean}"


def check_episode(ep, end, commit):
    n = ep.steps
    assert n == commit["steps"] == end["steps"] > 0, ep.meta["extra"]  # one recorded step per simulator step
    assert ep.outcome == ("success" if end["success"] else "failure")
    assert ep.layout.state_names == STATE_NAMES and ep.layout.action_names == ACTION_NAMES
    for cam in ("corner", "gripperPOV"):
        images = ep.images(cam)
        assert images.shape == (n, 96, 96, 3) and images.dtype == np.uint8
    assert ep.array("state").shape == (n, len(STATE_NAMES)) and ep.array("state").dtype == np.float32
    assert ep.array("action").shape == (n, 4) and np.isfinite(ep.array("action")).all()
    assert ep.array("intervention").dtype == bool
    assert np.all(np.diff(ep.array("timestamp")) > 0)


def test_demonstrations_then_policy_with_corrections(graph):
    client, processes, root, store = graph
    end, commit = client.run_episode(timeout=60)
    [demo] = store.episodes()
    check_episode(demo, end, commit)
    interventions = demo.array("intervention")
    assert end["success"], end  # the expert operator solves push well inside 150 steps
    held = demo.array("held")
    assert (interventions | held).all() and not (interventions & held).any()  # operator or hold, never policy
    assert held.mean() < 0.25, held.mean()  # a loaded 2-core machine may miss some ticks, not many
    assert np.isnan(demo.array("policy_action")).all()  # no policy was serving
    assert demo.meta["extra"]["calibration"]["corner"]["width"] == 96  # the camera geometry travels along
    assert demo.meta["policy_version"] == ""

    bundle = make_reference_bundle(root / "bundle", version="e2e")
    client.set_parameters("policy_node", {"bundle_path": str(bundle.path)})
    client.wait_for(lambda: client.policy_status.get("version") == "e2e", 10, "the policy to serve")
    client.set_parameters("scripted_operator", {"mode": "correct"})
    end, commit = client.run_episode(timeout=60)
    ep = store.open(commit["episode_id"])
    check_episode(ep, end, commit)
    assert ep.meta["policy_version"] == "reference@e2e"
    interventions, policy = ep.array("intervention"), ep.array("policy_action")
    assert not interventions[:5].any()  # the policy starts in control
    assert interventions.any()  # a going-nowhere policy gets corrected
    served = np.isfinite(policy).all(axis=1)
    assert served[1:].mean() > 0.9  # the policy proposed (almost) every step
    held = ep.array("held")
    assert held.mean() < 0.25, held.mean()
    autonomous = ~interventions & ~held & served
    np.testing.assert_allclose(ep.array("action")[autonomous], policy[autonomous], atol=1e-6)
    client.wait_for(lambda: client.policy_status.get("inferences", 0) > 0, 10, "policy status")

    # A hot swap between episodes lands at the next episode's first tick, after the recorder has
    # heard the start: the episode is credited to the bundle whose proposals it recorded.
    swapped = make_reference_bundle(root / "bundle2", version="e2e2")
    client.set_parameters("policy_node", {"bundle_path": str(swapped.path)})
    client.wait_for(lambda: client.policy_status.get("staged") == "reference@e2e2", 20, "the new bundle staged")
    assert client.policy_status["version"] == "e2e"  # still serving the old one until the next tick
    end, commit = client.run_episode(timeout=60)
    ep = store.open(commit["episode_id"])
    assert ep.meta["policy_version"] == "reference@e2e2", ep.meta["extra"].get("policy_versions")
    assert "policy_versions" not in ep.meta["extra"]  # no proposal of the old bundle in it


def test_policy_node_refuses_a_bad_bundle_and_keeps_the_good_one(graph):
    client, processes, root, store = graph
    bad = make_reference_bundle(root / "bad", version="bad")
    manifest = json.loads((bad.path / "manifest.json").read_text())
    manifest["chunk_length"] = 16  # consistent on its own, but the graph outputs chunks of 8
    (bad.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match=r"policy\.onnx: input 'noise'"):
        client.set_parameters("policy_node", {"bundle_path": str(bad.path)})
    assert client.policy_status["state"] == "serving"
    assert client.policy_status["version"] != "bad"
    processes.check()
