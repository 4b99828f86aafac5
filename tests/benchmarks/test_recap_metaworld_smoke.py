"""benchmarks/recap_metaworld.py with tiny budgets: the whole benchmark path, the demonstration search,
parallel (task, seed) pairs, resuming from --out, and the refusal of tasks without an expert."""
import importlib.util
import json
import shutil
import subprocess
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


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    """One --quick --guided 3 run: (its --out, its --work, the directory they live in)."""
    home = tmp_path_factory.mktemp("quick")
    out, work = home / "out", home / "work"
    bench.main(["--quick", "--guided", "3", "--out", str(out), "--work", str(work)])
    return out, work, home


def test_quick_run_writes_results_table_and_figure(bench, quick_run):
    out, work, tmp_path = quick_run
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"push-v3", "average"}
    for task in ("push-v3", "average"):
        assert set(results["results"][task]) == {*bench.METHODS, "recap_guided"}   # --guided: value guidance too
        for rounds in results["results"][task].values():
            assert len(rounds) == 2                                  # round 0 (shared BC start) and round 1
            for point in rounds:
                low, high = point["ci95"]
                assert 0 <= low <= point["success_rate"] <= high <= 1
                assert point["episodes"] == 4
                assert point["mean_steps_to_success"] is None or 0 < point["mean_steps_to_success"] <= 80
                assert point["successes_per_hour"] >= 0
    start = {m: r[0]["success_rate"] for m, r in results["results"]["push-v3"].items()}
    assert len(set(start.values())) == 1                             # every method starts from the same policy
    run = results["runs"]["push-v3"][0]
    assert run["rounds"][0]["store_episodes"] == 3 + 4               # demos + one round of rollouts
    assert set(run["rounds"][0]["label_quality"]) >= {"advantage_auc", "indicator_auc", "takeover_auc", "value_ece"}
    assert results["settings"]["labels"] == "candidate" and results["settings"]["pending_pairs"] == []
    assert set(results["target"]) == {"recap_beta1", "recap_beta2", "recap_guided"}
    table = (out / "results.md").read_text()
    assert "| push-v3 | recap_beta1 |" in table and "| average | awr |" in table and "## Target" in table
    assert "## Label quality per round" in table and "successes per robot hour" in table
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "run.log").stat().st_size > 0
    assert (out / "runs" / "push-v3_seed0.json").is_file()
    assert not any(p.suffix in (".onnx", ".safetensors") or p.name == "episodes" for p in out.rglob("*"))
    # A second run with the same settings reuses the finished (task, seed) from --out, even with --work gone.
    bench.main(["--quick", "--guided", "3", "--out", str(out), "--work", str(tmp_path / "elsewhere")])
    assert "reusing" in (out / "run.log").read_text()
    assert not (tmp_path / "elsewhere" / "push-v3").exists()


def run_script(args: list[str]) -> None:
    """The benchmark as a user runs it: its own process. --jobs forks workers, and a fork of this pytest process
    (whose earlier tests ran torch's thread pools) can deadlock in the children."""
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


def test_auto_demos_parallel_pairs_and_resume(tmp_path):
    """door-close-v3 has an expert but no hand-written instruction; two pairs run in two processes."""
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--quick", "--tasks", "push-v3,door-close-v3", "--demos", "auto", "--demo-tries", "2",
            "--calibration-episodes", "2", "--jobs", "2", "--out", str(out), "--work", str(work)]
    run_script(args)
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["pending_pairs"] == [] and len(results["settings"]["finished_pairs"]) == 2
    for task in ("push-v3", "door-close-v3"):
        run = results["runs"][task][0]
        search = run["demos"]["search"]
        assert 1 <= len(search) <= 2                                 # the cost cap
        assert run["demos"]["episodes"] in {s["demos"] for s in search}
        assert all(0 <= s["calibration_success_rate"] <= 1 for s in search)
        kept = {p.name for p in (work / task / "seed0").iterdir()}
        assert kept == {f"demos{run['demos']['episodes']}"}          # the counts not chosen are cleared
    assert "## Demonstration search" in (out / "results.md").read_text()
    # A pair killed midway: no result file, a half-written work directory. The rerun redoes that pair only.
    (out / "runs" / "door-close-v3_seed0.json").unlink()
    (work / "door-close-v3" / "seed0" / "half-written").write_text("junk")
    before = (out / "runs" / "push-v3_seed0.json").read_text()
    run_script(args)
    assert (out / "runs" / "door-close-v3_seed0.json").is_file()
    assert not (work / "door-close-v3" / "seed0" / "half-written").exists()
    assert (out / "runs" / "push-v3_seed0.json").read_text() == before
    assert "push-v3 seed 0: reusing" in (out / "run.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "fly-to-the-moon-v3"], "no scripted expert"),
    (["--tasks", "../push-v3"], "not allowed"),
    (["--demos", "push-v3=0"], ">= 1"),
    (["--jobs", "0"], "--jobs"),
    (["--guided", "1"], "--guided"),
    (["--positive-share", "1.5"], "--positive-share"),
])
def test_bad_settings_are_refused_with_a_reason(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_recipe_study_scores_recipes_on_the_same_final_store(quick_run):
    """benchmarks/recipe_study.py on the quick run: every recipe is trained on the run's final store and
    scored beside filtered BC on calibration layouts, finished pairs are reused, and a run made with other
    training settings is refused rather than compared unfairly."""
    table, work, home = quick_run
    out = home / "study"
    args = [sys.executable, str(ROOT / "benchmarks" / "recipe_study.py"), "--table", str(table), "--work", str(work),
            "--out", str(out), "--episodes", "2", "--scratch", str(home / "scratch")]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=600)    # --quick run, full settings
    assert refused.returncode == 2 and "other settings" in refused.stderr
    done = subprocess.run([*args, "--quick", "--guided", "3"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["pooled"]) == {"filtered_bc", *(f"{recipe}_{score}" for recipe in ("candidate", "outcome")
                                                       for score in ("beta1", "beta2", "guided3"))}
    assert all(p["episodes"] == 2 for p in results["pooled"].values())
    assert results["recipes"]["outcome"]["threshold"] == "outcome"
    pair = json.loads((out / "pairs" / "push-v3_seed0.json").read_text())
    assert pair["recipes"]["outcome"]["positive_fraction_by_outcome"].get("success", 1.0) == 1.0
    assert "| push-v3 seed 0 |" in (out / "results.md").read_text()
    assert not (home / "scratch" / "push-v3_seed0").exists()               # checkpoints and bundles are cleared
    again = subprocess.run([*args[:5], str(home / "gone"), *args[6:], "--quick", "--guided", "3"],
                           capture_output=True, text=True, timeout=600)      # finished pairs need no store
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "pairs" / "push-v3_seed0.json").read_text()) == pair


def test_hidden_outcomes_study_trains_each_store_and_scores_the_model(quick_run):
    """benchmarks/hidden_outcomes.py on the quick run: the store with every outcome, the judged episodes only
    and the judged plus the progress model's labels each train filtered BC and RECAP, scored on calibration
    layouts; the hidden episodes are never labeled in the run's own store."""
    table, work, home = quick_run
    out = home / "hidden"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hidden_outcomes.py"), "--table", str(table),
                           "--work", str(work), "--out", str(out), "--episodes", "2", "--min-confidence", "0.5",
                           "--quick", "--scratch", str(home / "hidden_scratch")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["pooled"]) == {f"{store}_{policy}" for store in ("all", "labeled_only", "model_labels")
                                      for policy in ("filtered_bc", "recap_beta1")}
    pair = json.loads((out / "pairs" / "push-v3_seed0.json").read_text())
    counts = {name: store["store_episodes"] for name, store in pair["stores"].items()}
    assert pair["hidden"] >= 1 and counts["labeled_only"] == counts["all"] - pair["hidden"]
    labeled = pair["model"]["labeled"] if pair["model"]["trained"] else 0
    assert counts["model_labels"] == counts["labeled_only"] + labeled
    assert not list(work.rglob("labels.json"))                          # the run's store keeps its outcomes
    assert not (home / "hidden_scratch" / "push-v3_seed0").exists()


def test_compare_runs_reports_an_options_effect_on_the_pairs_with_the_same_data(quick_run):
    """benchmarks/compare_runs.py (PostBC start vs BC start): the quick run against an edited copy of itself —
    one more success for RECAP in round 1 and a PostBC setting — is compared per method and round with the
    changed setting named; a pair whose demonstrations differ is left out, not compared."""
    table, _, home = quick_run
    other = home / "other"
    shutil.copytree(table / "runs", other / "runs")
    path = other / "runs" / "push-v3_seed0.json"
    run = json.loads(path.read_text())
    point = run["points"]["recap_beta1"][1]
    point["successes"] += 1
    point["success_rate"] = point["successes"] / point["episodes"]
    run["fingerprint"]["cycle"]["postbc"] = {"alpha": 1.0}
    path.write_text(json.dumps(run))
    out = home / "compare"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_runs.py"), "--base", str(table),
                           "--other", str(other), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["pairs"] == ["push-v3 seed 0"] and report["settings_that_differ"] == ["cycle.postbc"]
    recap, bc = report["table"]["recap_beta1"], report["table"]["bc"]
    episodes = point["episodes"]
    assert recap[1]["difference"] == pytest.approx(1 / episodes) and recap[0]["difference"] == 0
    assert recap[1]["other_gain"] - recap[1]["base_gain"] == pytest.approx(1 / episodes)
    assert all(row["difference"] == 0 for row in bc)
    low, high = recap[1]["difference_ci95"]
    assert low < 1 / episodes < high
    run["demos"]["episodes"] += 1                                        # other demonstrations: not the same data
    path.write_text(json.dumps(run))
    refused = subprocess.run(done.args, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no (task, seed) pair with the same demonstrations" in refused.stderr
