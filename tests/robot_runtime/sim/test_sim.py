"""The simulated robot and its scripted operator, without ROS."""
import numpy as np
import pytest

from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, MetaWorldRobot, SimConfig, UnknownTaskError
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator


@pytest.fixture(scope="module")
def robot():
    r = MetaWorldRobot(SimConfig(env_name="push-v3", max_steps=120))
    yield r
    r.close()


def test_reset_is_seeded_and_images_have_the_configured_shape(robot):
    a, b, c = robot.reset(3), robot.reset(3), robot.reset(4)
    np.testing.assert_array_equal(a.state, b.state)
    assert not np.allclose(a.state[18:21], c.state[18:21])  # another goal
    assert a.state.shape == (len(STATE_NAMES),)
    assert {k: v.shape for k, v in a.images.items()} == {"corner": (96, 96, 3), "gripperPOV": (96, 96, 3)}
    assert a.images["corner"].std() > 5  # a rendered scene, not a blank frame


def test_expert_operator_solves_push(robot):
    operator = ScriptedOperator("push-v3", OperatorConfig(mode="demonstrate"))
    obs = robot.reset(0)
    while not (robot.success or robot.timed_out):
        engaged, action = operator.step(obs.state)
        assert engaged and action.shape == (len(ACTION_NAMES),)
        obs = robot.step(action)
    assert robot.success and robot.steps < 100


def test_operator_in_correct_mode_takes_over_a_stalled_robot(robot):
    operator = ScriptedOperator("push-v3", OperatorConfig(mode="correct", stall_steps=10, correction_steps=30))
    robot.config.max_steps = 250
    obs = robot.reset(1)
    engaged_steps = []
    while not (robot.success or robot.timed_out):
        engaged, action = operator.step(obs.state)
        engaged_steps.append(engaged)
        obs = robot.step(action if engaged else np.zeros(4))  # the "policy" does nothing
    assert not any(engaged_steps[:10]) and engaged_steps[10]  # takes over right after the stall
    assert operator.engagements >= 2 and robot.success  # repeated takeovers finish the task
    robot.config.max_steps = 120


def test_bad_inputs_are_refused(robot):
    robot.reset(0)
    with pytest.raises(ValueError, match="finite"):
        robot.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(UnknownTaskError):
        MetaWorldRobot(SimConfig(env_name="fly-to-the-moon-v3", render=False))
    with pytest.raises(ValueError, match="mode"):
        ScriptedOperator("push-v3", OperatorConfig(mode="sometimes"))


def test_in_process_rollout_records_corrections(tmp_path):
    from bundle_factory import make_reference_bundle
    from robot_runtime.episode import EpisodeStore
    from robot_runtime.runtime.policy import PolicyRunner
    from robot_runtime.sim.rollout import run_episode

    robot = MetaWorldRobot(SimConfig(env_name="push-v3", max_steps=60, render=False))
    store = EpisodeStore(tmp_path / "store")
    policy = PolicyRunner.load(make_reference_bundle(tmp_path / "b", cameras=()).path)
    operator = ScriptedOperator("push-v3", OperatorConfig(mode="correct", stall_steps=10))
    result = run_episode(robot, 5, policy, operator, store)
    ep = store.open(result.episode_id)
    assert ep.steps == result.steps == robot.steps and ep.layout.cameras == {}
    interventions = ep.array("intervention")
    assert interventions.sum() == result.intervention_steps > 0
    proposals = ep.array("policy_action")
    assert np.isfinite(proposals[~interventions]).all() and np.isnan(proposals[interventions]).all()
    np.testing.assert_array_equal(ep.array("action")[~interventions], proposals[~interventions])
    robot.close()
