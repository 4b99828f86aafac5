"""One episode on the simulated robot in-process: policy, operator and recorder without DDS.

The benchmarks drive thousands of episodes; doing that over DDS at the control
rate would take days. This loop runs the same pieces the nodes wrap — the
robot's `PolicyExecutor` (synchronous: each chunk is inferred on the tick that
wants it, so simulated time never waits for inference; blending, the
real-time-chunking prefix and replanning as on the robot), `TeleopArbiter`
semantics (an engaged operator overrides the policy), the `EpisodeWriter` — as
fast as the simulator steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.runtime.executor import PolicyExecutor
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, MetaWorldRobot
from robot_runtime.sim.operator import ScriptedOperator


@dataclass
class RolloutResult:
    success: bool
    steps: int
    intervention_steps: int
    episode_id: str = ""
    wanted_steps: int = 0  # steps a watching operator would have taken over (run_episode's `watcher`)


def sim_layout(robot: MetaWorldRobot) -> EpisodeLayout:
    size = robot.config.image_size
    cameras = dict.fromkeys(robot.config.cameras, (size, size)) if robot.config.render else {}
    return EpisodeLayout(cameras=cameras, state_names=STATE_NAMES, action_names=ACTION_NAMES)


def run_episode(robot: MetaWorldRobot, seed: int, policy: PolicyExecutor | None = None,
                operator: ScriptedOperator | None = None, store: EpisodeStore | None = None,
                campaign: str = "", control_rate_hz: float = 20.0,
                image_codec: CameraCodec | None = None, watcher: ScriptedOperator | None = None) -> RolloutResult:
    """Run one episode from layout `seed`; record it into `store` if given, every camera with
    `image_codec` (default lossless), so that training reads the frames a robot's recorder would keep.

    `watcher` (an operator in `correct` mode) watches without ever acting: `wanted_steps` counts the steps
    it would have taken over, an intervention rate for a policy whose success stays its own.

    `policy` is a synchronous `PolicyExecutor(runner, realtime=False)`; its execution
    horizon and blend steps default to policy_node's. Each step the operator (if any)
    decides first; when it is not engaged the executor's tick supplies the action.
    When the operator hands back, the executor replans from the current observation
    instead of resuming a stale plan.
    """
    if policy is None and operator is None:
        raise ValueError("an episode needs a policy, an operator, or both")
    if policy is not None and policy.realtime:
        raise ValueError("simulated time needs a synchronous executor: PolicyExecutor(runner, realtime=False)")
    obs = robot.reset(seed)
    for person in (operator, watcher):
        if person is not None:
            person.reset()
    if policy is not None:
        policy.start_episode(robot.instruction)
    writer = None
    if store is not None:
        layout = sim_layout(robot)
        writer = store.writer(layout, EpisodeMetadata(
            task=robot.instruction, robot_id="sim-inprocess", control_rate_hz=control_rate_hz,
            policy_version=policy.runner.bundle.label if policy else "",
            extra={"env_name": robot.config.env_name, "seed": seed, "campaign": campaign}),
            codecs=dict.fromkeys(layout.cameras, image_codec) if image_codec else None)
    interventions = wanted = 0
    was_engaged = False
    step_time = 1.0 / control_rate_hz
    while not (robot.success or robot.timed_out):
        engaged, action = operator.step(obs.state) if operator is not None else (False, None)
        if watcher is not None:
            wanted += watcher.step(obs.state)[0]
        proposal = None
        if policy is not None and not engaged:
            if was_engaged:
                policy.replan()  # the operator moved the arm: the old plan describes a robot that is gone
            result = policy.tick(obs.images, obs.state)
            if result.action is None:  # inference cannot be late in simulated time: the bundle failed
                raise RuntimeError(f"{policy.runner.bundle.label} gave no action at step {robot.steps} of layout "
                                   f"{seed}: {result.reason} ({'; '.join(result.events)})")
            proposal = action = result.action
        was_engaged = engaged
        interventions += engaged
        if writer is not None:
            writer.append(Step(timestamp=robot.steps * step_time, images=obs.images, state=obs.state,
                               action=np.asarray(action, np.float32), policy_action=proposal, intervention=engaged))
        obs = robot.step(action)
    episode_id = ""
    if writer is not None:
        writer.commit("success" if robot.success else "failure", "success" if robot.success else "timeout")
        episode_id = writer.metadata.episode_id
    return RolloutResult(robot.success, robot.steps, interventions, episode_id, wanted)
