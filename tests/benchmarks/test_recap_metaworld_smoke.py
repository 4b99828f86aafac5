"""benchmarks/recap_metaworld.py --quick: the whole benchmark path on 1 task, 1 seed, 1 round, tiny training."""
import importlib.util
import json
import sys

import pytest

from repo import ROOT

SCRIPT = ROOT / "benchmarks" / "recap_metaworld.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("recap_metaworld", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results_table_and_figure(bench, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    bench.main(["--quick", "--out", str(out), "--work", str(work)])
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"push-v3", "average"}
    for task in ("push-v3", "average"):
        assert set(results["results"][task]) == set(bench.METHODS)
        for rounds in results["results"][task].values():
            assert len(rounds) == 2                                  # round 0 (shared BC start) and round 1
            for point in rounds:
                low, high = point["ci95"]
                assert 0 <= low <= point["success_rate"] <= high <= 1
                assert point["episodes"] == 4
                assert point["mean_steps_to_success"] is None or 0 < point["mean_steps_to_success"] <= 80
    start = {m: r[0]["success_rate"] for m, r in results["results"]["push-v3"].items()}
    assert len(set(start.values())) == 1                             # every method starts from the same policy
    run = results["runs"]["push-v3"][0]
    assert run["rounds"][0]["store_episodes"] == 3 + 4               # demos + one round of rollouts
    assert set(results["target"]) == {"recap_beta1", "recap_beta2"}
    table = (out / "results.md").read_text()
    assert "| push-v3 | recap_beta1 |" in table and "| average | awr |" in table and "## Target" in table
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "run.log").stat().st_size > 0
    assert not any(p.suffix in (".onnx", ".safetensors") or p.name == "episodes" for p in out.rglob("*"))
    # A second run with the same settings reuses the finished (task, seed) from --work.
    bench.main(["--quick", "--out", str(out), "--work", str(work)])
    assert "reusing" in (out / "run.log").read_text()
