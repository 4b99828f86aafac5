"""Durable files and safe names: the helpers every writer and every path built from outside input go through."""
import json
import os
import stat

import pytest

from robot_runtime.episode import EpisodeError, EpisodeLayout, EpisodeMetadata, EpisodeStore
from robot_runtime.files import (
    UnsafeNameError,
    check_name,
    replace_atomically,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "engine.bin"
    write_bytes_atomic(target, b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["engine.bin"]


def test_the_file_and_its_directory_are_flushed_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_bytes_atomic(tmp_path / "x", b"1")
    assert synced[0].startswith(str(tmp_path / ".x.")) and synced[-1] == str(tmp_path)


@pytest.mark.parametrize("name", ["ep001", "sim-20261202T101010-a1b2c3", "policy@v3", "a.b_c-d"])
def test_safe_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "a b", "a\x00b", "x" * 129,
                                  "a\\b", 5, None, ["a"]])
def test_names_that_could_escape_or_confuse_a_path_are_refused(name):
    with pytest.raises(UnsafeNameError, match="not allowed"):
        check_name(name, "episode id")


def test_an_episode_id_from_outside_never_becomes_a_path_outside_the_store(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    layout = EpisodeLayout(cameras={}, state_names=("s",), action_names=("a",))
    with pytest.raises(EpisodeError, match="episode id '../../escaped' is not allowed"):
        store.writer(layout, EpisodeMetadata(task="t", robot_id="r1", control_rate_hz=10.0, episode_id="../../escaped"))
    with pytest.raises(EpisodeError, match="not allowed"):
        store.label("../x", "success")
    assert not (tmp_path / "escaped").exists()


def test_sha256_of_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_files_are_readable_by_others_unless_secret(tmp_path):
    write_bytes_atomic(tmp_path / "commit.json", b"{}")
    write_bytes_atomic(tmp_path / "secret.pem", b"k", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "commit.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "secret.pem").st_mode) == 0o600
