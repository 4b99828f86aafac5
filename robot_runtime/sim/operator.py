"""A scripted operator for the simulated robot: MetaWorld's expert behind a deadman rule.

Stands in for a person with a teleop device in the demo, the tests and the
benchmark. In `demonstrate` mode it drives every step; in `correct` mode it
watches task progress and takes over when the robot stalls, then hands back.

Stall rule: progress is the drop of a task potential (horizontal hand-to-object
plus object-to-goal distance; hand-to-goal for reach). Horizontal, because the
experts first rise above the object while closing in on it, which leaves the
3-D distance almost unchanged and would read as a stall. The operator engages when
the robot is stuck (the best potential has not improved by `min_progress` metres for
`stall_steps` steps and the hand moved less than `min_motion` metres over them: a
purposeful slow descent is not a stall) or off track (the potential is `max_regress`
metres above its best), corrects for `correction_steps` steps, then releases and the
watch restarts.
"""
from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np

from robot_runtime.sim.metaworld_robot import STATE_NAMES, full_observation

MODES = ("demonstrate", "correct", "off")
_HAND, _OBJ, _GOAL = slice(0, 3), slice(4, 7), slice(18, 21)


@dataclass
class OperatorConfig:
    mode: str = "correct"
    stall_steps: int = 15
    min_progress: float = 0.005
    min_motion: float = 0.02
    max_regress: float = 0.05
    correction_steps: int = 25
    action_noise: float = 0.0
    seed: int = 0


def task_potential(env_name: str, state: np.ndarray) -> float:
    """Distance still to cover, in metres; falls as the task progresses."""
    hand, obj, goal = state[_HAND], state[_OBJ], state[_GOAL]
    if env_name.startswith("reach"):
        return float(np.linalg.norm(hand - goal))
    return float(np.linalg.norm(hand[:2] - obj[:2]) + np.linalg.norm(obj - goal))


class ScriptedOperator:
    def __init__(self, env_name: str, config: OperatorConfig):
        from metaworld.policies import ENV_POLICY_MAP

        if config.mode not in MODES:
            raise ValueError(f"operator mode '{config.mode}' not in {MODES}")
        if env_name not in ENV_POLICY_MAP:
            raise ValueError(f"no scripted expert for '{env_name}'")
        self.env_name = env_name
        self.config = config
        self._expert = ENV_POLICY_MAP[env_name]()
        self._rng = np.random.default_rng(config.seed)
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None
        self._best = np.inf
        self._since_progress = 0
        self._hands: deque = deque(maxlen=self.config.stall_steps)
        self._engaged_left = 0
        self.engagements = 0

    def expert_action(self, state: np.ndarray) -> np.ndarray:
        previous = state if self._previous is None else self._previous
        with warnings.catch_warnings():  # the experts warn that their gains saturate; by design
            warnings.simplefilter("ignore")
            action = np.asarray(self._expert.get_action(full_observation(state, previous)), dtype=np.float32)
        if self.config.action_noise > 0:
            action = action + self._rng.normal(0.0, self.config.action_noise, action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0)

    def _wants_control(self, state: np.ndarray) -> bool:
        mode = self.config.mode
        if mode != "correct":
            return mode == "demonstrate"
        if self._engaged_left > 0:
            self._engaged_left -= 1
            if self._engaged_left == 0:  # hand back and watch again from here
                self._best, self._since_progress = np.inf, 0
                self._hands.clear()
            return True
        cfg = self.config
        potential = task_potential(self.env_name, state)
        self._hands.append(state[_HAND].copy())
        if potential < self._best - cfg.min_progress:
            self._best, self._since_progress = potential, 0
        else:
            self._since_progress += 1
        window = list(self._hands)[-cfg.stall_steps:]
        stuck = (self._since_progress >= cfg.stall_steps and len(window) == cfg.stall_steps
                 and np.linalg.norm(window[-1] - window[0]) < cfg.min_motion)
        off_track = potential > self._best + cfg.max_regress
        if stuck or off_track:
            self._engaged_left = self.config.correction_steps - 1
            self.engagements += 1
            return True
        return False

    def step(self, state: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """(engaged, action or None) for the observation `state` (named as STATE_NAMES)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (len(STATE_NAMES),):
            raise ValueError(f"state must have {len(STATE_NAMES)} entries, got {state.shape}")
        engaged = self._wants_control(state)
        action = self.expert_action(state) if engaged else None
        self._previous = state
        return engaged, action
