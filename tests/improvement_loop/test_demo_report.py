"""The demo's summary and its command line, without running a fleet: a worse candidate shows as refused by the
gate with its numbers, and bad options are refused without a traceback."""
import subprocess
import sys

from robot_runtime.improvement_loop.daemon.config import Gate
from robot_runtime.improvement_loop.daemon.gate import decide
from robot_runtime.improvement_loop.demo.fleet import Report
from robot_runtime.improvement_loop.demo.report import render
from robot_runtime.improvement_loop.demo.robots import Ran
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, summarize


def figures(release: str, successes: int, episodes: int) -> dict:
    outcomes = [EpisodeOutcome(i < successes, 80 if i < successes else 120, 0) for i in range(episodes)]
    s = summarize(outcomes)
    return {"release": release, **s.to_json(), "ci95": list(s.ci95), "successes": successes}


def test_a_worse_candidate_is_shown_refused_by_the_gate():
    offline = {"ok": True, "problems": [], "parity_max_abs_error": 2e-7, "observations_checked": 64,
               "outside_bounds_fraction": 0.01}
    verdict = decide(figures("vla@r1", 3, 16), figures("vla@r0", 9, 16), offline, Gate(rule="not_worse", episodes=16))
    report = Report("push-v3", ["r1", "r2"], seconds={"cycle": 300.0, "total": 900.0})
    report.add("rollouts + corrections", [Ran("r1", "e1", EpisodeOutcome(True, 70, 10), "vla@r0", "vla@r0"),
                                          Ran("r2", "e2", EpisodeOutcome(False, 120, 40), "vla@r0", "vla@r0")])
    report.cycle = {"id": 1, "status": "refused", "state": "gate", "incumbent": "vla@r0", "candidate": "vla@r1",
                    "reason": f"gate: {verdict.reason}", "times": {}, "method": "filtered_bc"}
    report.decisions = [{"kind": "gate", "accepted": verdict.accepted, "reason": verdict.reason,
                         "numbers": verdict.numbers}]
    text = render(report)
    assert not verdict.accepted
    assert "**gate: refused**: worse: success 19% vs 56%: not worse by more than" in text
    assert "candidate 3/16; incumbent 9/16" in text
    assert "trained filtered_bc; incumbent vla@r0, candidate vla@r1" in text
    assert "| gate: candidate | simulated, layouts 100000+ | vla@r1 | 16 | 19% |" in text
    assert "| rollouts + corrections | r2 | vla@r0 | 1 | 0% | 0%-79% | 33.3% | - |" in text
    assert "Wall time: cycle 300 s, total 900 s" in text


def test_bad_options_are_refused_by_name():
    for argv, message in ((["--demos", "0"], "--demos must be at least 1"),
                          (["--domain-id", "300"], "--domain-id 300: a ROS_DOMAIN_ID is 0-232"),
                          (["--stop-after", "lunch"], "invalid choice: 'lunch'"),
                          (["--method", "dagger"], "invalid choice: 'dagger'")):
        done = subprocess.run([sys.executable, "-m", "robot_runtime.improvement_loop.demo", *argv],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
