"""The uploader's small parts without a server: what retention may delete, the bandwidth cap, the state file."""
import threading
import time

from robot_runtime.fleet.uploader import Retention, TokenBucket, UploadState

HOUR = 3600.0


def test_retention_keeps_everything_by_default_and_never_an_unacknowledged_episode():
    episodes = [("old", 0.0, 500), ("mid", 10 * HOUR, 500), ("new", 20 * HOUR, 500)]
    everything = {"old", "mid", "new"}
    assert Retention().victims(episodes, everything, 100 * HOUR) == []
    assert Retention(max_age_hours=15).victims(episodes, everything, 26 * HOUR) == ["old", "mid"]
    assert Retention(max_age_hours=15).victims(episodes, {"mid"}, 26 * HOUR) == ["mid"]
    assert Retention(max_store_mb=0.0011).victims(episodes, everything, 0.0) == ["old"]  # 1.5 kB -> 1 kB
    assert Retention(max_store_mb=0.0001).victims(episodes, {"new"}, 0.0) == ["new"]


def test_the_token_bucket_holds_the_rate_after_its_burst():
    bucket, stop = TokenBucket(rate=200e3, burst=10e3), threading.Event()
    started = time.monotonic()
    for _ in range(11):
        bucket.take(10_000, stop)
    assert time.monotonic() - started >= 0.45  # 100 kB past the burst at 200 kB/s
    stop.set()
    started = time.monotonic()
    bucket.take(10_000_000, stop)  # a stopping uploader is never held
    assert time.monotonic() - started < 0.1


def test_an_unreadable_state_file_costs_only_questions(tmp_path):
    state = UploadState(tmp_path / "state.json")
    state.stored["r1-ep0"] = {"content": "c" * 64, "labels": ""}
    state.save()
    assert UploadState(tmp_path / "state.json").stored == state.stored  # survives a restart
    (tmp_path / "state.json").write_text('{"stored": [')  # torn by hand or a bad disk
    assert UploadState(tmp_path / "state.json").stored == {}
