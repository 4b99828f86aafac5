"""benchmarks/cotraining.py with tiny budgets: each task alone and co-trained at every weight, on the same
held-out layouts; finished pairs are reused; settings it cannot honour are refused with a reason."""
import importlib.util
import json
import subprocess
import sys

import pytest

from repo import ROOT

SCRIPT = ROOT / "benchmarks" / "cotraining.py"


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def test_alone_and_cotrained_on_the_same_layouts(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = run(["--quick", "--other-weights", "0.5", "--out", str(out), "--work", str(work)])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["table"]) == {"all", "push-v3", "reach-v3"}
    for row in results["table"].values():
        assert set(row) == {"alone", "cotrained_w0.5"}
    assert all(p["episodes"] == 6 for p in results["table"]["all"].values())      # 2 pairs x 3 episodes
    run_file = out / "runs" / "push-v3_seed0.json"
    assert json.loads(run_file.read_text())["other_tasks"] == ["reach-v3"]
    assert not any(work.iterdir())                                               # stores and checkpoints cleared
    before = run_file.read_text()
    again = run(["--quick", "--other-weights", "0.5", "--out", str(out), "--work", str(work)])
    assert again.returncode == 0 and run_file.read_text() == before


@pytest.mark.parametrize("args, message", [(["--other-weights", "0"], "> 0"), (["--other-weights", "x"], "numbers"),
                                           (["--tasks", "push-v3"], "at least two tasks")])
def test_settings_it_cannot_honour_are_refused(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))         # it imports recap_metaworld beside it
    spec = importlib.util.spec_from_file_location("cotraining", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
