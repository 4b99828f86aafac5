"""Joins the messages of one control step into a `Step`.

A step is keyed by the stamp of the observation (state) that the executed command
answers; the command and the policy's proposal carry that stamp, and each
camera contributes the frame nearest in time within `tolerance_ns` (exactly the
same stamp on the simulated robot; close to it on a real one). A step is emitted
once a newer command has arrived (or the episode ends); a step still missing its
state or a frame then waits up to `grace_ns` of robot time for it, holding the
steps after it back so rows stay in order. Topics are delivered independently, so
on a busy computer a large frame may trail the small command of the step after it;
without the wait such a step would be dropped as incomplete.
Observations that never got a command (the final one) are not steps; commands whose
observation is still incomplete after the wait are counted, never silently written,
and so are messages that arrive after their step was written or given up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_runtime.episode import EpisodeLayout, Step
from robot_runtime.runtime.sync import nearest
from robot_runtime.teleop.arbiter import HOLD, OPERATOR


@dataclass
class AssemblyCounts:
    steps: int = 0
    commands: int = 0
    uncommanded_observations: int = 0
    incomplete_steps: int = 0
    late_messages: int = 0  # arrived after their step was written or given up (or before the episode began)
    completed_in_grace: int = 0  # steps written whole that were still missing a part when first due
    policy_versions: dict[str, int] = field(default_factory=dict)  # steps per bundle that proposed their action


class StepAssembler:
    def __init__(self, layout: EpisodeLayout, tolerance_ns: int = 0, grace_ns: int = 500_000_000):
        self.layout = layout
        self.tolerance_ns = tolerance_ns
        self.grace_ns = grace_ns
        self.counts = AssemblyCounts()
        self._states: dict[int, np.ndarray] = {}
        self._images: dict[str, dict[int, np.ndarray]] = {c: {} for c in layout.cameras}
        self._commands: dict[int, tuple[np.ndarray, str]] = {}
        self._policy: dict[int, tuple[np.ndarray, str]] = {}
        self._emitted_up_to = -1
        self._waiting: int | None = None  # the stamp of the step that was due but incomplete (it holds the rest)

    def _tables(self) -> list[dict]:
        return [self._states, self._policy, self._commands, *self._images.values()]

    def restart(self, since_ns: int, tolerance_ns: int | None = None) -> None:
        """Begin a new episode at `since_ns`: keep messages from then on (they may arrive before
        the start announcement), forget older ones, reset the counts."""
        self.prune(since_ns)
        self._emitted_up_to = since_ns - 1
        self.counts = AssemblyCounts()
        self._waiting = None
        if tolerance_ns is not None:
            self.tolerance_ns = tolerance_ns

    def prune(self, before_ns: int) -> None:
        """Forget messages older than `before_ns` (between episodes this bounds memory)."""
        for table in self._tables():
            for s in [s for s in table if s < before_ns]:
                del table[s]

    def _in_time(self, stamp_ns: int, slack_ns: int = 0) -> bool:
        if stamp_ns > self._emitted_up_to - slack_ns:
            return True
        self.counts.late_messages += 1
        return False

    def add_state(self, stamp_ns: int, state: np.ndarray) -> None:
        if self._in_time(stamp_ns):
            self._states[stamp_ns] = state

    def add_image(self, camera: str, stamp_ns: int, image: np.ndarray) -> None:
        if camera in self._images and self._in_time(stamp_ns, self.tolerance_ns):
            self._images[camera][stamp_ns] = image

    def add_command(self, stamp_ns: int, action: np.ndarray, source: str) -> None:
        """The command executed for the observation stamped `stamp_ns` (the last one wins);
        `source` is OPERATOR, POLICY or HOLD."""
        if self._in_time(stamp_ns):
            self.counts.commands += stamp_ns not in self._commands
            self._commands[stamp_ns] = (action, source)

    def add_policy_command(self, stamp_ns: int, action: np.ndarray, version: str = "") -> None:
        """The policy's proposal for the observation stamped `stamp_ns`; `version` the bundle that made it
        (`model@version`, "" when unknown), so an episode is credited to the bundle that drove it."""
        if self._in_time(stamp_ns):
            self._policy[stamp_ns] = (action, version)

    def _frames(self, stamp: int) -> dict[str, np.ndarray] | None:
        frames = {}
        for camera, table in self._images.items():
            match = nearest(table, stamp, self.tolerance_ns)
            if match is None:
                return None
            frames[camera] = match[1]
        return frames

    def ready(self, final: bool = False) -> list[Step]:
        """Steps that can no longer change, oldest first. `final` flushes everything."""
        newest = max(self._commands, default=None)
        stamps = sorted(s for s in self._commands if final or s < newest)
        steps, done = [], []
        for stamp in stamps:
            state, frames = self._states.get(stamp), self._frames(stamp)
            complete = state is not None and frames is not None
            if not complete and not final and newest - stamp < self.grace_ns:
                self._waiting = stamp
                break  # its state or a frame may still be on the way: this step and the ones after it wait
            done.append(stamp)
            if stamp == self._waiting:
                self._waiting = None
                self.counts.completed_in_grace += complete
            action, source = self._commands.pop(stamp)
            self._states.pop(stamp, None)
            if not complete:
                self.counts.incomplete_steps += 1
                continue
            proposal, version = self._policy.pop(stamp, (None, ""))
            if version:
                self.counts.policy_versions[version] = self.counts.policy_versions.get(version, 0) + 1
            steps.append(Step(timestamp=stamp * 1e-9, images=frames, state=state, action=action,
                              policy_action=proposal, intervention=source == OPERATOR, held=source == HOLD))
        self.counts.steps += len(steps)
        if done:  # observations after the last command may already belong to the next episode
            self._forget_through(done[-1])
        return steps

    def _forget_through(self, stamp: int) -> None:
        """Drop what can no longer join a step; observations left there were never commanded."""
        self.counts.uncommanded_observations += sum(1 for s in self._states if s <= stamp)
        for table in (self._states, self._policy):
            for s in [s for s in table if s <= stamp]:
                del table[s]
        for table in self._images.values():  # a frame may still be nearest to the next step
            for s in [s for s in table if s < stamp - self.tolerance_ns]:
                del table[s]
        self._emitted_up_to = max(self._emitted_up_to, stamp)
