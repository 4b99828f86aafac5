"""Camera frames over real DDS in every encoding and compressed format a driver sends, converted at the edge.

Two copies of policy_node and the recorder run side by side, one pair under /raw (image_transport raw) and one
under /compressed (image_transport compressed). Each format is played as a robot would: the recorder stores
exactly the RGB frames that were sent (jpeg: nearly), and the policy answers every tick; frames of the wrong
size or an unsupported encoding are refused with a warning, and the policy holds.
"""
import time

import numpy as np
import pytest

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes.graph_client import GraphClient

from bundle_factory import make_reference_bundle
from dds_feeder import Feeder, compressed, raw

HOLD_DELTAS = slice(0, 3)  # ee_dx, ee_dy, ee_dz hold at zero (config/sim.yaml)
# Smooth, with a different level per channel: RGB order shows, and jpeg keeps it close.
FRAME = np.stack([np.tile(np.linspace(40, 220, 96), (96, 1)), np.full((96, 96), 120.0),
                  np.tile(np.linspace(200, 60, 96)[:, None], (1, 96))], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    bundle = make_reference_bundle(root / "bundle")
    processes, clients = [], {}
    try:
        for transport in ("raw", "compressed"):
            processes.append(GraphProcesses("sim", {
                "policy_node": {"bundle_path": str(bundle.path), "image_transport": transport},
                # lossless: what the frames became on the wire is compared pixel for pixel
                "recorder": {"store_path": str(root / transport), "image_transport": transport,
                             "image_codec": "lossless"}},
                log_dir=root / transport / "logs", only=["policy_node", "recorder"], namespace=transport).start())
        for transport in ("raw", "compressed"):
            client = clients[transport] = GraphClient(f"images_{transport}", namespace=transport)
            client.wait_for_graph(["policy_node", "recorder"])
            client.wait_for(lambda c=client: c.policy_status.get("state") == "serving", 30, "the policy to serve")
        yield clients, root
    finally:
        for client in reversed(clients.values()):  # the first one owns the rclpy context
            client.close()
        for graph in processes:
            graph.stop()


def record(client, feeder, root, transport):
    """One short episode through `feeder`: (its commit, its episode, the stamps sent)."""
    time.sleep(0.5)  # the feeder's publishers match
    episode_id = feeder.start()
    stamps = feeder.play(1.0, executed=True, frame=FRAME)
    feeder.end(episode_id, len(stamps) - 1)
    commit = client.wait_for_commit(episode_id, 15)
    return commit, EpisodeStore(root / transport).open(episode_id), stamps


@pytest.mark.parametrize("transport, frames, tolerance", [
    ("raw", raw("rgb8"), 0), ("raw", raw("bgr8"), 0), ("raw", raw("rgb8", pad=32), 0),
    ("raw", raw("mono8"), None), ("compressed", compressed("png"), 0), ("compressed", compressed("jpeg"), 12),
], ids=["rgb8", "bgr8", "rgb8-padded", "mono8", "png", "jpeg"])
def test_each_format_is_recorded_as_rgb_and_drives_the_policy(graphs, transport, frames, tolerance):
    clients, root = graphs
    client = clients[transport]
    feeder = Feeder(client, frames=frames)
    feeder.state[:] = 0.3  # a state the reference policy answers with motion
    commit, episode, stamps = record(client, feeder, root, transport)
    assert commit["steps"] >= len(stamps) - 3
    recorded = episode.images("corner")[:].astype(int)
    expected = np.repeat(FRAME[:, :, :1], 3, axis=2) if tolerance is None else FRAME
    assert np.abs(recorded - expected).max() <= (tolerance or 0)
    answered = feeder.commands_for(stamps)
    assert len(answered) >= len(stamps) - 2
    moving = [c for c in answered.values() if np.any(np.array(c.position)[HOLD_DELTAS] != 0.0)]
    assert len(moving) >= len(answered) - 3  # acting on the frames, not holding for want of them


@pytest.mark.parametrize("frames, size, warning", [
    (raw("rgb8"), 64, "dropping frame: frame is 64x64, expected 96x96"),
    (raw("32FC1"), 96, "dropping frame: encoding '32FC1' is not one of"),
], ids=["wrong-size", "unsupported-encoding"])
def test_frames_that_do_not_fit_hold_the_robot_with_a_warning(graphs, frames, size, warning):
    clients, root = graphs
    client = clients["raw"]
    feeder = Feeder(client, frames=frames)
    time.sleep(0.5)
    feeder.start()
    feeder.state[:] = 0.3  # a state the reference policy answers with motion
    stamps = feeder.play(1.5, size=size)
    answered = feeder.commands_for(stamps)
    assert len(answered) >= len(stamps) - 2  # every tick answered: with the hold
    assert all(np.all(np.array(c.position)[HOLD_DELTAS] == 0.0) for c in answered.values())
    log = (root / "raw" / "logs" / "policy_node.log").read_text()
    assert warning in log and "Traceback" not in log
