"""One episode on the simulated robot in-process: policy, operator and recorder without DDS.

The benchmarks drive thousands of episodes; doing that over DDS at the control
rate would take days. This loop runs the same pieces the nodes wrap — the
bundle's `PolicyRunner`, `ActionChunkQueue`, `TeleopArbiter` semantics (an
engaged operator overrides the policy), the `EpisodeWriter` — as fast as the
simulator steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_runtime.runtime.chunking import ActionChunkQueue
from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.runtime.policy import PolicyRunner
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, MetaWorldRobot
from robot_runtime.sim.operator import ScriptedOperator


@dataclass
class RolloutResult:
    success: bool
    steps: int
    intervention_steps: int
    episode_id: str = ""


def sim_layout(robot: MetaWorldRobot) -> EpisodeLayout:
    size = robot.config.image_size
    cameras = {c: (size, size) for c in robot.config.cameras} if robot.config.render else {}
    return EpisodeLayout(cameras=cameras, state_names=STATE_NAMES, action_names=ACTION_NAMES)


def run_episode(robot: MetaWorldRobot, seed: int, policy: PolicyRunner | None = None,
                operator: ScriptedOperator | None = None, store: EpisodeStore | None = None,
                execution_horizon: int | None = None, campaign: str = "", control_rate_hz: float = 20.0
                ) -> RolloutResult:
    """Run one episode from layout `seed`; record it into `store` if given.

    Each step the operator (if any) decides first; when it is not engaged the
    policy's current chunk supplies the action. When the operator hands back, the
    policy replans from the current observation instead of resuming a stale chunk.
    """
    if policy is None and operator is None:
        raise ValueError("an episode needs a policy, an operator, or both")
    obs = robot.reset(seed)
    if operator is not None:
        operator.reset()
    queue = None
    if policy is not None:
        policy.select_task(robot.instruction)
        horizon = execution_horizon or max(1, policy.manifest.chunk_length // 2)
        queue = ActionChunkQueue(horizon)
    writer = None
    if store is not None:
        writer = store.writer(sim_layout(robot), EpisodeMetadata(
            task=robot.instruction, robot_id="sim-inprocess", control_rate_hz=control_rate_hz,
            policy_version=policy.bundle.label if policy else "",
            extra={"env_name": robot.config.env_name, "seed": seed, "campaign": campaign}))
    interventions = 0
    step_time = 1.0 / control_rate_hz
    while not (robot.success or robot.timed_out):
        engaged, action = operator.step(obs.state) if operator is not None else (False, None)
        proposal = None
        if policy is not None and not engaged:
            if queue.needs_chunk():
                queue.push(policy.infer(obs.images, obs.state))
            proposal = queue.pop()
            action = proposal
        elif queue is not None:
            queue.clear()  # the operator has control: replan when it hands back
        interventions += engaged
        if writer is not None:
            writer.append(Step(timestamp=robot.steps * step_time, images=obs.images, state=obs.state,
                               action=np.asarray(action, np.float32), policy_action=proposal, intervention=engaged))
        obs = robot.step(action)
    episode_id = ""
    if writer is not None:
        writer.commit("success" if robot.success else "failure", "success" if robot.success else "timeout")
        episode_id = writer.metadata.episode_id
    return RolloutResult(robot.success, robot.steps, interventions, episode_id)
