"""Training rows streamed from the store: every row once per epoch, decoded in worker threads, as the
reader returns it; a damaged chunk is skipped and counted, never served."""
import numpy as np
import pytest

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.improvement_loop.data.stream import ChunkStream

from codec_cases import camera_frames

LAYOUT = EpisodeLayout({"front": (16, 16)}, ("x",), ("vx",))
LENGTHS = (21, 8, 30)
CHUNK = 8


def write_store(root, codec):
    store = EpisodeStore(root)
    rng = np.random.default_rng(3)
    for e, steps in enumerate(LENGTHS):
        writer = store.writer(LAYOUT, EpisodeMetadata(task="push", robot_id="r1", control_rate_hz=10.0,
                                                      episode_id=f"ep{e}"), chunk_steps=CHUNK,
                              codecs={"front": codec})
        frames = camera_frames(rng, steps, 16, 16)
        for t in range(steps):
            writer.append(Step(0.1 * t, {"front": frames[t]}, np.array([100 * e + t], np.float32),
                               np.array([-t], np.float32)))
        writer.commit("success")
    return store


@pytest.mark.parametrize("codec", [CameraCodec("lossless"), CameraCodec("h264")], ids=["lossless", "h264"])
def test_every_row_once_per_epoch_as_the_reader_returns_it(tmp_path, codec):
    store = write_store(tmp_path, codec)
    stream = ChunkStream(tmp_path, workers=2, buffer_chunks=3)
    assert len(stream) == sum(LENGTHS) and len(stream.units) == 3 + 1 + 4
    batches = list(stream.batches(batch_size=5, epochs=2))
    assert [len(b["step_index"]) for b in batches[:-1]] == [5] * (len(batches) - 1)
    rows = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    keys = list(zip(rows["episode_index"].tolist(), rows["step_index"].tolist()))
    assert sorted(keys) == sorted([(e, t) for e, n in enumerate(LENGTHS) for t in range(n)] * 2)
    assert keys[:sum(LENGTHS)] != sorted(keys[:sum(LENGTHS)])  # shuffled
    episodes = [store.open(eid) for eid in stream.episode_ids]
    for i, (e, t) in enumerate(keys):
        assert rows["state"][i, 0] == 100 * e + t and rows["action"][i, 0] == -t
        np.testing.assert_array_equal(rows["images/front"][i], episodes[e].images("front")[t])


def test_a_damaged_chunk_is_skipped_and_counted(tmp_path):
    store = write_store(tmp_path, CameraCodec("jpeg"))
    chunk = store.episodes_dir / "ep2/images/front/c/1/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    stream = ChunkStream(tmp_path, workers=1)
    served = np.concatenate([b["step_index"][b["episode_index"] == 2] for b in stream.batches(batch_size=4)])
    assert sorted(served.tolist()) == [t for t in range(30) if not 8 <= t < 16]
    [(where, why)] = stream.skipped.items()
    assert where == "ep2[8:16]" and "ep2/images/front/c/1/0/0/0: truncated to" in why


# a whole chunk's decoded rows are 6,336 bytes; 0.02 MB holds three whole chunks (or more of the shorter ones)
@pytest.mark.parametrize("cache_mb, decoded", [(0, (12, 16)), (1, (8, 8)), (0.02, (9, 13))],
                         ids=["off", "all", "part"])
def test_later_epochs_serve_cached_chunks_while_they_fit(tmp_path, cache_mb, decoded):
    write_store(tmp_path, CameraCodec("h264"))
    stream = ChunkStream(tmp_path, workers=2, buffer_chunks=3, cache_mb=cache_mb)
    batches = list(stream.batches(batch_size=5, epochs=2))
    keys = [(e, t) for b in batches for e, t in zip(b["episode_index"].tolist(), b["step_index"].tolist())]
    assert sorted(keys) == sorted([(e, t) for e, n in enumerate(LENGTHS) for t in range(n)] * 2)
    state = np.concatenate([b["state"][:, 0] for b in batches])
    index = np.array(keys)
    assert (state == 100 * index[:, 0] + index[:, 1]).all()  # cached rows are the rows, unchanged by serving
    assert decoded[0] <= stream.decoded <= decoded[1]


def test_a_negative_cache_is_refused(tmp_path):
    write_store(tmp_path, CameraCodec("lossless"))
    with pytest.raises(ValueError, match="cache_mb"):
        ChunkStream(tmp_path, cache_mb=-1)
