"""A round run as its four steps (the daemon's states) labels like a whole round and skips steps already done."""
from dataclasses import replace

import numpy as np
import pytest

from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.rounds import CycleResult, pretrain, result_path, round_data
from robot_runtime.improvement_loop.cycle.stages import STEPS, done_path, run_step

from tiny_cycle import config, write_episode


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root, work = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("work")
    store = EpisodeStore(root)
    for i in range(4):
        write_episode(store, i, "success")
    result = pretrain(root, work, config())
    for i in range(4, 9):
        write_episode(store, i, "failure" if i % 2 else "success", steps=25, stage="rollout", interventions=i == 6)
    return root, work, result


def test_steps_in_order_make_the_rounds_bundle_and_labels(pretrained):
    root, work, result = pretrained
    with pytest.raises(FileNotFoundError, match="step 'value' has not run"):
        run_step("advantages", root, work, result, config(), 1)
    outputs = {step: run_step(step, root, work, result_path(work, 0), config(), 1) for step in STEPS}
    final = CycleResult.load(result_path(work, 1))
    assert outputs["export"] == final.to_json()
    manifest = load_bundle(final.bundle_path).manifest
    assert manifest.conditioning_mode == "advantage" and manifest.parent_version == result.version
    assert manifest.training["positive_fraction"] == outputs["advantages"]["metrics"]["positive_fraction"]
    # The same rows, values and seeds as a whole round (rounds.round_data): the same values and indicators.
    whole = round_data(root, work, result, config(), 3)
    directory = done_path(work, 1, "value").parent
    np.testing.assert_allclose(np.load(directory / "values.npy"), whole.labels.values, rtol=1e-5)
    np.testing.assert_array_equal(np.load(directory / "indicators.npy"), whole.labels.indicators)


def test_a_done_step_is_not_run_again(pretrained):
    root, work, result = pretrained
    for step in STEPS:
        run_step(step, root, work, result, config(), 2)
    stamps = {step: done_path(work, 2, step).stat().st_mtime_ns for step in STEPS}
    for step in STEPS:
        run_step(step, root, work, result, config(), 2)
    assert stamps == {step: done_path(work, 2, step).stat().st_mtime_ns for step in STEPS}


def test_the_steps_honour_the_policy_options(pretrained):
    """The daemon's path trains with the same RECAP options as a whole round."""
    root, work, result = pretrained
    options = replace(config(), positive_share=0.7, indicators_from_null=True)
    for step in STEPS:
        run_step(step, root, work, result, options, 4)
    policy = CycleResult.load(result_path(work, 4)).metrics["policy"]
    assert policy["positive_share"] == 0.7 and policy["indicators_from_null"] is True


def test_a_baseline_method_runs_as_the_round(pretrained):
    """--method filtered_bc through the daemon's steps: the round's bundle is plain BC on the filtered rows."""
    root, work, result = pretrained
    options = replace(config(), method="filtered_bc")
    for step in STEPS:
        run_step(step, root, work, result, options, 5)
    final = CycleResult.load(result_path(work, 5))
    assert final.metrics["method"] == "filtered_bc" and final.metrics["policy"]["method"] == "filtered_bc"
    data = round_data(root, work, result, config(), 6).data
    assert final.metrics["policy"]["selection"]["rows"] == int((data.success | data.intervention).sum())
    manifest = load_bundle(final.bundle_path).manifest
    assert manifest.conditioning_mode == "none" and manifest.parent_version == result.version
