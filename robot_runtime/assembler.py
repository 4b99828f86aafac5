"""Joins the messages of one control step into a `Step`, by their stamp.

The robot publishes a step's images and state with the same stamp; the command
that answers them (from the teleop mux) and the policy's own proposal carry that
stamp too. A step is emitted once a newer command has arrived (or the episode
ends), which gives late messages one control period of slack. Observations that
never got a command (the robot held, or the final observation) are not steps;
commands whose observation is incomplete are counted, never silently written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_runtime.episode import EpisodeLayout, Step


@dataclass
class AssemblyCounts:
    steps: int = 0
    uncommanded_observations: int = 0
    incomplete_steps: int = 0


class StepAssembler:
    def __init__(self, layout: EpisodeLayout):
        self.layout = layout
        self.counts = AssemblyCounts()
        self._states: dict[int, np.ndarray] = {}
        self._images: dict[int, dict[str, np.ndarray]] = {}
        self._commands: dict[int, tuple[np.ndarray, bool]] = {}
        self._policy: dict[int, np.ndarray] = {}
        self._emitted_up_to = -1

    def add_state(self, stamp_ns: int, state: np.ndarray) -> None:
        if stamp_ns > self._emitted_up_to:
            self._states[stamp_ns] = state

    def add_image(self, camera: str, stamp_ns: int, image: np.ndarray) -> None:
        if stamp_ns > self._emitted_up_to and camera in self.layout.cameras:
            self._images.setdefault(stamp_ns, {})[camera] = image

    def add_command(self, stamp_ns: int, action: np.ndarray, intervention: bool) -> None:
        """The command sent to the robot for the observation stamped `stamp_ns` (the last one wins)."""
        if stamp_ns > self._emitted_up_to:
            self._commands[stamp_ns] = (action, intervention)

    def add_policy_command(self, stamp_ns: int, action: np.ndarray) -> None:
        if stamp_ns > self._emitted_up_to:
            self._policy[stamp_ns] = action

    def ready(self, final: bool = False) -> list[Step]:
        """Steps that can no longer change, oldest first. `final` flushes everything."""
        if not self._commands:
            if final:
                self._drop_through(max([*self._states, *self._images, *self._policy], default=-1))
            return []
        newest = max(self._commands)
        stamps = sorted(s for s in self._commands if final or s < newest)
        steps = []
        for stamp in stamps:
            action, intervention = self._commands.pop(stamp)
            state, images = self._states.pop(stamp, None), self._images.pop(stamp, {})
            if state is None or set(images) != set(self.layout.cameras):
                self.counts.incomplete_steps += 1
                continue
            steps.append(Step(timestamp=stamp * 1e-9, images=images, state=state, action=action,
                              policy_action=self._policy.pop(stamp, None), intervention=intervention))
        if stamps:
            self._drop_through(max(stamps) if not final else max([*stamps, *self._states, *self._images]))
        self.counts.steps += len(steps)
        return steps

    def _drop_through(self, stamp: int) -> None:
        """Forget everything at or before `stamp`; observations left there were never commanded."""
        old_states = [s for s in self._states if s <= stamp]
        self.counts.uncommanded_observations += len(old_states)
        for table in (self._states, self._images, self._policy):
            for s in [s for s in table if s <= stamp]:
                del table[s]
        self._emitted_up_to = max(self._emitted_up_to, stamp)
