"""benchmarks/recipe_study.py on a tiny recap_metaworld run: every recipe is trained on the run's final store
and scored beside filtered BC on calibration layouts, finished pairs are reused, and a run made with other
training settings is refused rather than compared unfairly."""
import json
import subprocess
import sys

from repo import ROOT

BENCH, STUDY = ROOT / "benchmarks" / "recap_metaworld.py", ROOT / "benchmarks" / "recipe_study.py"


def run(script, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900)


def test_recipes_scored_on_the_same_final_store(tmp_path):
    table, work, out = tmp_path / "table", tmp_path / "work", tmp_path / "study"
    done = run(BENCH, ["--quick", "--out", str(table), "--work", str(work)])
    assert done.returncode == 0, done.stderr[-3000:]
    args = ["--table", str(table), "--work", str(work), "--out", str(out), "--episodes", "2",
            "--scratch", str(tmp_path / "scratch")]

    refused = run(STUDY, args)                                  # the run is --quick: other training settings
    assert refused.returncode != 0 and "other settings" in refused.stderr

    done = run(STUDY, [*args, "--quick", "--guided", "3"])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["pooled"]) == {"filtered_bc", *(f"{recipe}_{score}" for recipe in ("candidate", "outcome")
                                                       for score in ("beta1", "beta2", "guided3"))}
    assert all(p["episodes"] == 2 for p in results["pooled"].values())
    assert results["recipes"]["outcome"]["threshold"] == "outcome"
    pair = json.loads((out / "pairs" / "push-v3_seed0.json").read_text())
    assert pair["recipes"]["outcome"]["positive_fraction_by_outcome"].get("success", 1.0) == 1.0
    assert "| push-v3 seed 0 |" in (out / "results.md").read_text()
    assert not (tmp_path / "scratch" / "push-v3_seed0").exists()    # checkpoints and bundles are cleared

    # Finished pairs are reused: their stores are no longer needed.
    again = run(STUDY, [*args, "--quick", "--guided", "3", "--work", str(tmp_path / "gone")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "pairs" / "push-v3_seed0.json").read_text()) == pair
