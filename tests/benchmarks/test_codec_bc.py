"""benchmarks/codec_bc.py's rule on made-up finished runs: the smallest lossy setting whose pooled round-0
success lies inside lossless's 95% interval is the default, and none when every one falls outside."""
import json
import subprocess
import sys

from repo import ROOT

SCRIPT = ROOT / "benchmarks" / "codec_bc.py"
TASKS = ("push-v3", "reach-v3")


def finished(out, setting, successes):
    runs = out / setting / "runs"
    runs.mkdir(parents=True)
    for (task, seed), wins in zip([(t, s) for t in TASKS for s in range(2)], successes):
        point = {"success_rate": wins / 50, "successes": wins, "episodes": 50}
        (runs / f"{task}_seed{seed}.json").write_text(json.dumps({"points": {"bc": [point]}}))


def report(out, settings, sizes):
    sizes_file = out / "sizes.json"
    sizes_file.write_text(json.dumps({"codecs": {s: {"mb_per_1000_steps": mb} for s, mb in sizes.items()}}))
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--report-only", "--tasks",
                           ",".join(TASKS), "--settings", *settings, "--sizes", str(sizes_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def test_the_smallest_setting_inside_the_lossless_interval_is_the_default(tmp_path):
    finished(tmp_path, "lossless", [30, 28, 25, 27])        # 110 of 200: 55%, interval about 48-62%
    finished(tmp_path, "h264-30", [29, 27, 26, 27])         # 109: inside
    finished(tmp_path, "av1-44", [28, 28, 24, 26])          # 106: inside, and smaller
    finished(tmp_path, "jpeg-75", [20, 18, 15, 17])         # 70: outside
    results = report(tmp_path, ["lossless", "h264-30", "av1-44", "jpeg-75"],
                     {"lossless": 136.0, "h264-30": 1.9, "av1-44": 1.1, "jpeg-75": 0.5})
    assert results["settings"]["lossless"]["success_rate"] == 0.55
    assert results["default"] == "av1-44"        # jpeg-75 is smaller still, but outside the interval


def test_no_default_when_every_lossy_setting_costs_success(tmp_path):
    finished(tmp_path, "lossless", [30, 28, 25, 27])
    finished(tmp_path, "av1-44", [10, 12, 9, 11])
    assert report(tmp_path, ["lossless", "av1-44"], {"lossless": 136.0, "av1-44": 1.1})["default"] is None
