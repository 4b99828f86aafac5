"""benchmarks/recap_metaworld.py --image-codec with tiny budgets: round-0 BC only, trained from a store whose
cameras are kept through the lossy codec, and codec choices it cannot use refused by name."""
import json
import subprocess
import sys

import pytest

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.episode import EpisodeStore

from repo import ROOT

SCRIPT = ROOT / "benchmarks" / "recap_metaworld.py"


def run_script(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def test_round_zero_trains_from_a_lossy_store(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = run_script(["--quick", "--obs", "pixels", "--rounds", "0", "--image-codec", "h264:30",
                       "--out", str(out), "--work", str(work)])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["image_codec"] == {"codec": "h264", "quality": 30}
    assert results["target"] == {}
    assert all(len(rounds) == 1 for rounds in results["results"]["push-v3"].values())   # round 0 only
    store = EpisodeStore(next(work.rglob("episodes")), create=False)
    episode = store.open(store.episode_ids()[0])
    assert set(episode.codecs.values()) == {CameraCodec("h264", 30)}


@pytest.mark.parametrize("args, message", [
    (["--image-codec", "h265"], "is not one of"),
    (["--image-codec", "h264:99"], "not an integer in [0, 51]"),
    (["--image-codec", "corner=h264"], "one codec for every camera"),
    (["--obs", "state", "--image-codec", "h264"], "--obs state records no cameras"),
    (["--rounds", "-1"], "--rounds must be >= 0"),
])
def test_bad_codec_choices_are_refused_by_name(tmp_path, args, message):
    done = run_script(["--quick", "--obs", "pixels", *args, "--out", str(tmp_path / "out")])
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
