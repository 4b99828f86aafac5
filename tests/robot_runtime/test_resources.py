"""Package data is found where each install puts it, and a missing file names every place searched."""
import os
import subprocess
import sys

import pytest

from robot_runtime.resources import SOURCE_ROOT, find_data_file, share_candidates, share_dir


def test_a_checkout_finds_its_own_folders_first():
    assert share_dir("config") == SOURCE_ROOT / "config"
    assert find_data_file("calibration", "sim_cameras.yaml") == SOURCE_ROOT / "calibration" / "sim_cameras.yaml"


def test_a_missing_file_names_every_place_it_looked():
    with pytest.raises(FileNotFoundError) as err:
        find_data_file("calibration", "no_such_cameras.yaml")
    for candidate in share_candidates("calibration"):
        assert str(candidate / "no_such_cameras.yaml") in str(err.value)
    with pytest.raises(FileNotFoundError, match="no nowhere/ directory among"):
        share_dir("nowhere")


def test_the_ament_index_is_searched_in_a_sourced_workspace(tmp_path):
    """A colcon install registers the package in the ament index; its share/ is a candidate (checked in a
    child process, since ament_index_python caches the prefix path)."""
    pytest.importorskip("ament_index_python")
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "robot_runtime").write_text("")
    (prefix / "share" / "robot_runtime" / "config").mkdir(parents=True)
    code = "from robot_runtime.resources import share_candidates; print([str(c) for c in share_candidates('config')])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "AMENT_PREFIX_PATH": str(prefix)})
    assert str(prefix / "share" / "robot_runtime" / "config") in done.stdout
