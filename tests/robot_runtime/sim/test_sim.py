"""The simulated robot, its scripted operator and the in-process rollout, without ROS."""
import itertools
import math

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


@pytest.fixture
def state_robot():
    r = MetaWorldRobot(SimConfig(env_name="push-v3", max_steps=60, render=False))
    yield r
    r.close()


@pytest.fixture
def state_policy(tmp_path):
    from robot_runtime.runtime.policy import PolicyRunner

    from bundle_factory import make_reference_bundle

    return PolicyRunner.load(make_reference_bundle(tmp_path / "b", cameras=()).path)


def test_in_process_rollout_records_corrections(tmp_path, state_robot, state_policy):
    from robot_runtime.episode import EpisodeStore
    from robot_runtime.runtime.executor import PolicyExecutor
    from robot_runtime.sim.rollout import run_episode

    store = EpisodeStore(tmp_path / "store")
    executor = PolicyExecutor(state_policy, realtime=False)
    operator = ScriptedOperator("push-v3", OperatorConfig(mode="correct", stall_steps=10))
    result = run_episode(state_robot, 5, executor, operator, store)
    ep = store.open(result.episode_id)
    assert ep.steps == result.steps == state_robot.steps and ep.layout.cameras == {}
    interventions = ep.array("intervention")
    assert interventions.sum() == result.intervention_steps > 0
    proposals = ep.array("policy_action")
    assert np.isfinite(proposals[~interventions]).all() and np.isnan(proposals[interventions]).all()
    np.testing.assert_array_equal(ep.array("action")[~interventions], proposals[~interventions])
    # The policy plans afresh at each hand-back, then every execution horizon (half the chunk).
    horizon = state_policy.manifest.chunk_length // 2
    spans = [len(list(steps)) for engaged, steps in itertools.groupby(interventions) if not engaged]
    assert len(spans) > 1 and executor.stats.chunks == sum(math.ceil(n / horizon) for n in spans)
    assert executor.stats.holds == 0
    # The same executor drives the next episode, as on the robot; it starts from a fresh plan.
    chunks = executor.stats.chunks
    alone = run_episode(state_robot, 6, executor)
    assert executor.stats.chunks - chunks == math.ceil(alone.steps / horizon)


def test_rollout_executes_chunks_as_policy_node_does(state_policy):
    """The sim runs what the robot runs: the executor's defaults are policy_node's configured parameters."""
    import inspect

    import yaml

    from robot_runtime.resources import share_dir
    from robot_runtime.runtime.executor import PolicyExecutor

    defaults = inspect.signature(PolicyExecutor).parameters
    for config in ("sim.yaml", "robot.yaml"):
        node = yaml.safe_load((share_dir("config") / config).read_text())["policy_node"]["ros__parameters"]
        for name in ("execution_horizon", "blend_steps"):
            assert node.get(name, defaults[name].default) == defaults[name].default, (config, name)
    executor = PolicyExecutor(state_policy, realtime=False)
    assert executor.scheduler.execution_horizon == state_policy.manifest.chunk_length // 2
    assert executor.scheduler.blend_steps == 2


def test_rollout_refuses_a_realtime_executor_and_a_bundle_that_gives_no_action(state_robot, state_policy):
    from robot_runtime.runtime.executor import PolicyExecutor
    from robot_runtime.runtime.policy import PolicyOutputError
    from robot_runtime.sim.rollout import run_episode

    realtime = PolicyExecutor(state_policy)
    with pytest.raises(ValueError, match="synchronous"):
        run_episode(state_robot, 0, realtime)
    realtime.close()

    def broken(*args):
        raise PolicyOutputError("bundle reference@v1 produced NaN or inf actions")

    state_policy.infer = broken
    with pytest.raises(RuntimeError, match="no action at step 0 .* NaN or inf"):
        run_episode(state_robot, 0, PolicyExecutor(state_policy, realtime=False))
