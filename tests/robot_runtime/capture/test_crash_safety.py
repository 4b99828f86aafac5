"""kill -9 the recorder at random moments: committed episodes survive bit for bit, partial ones
are salvaged as truncated prefixes or quarantined, and the store always opens."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from robot_runtime.episode import EpisodeStore

from crash_writer import LAYOUT, episode_steps
from repo import SUPPORT as HERE

TRIALS = 20


def assert_matches_sent(ep, run: int, k: int) -> None:
    assert ep.record.files and ep.verify() == []  # committed or salvaged, it carries its checksums
    sent = episode_steps(run, k)
    if not ep.meta["truncated"]:
        assert ep.steps == len(sent) and ep.outcome == "success"
    else:
        assert 0 < ep.steps <= len(sent) and ep.outcome == "unlabeled"  # its end was never recorded
    sent = sent[:ep.steps]
    for cam in LAYOUT.cameras:
        np.testing.assert_array_equal(ep.images(cam), np.stack([s.images[cam] for s in sent]))
    np.testing.assert_array_equal(ep.array("state"), np.stack([s.state for s in sent]))
    np.testing.assert_array_equal(ep.array("action"), np.stack([s.action for s in sent]))
    np.testing.assert_array_equal(ep.array("policy_action"), np.stack([s.policy_action for s in sent]))
    np.testing.assert_array_equal(ep.array("intervention"), [s.intervention for s in sent])
    np.testing.assert_array_equal(ep.array("timestamp"), [s.timestamp for s in sent])


def test_kill_minus_nine_never_loses_or_corrupts_committed_episodes(tmp_path):
    store_root = tmp_path / "store"
    rng = np.random.default_rng(1234)
    committed_before: dict[str, float] = {}
    outcomes = {"salvaged": 0, "quarantined": 0, "completed": 0}
    for run in range(TRIALS):
        child = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(store_root), str(run)],
                                 cwd=HERE, stderr=subprocess.PIPE)
        time.sleep(1.0 + rng.uniform(0.0, 1.5))  # ~1 s to start, then somewhere in the write path
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]

        store = EpisodeStore(store_root)
        recovery = store.recover()
        outcomes["salvaged"] += len(recovery.salvaged)
        outcomes["quarantined"] += len(recovery.quarantined)
        outcomes["completed"] += len(recovery.completed)
        assert list(store.staging_dir.iterdir()) == []
        episodes = {ep.episode_id: ep for ep in store.episodes()}  # every committed episode opens
        for episode_id, mtime in committed_before.items():  # nothing committed earlier changed
            assert episode_id in episodes
            assert (store.episodes_dir / episode_id / "commit.json").stat().st_mtime == mtime
        for episode_id, ep in episodes.items():
            if episode_id not in committed_before:
                assert_matches_sent(ep, ep.meta["extra"]["run"], ep.meta["extra"]["k"])
                committed_before[episode_id] = (store.episodes_dir / episode_id / "commit.json").stat().st_mtime
    print(f"{TRIALS} kills: {len(committed_before)} episodes readable, {outcomes}")
    assert len(committed_before) > TRIALS  # the writer made real progress between kills
    assert outcomes["salvaged"] + outcomes["quarantined"] + outcomes["completed"] >= TRIALS // 2
