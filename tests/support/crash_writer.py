"""A recorder process for the kill -9 tests: writes deterministic episodes until it is killed.

Episode k of run `run` has a seeded length and seeded content, so the test can
regenerate exactly what was sent and compare it with what survived. Every camera
uses the codec named on the command line.
"""
import sys

import numpy as np

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.capture.recording import AsyncRecorder
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step

from codec_cases import camera_frames

LAYOUT = EpisodeLayout(cameras={"front": (24, 32), "wrist": (24, 32)}, state_names=("a", "b", "c"),
                       action_names=("x", "y"))
CHUNK = 10


def episode_length(run: int, k: int) -> int:
    return int(np.random.default_rng([run, k, 0]).integers(5, 80))


def episode_steps(run: int, k: int) -> list[Step]:
    rng = np.random.default_rng([run, k, 1])
    n = episode_length(run, k)
    frames = {c: camera_frames(rng, n, 24, 32) for c in LAYOUT.cameras}
    return [Step(timestamp=float(i), images={c: frames[c][i] for c in LAYOUT.cameras},
                 state=rng.normal(size=3).astype(np.float32), action=rng.normal(size=2).astype(np.float32),
                 policy_action=rng.normal(size=2).astype(np.float32), intervention=bool(i % 3 == 0))
            for i in range(n)]


def main(store_root: str, run: int, codec: str) -> None:
    store = EpisodeStore(store_root)
    store.recover()
    recorder = AsyncRecorder(store, queue_size=10_000, chunk_steps=CHUNK)
    codecs = dict.fromkeys(LAYOUT.cameras, CameraCodec(codec))
    CameraCodec(codec).zarr_codecs()  # loads its libraries
    print("writing", flush=True)  # started up (slow on a busy machine): the test's kill timer starts now
    for k in range(10_000):
        recorder.begin(LAYOUT, EpisodeMetadata(task="crash test", robot_id="crash", control_rate_hz=30.0,
                                               extra={"run": run, "k": k}), codecs)
        for step in episode_steps(run, k):
            recorder.add(step)
        recorder.end("success")
        recorder.flush()  # paced like a robot: one episode at a time


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
