"""The gate on real ONNX bundles in real MetaWorld: a worse candidate is refused, a better one released,
a broken one stopped by the offline checks; every verdict carries its numbers."""
from dataclasses import replace

import pytest
from daemon_world import TASK, reach_bundle, record_episodes

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.daemon.config import Gate
from robot_runtime.improvement_loop.daemon.gate import decide, evaluate, one_sided_p, simulate
from robot_runtime.sim.metaworld_robot import instruction_for

from bundle_factory import make_reference_bundle

CFG = Gate(tasks=[TASK], episodes=4, max_steps=60, first_layout=500, observations=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    ids = record_episodes(root / "store", 2, max_steps=30)
    return {"store": EpisodeStore(root / "store"), "ids": ids, "robots": {},
            "good": str(reach_bundle(root / "good", 10.0, "good")), "still": str(reach_bundle(root / "still", 0.0,
                                                                                                 "still"))}


def test_a_worse_candidate_is_refused_and_a_better_one_released(world):
    worse = evaluate(world["still"], world["good"], CFG, world["store"], world["ids"], world["robots"])
    assert not worse.accepted and worse.reason.startswith("not better: success 0% vs 100%")
    n = worse.numbers
    assert (n["candidate"]["release"], n["incumbent"]["release"]) == ("ref@still", "ref@good")
    assert n["candidate"]["episodes"] == n["incumbent"]["episodes"] == 4 and n["p_value"] > 0.99
    assert n["offline"]["ok"] and n["offline"]["observations_checked"] == 8
    better = evaluate(world["good"], world["still"], CFG, world["store"], world["ids"], world["robots"])
    assert better.accepted and better.numbers["p_value"] < 0.05, better.reason
    assert better.numbers["candidate"]["per_task"][TASK]["successes"] == 4


def test_equal_policies_pass_only_the_not_worse_rule(world):
    same = evaluate(world["still"], world["still"], CFG, world["store"], world["ids"], world["robots"])
    assert not same.accepted and "one-sided test p = 1" in same.reason
    figures = same.numbers["candidate"], same.numbers["incumbent"]
    for rule, accepted, reason in (("wilson", False, "not better: success 0% vs 0%: Wilson intervals"),
                                   ("not_worse", True, "not worse: success 0% vs 0%: not worse by more than")):
        verdict = decide(*figures, same.numbers["offline"], replace(CFG, rule=rule))
        assert verdict.accepted == accepted and verdict.reason.startswith(reason), verdict.reason


def test_a_candidate_the_operator_would_keep_rescuing_is_refused_on_interventions(world):
    """The scripted operator watches each simulated episode (never acting): a policy that stands still is one it
    would take over; with success out of the question (not_worse, margin 1) that alone refuses it."""
    lenient = replace(CFG, rule="not_worse", margin=1.0)
    verdict = evaluate(world["still"], world["good"], lenient, world["store"], world["ids"], world["robots"])
    c, i = verdict.numbers["candidate"], verdict.numbers["incumbent"]
    assert c["operator"] == i["operator"] == "watch" and c["intervention_rate"] > 0.3 and i["intervention_rate"] == 0
    assert not verdict.accepted and "intervention rate" in verdict.reason, verdict.reason
    assert c["success_rate"] == 0.0  # watching never helped it
    off = evaluate(world["still"], world["good"], replace(lenient, operator="off"), world["store"], world["ids"],
                   world["robots"])
    assert off.accepted and off.numbers["candidate"]["intervention_rate"] == 0.0, off.reason
    helped = simulate(world["still"], replace(CFG, operator="correct", max_steps=150), world["robots"])
    assert helped["success_rate"] > 0 and helped["intervention_rate"] > 0.3  # corrected, as a fleet operator would


def test_first_release_needs_the_minimum_success(world):
    assert evaluate(world["good"], None, CFG, world["store"], world["ids"], world["robots"]).accepted
    refused = evaluate(world["still"], None, CFG, world["store"], world["ids"], world["robots"])
    assert not refused.accepted and "first release: simulated success 0% is below the minimum 50%" in refused.reason


def test_nan_on_recorded_observations_stops_a_bundle_before_simulation(world, tmp_path):
    broken = make_reference_bundle(tmp_path / "nan", cameras=(), tasks=(instruction_for(TASK),), nan=True)
    verdict = evaluate(str(broken.path), world["good"], CFG, world["store"], world["ids"], world["robots"])
    assert not verdict.accepted and "offline checks failed" in verdict.reason and "NaN" in verdict.reason
    assert "incumbent" in verdict.numbers and verdict.numbers["incumbent"] is None


def test_one_sided_p():
    assert one_sided_p(10, 10, 0, 10) < 1e-4 and one_sided_p(0, 10, 10, 10) > 0.9999
    assert one_sided_p(5, 10, 5, 10) == pytest.approx(0.5) and one_sided_p(0, 5, 0, 5) == 1.0
