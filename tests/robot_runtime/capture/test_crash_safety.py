"""kill -9 the recorder at random moments: committed episodes survive bit for bit, partial ones
are salvaged as truncated prefixes or quarantined, and the store always opens."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_runtime.episode import EpisodeStore

from codec_cases import CASES, IDS, assert_frames_match
from crash_writer import CHUNK, LAYOUT, episode_steps
from repo import SUPPORT as HERE

TRIALS = {"lossless": 20}  # the lossy codecs' kills find the same write path: fewer each
LOSSY_TRIALS = 8


def assert_matches_sent(ep, run: int, k: int) -> None:
    assert ep.record.files and ep.verify() == []  # committed or salvaged, it carries its checksums
    sent = episode_steps(run, k)
    if not ep.meta["truncated"]:
        assert ep.steps == len(sent) and ep.outcome == "success"
    else:
        assert 0 < ep.steps <= len(sent) and ep.outcome == "unlabeled"  # its end was never recorded
    sent = sent[:ep.steps]
    for cam in LAYOUT.cameras:
        assert_frames_match(ep.images(cam), np.stack([s.images[cam] for s in sent]), ep.codecs[cam], CHUNK)
    np.testing.assert_array_equal(ep.array("state"), np.stack([s.state for s in sent]))
    np.testing.assert_array_equal(ep.array("action"), np.stack([s.action for s in sent]))
    np.testing.assert_array_equal(ep.array("policy_action"), np.stack([s.policy_action for s in sent]))
    np.testing.assert_array_equal(ep.array("intervention"), [s.intervention for s in sent])
    np.testing.assert_array_equal(ep.array("timestamp"), [s.timestamp for s in sent])


@pytest.mark.parametrize("codec", CASES, ids=IDS)
def test_kill_minus_nine_never_loses_or_corrupts_committed_episodes(tmp_path, codec):
    trials = TRIALS.get(codec.name, LOSSY_TRIALS)
    store_root = tmp_path / "store"
    rng = np.random.default_rng(1234)
    committed_before: dict[str, float] = {}
    outcomes = {"salvaged": 0, "quarantined": 0, "completed": 0}
    for run in range(trials):
        child = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(store_root), str(run),
                                  codec.name],
                                 cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout.readline() == b"writing\n", child.stderr.read().decode()[-2000:]
        time.sleep(rng.uniform(0.2, 2.2))  # somewhere in the write path
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
                assert ep.codecs == dict.fromkeys(LAYOUT.cameras, codec)
                assert_matches_sent(ep, ep.meta["extra"]["run"], ep.meta["extra"]["k"])
                committed_before[episode_id] = (store.episodes_dir / episode_id / "commit.json").stat().st_mtime
    print(f"{codec.name}: {trials} kills: {len(committed_before)} episodes readable, {outcomes}")
    assert len(committed_before) > trials  # the writer made real progress between kills
    assert outcomes["salvaged"] + outcomes["quarantined"] + outcomes["completed"] >= trials // 2
