"""The last gate before a command reaches the robot: limits, rate limits, workspace, hold, e-stop.

Every command the policy proposes passes through `SafetyFilter.filter`. It never
raises on bad numbers: a NaN/inf command, a stale observation, a missed
inference deadline or a latched e-stop all turn into the *hold* command, and the
reason is reported so diagnostics can say why the robot stopped.

Holding means different things per action: a velocity or Cartesian-delta
dimension holds at zero (repeating the last delta would keep the arm moving),
a position or gripper dimension holds its last safe value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WorkspaceLimit:
    """Keep state entry `state_name` within [low, high] by refusing the action that pushes it out."""

    state_name: str
    action_name: str
    low: float
    high: float

    @classmethod
    def parse(cls, entry: str) -> WorkspaceLimit:
        """From 'state_name:action_name:low:high', the form a YAML string list can hold."""
        parts = entry.split(":")
        if len(parts) != 4:
            raise ValueError(f"workspace entry '{entry}' is not state_name:action_name:low:high")
        return cls(parts[0], parts[1], float(parts[2]), float(parts[3]))


@dataclass
class SafetyConfig:
    action_names: list[str]
    action_low: list[float]
    action_high: list[float]
    max_delta: list[float] | None = None  # per-step change limit; None = unlimited
    hold_zero: list[str] = field(default_factory=list)  # dims that hold at zero (deltas, velocities)
    workspace: list[WorkspaceLimit] = field(default_factory=list)


@dataclass
class SafetyEvent:
    reason: str
    held: bool


class EStop:
    """A latched stop: once triggered it holds until explicitly cleared."""

    def __init__(self):
        self.latched = False
        self.reason = ""

    def trigger(self, reason: str) -> None:
        self.latched, self.reason = True, reason

    def clear(self) -> None:
        self.latched, self.reason = False, ""


class SafetyFilter:
    def __init__(self, config: SafetyConfig, state_names: list[str]):
        n = len(config.action_names)
        self.config = config
        self.low = np.asarray(config.action_low, np.float32)
        self.high = np.asarray(config.action_high, np.float32)
        if self.low.shape != (n,) or self.high.shape != (n,) or np.any(self.low >= self.high):
            raise ValueError(f"action limits must be {n} (low < high) pairs for {config.action_names}")
        self.max_delta = None if config.max_delta is None else np.asarray(config.max_delta, np.float32)
        unknown = set(config.hold_zero) - set(config.action_names)
        if unknown:
            raise ValueError(f"hold_zero names unknown actions {sorted(unknown)}")
        self._zero_on_hold = np.array([name in config.hold_zero for name in config.action_names])
        self._workspace = []
        for limit in config.workspace:
            if limit.state_name not in state_names or limit.action_name not in config.action_names:
                raise ValueError(f"workspace limit on '{limit.state_name}'/'{limit.action_name}' names an "
                                 f"unknown state or action")
            self._workspace.append((limit, state_names.index(limit.state_name),
                                    config.action_names.index(limit.action_name)))
        self.estop = EStop()
        self.reset()

    def reset(self, last_safe: np.ndarray | None = None) -> None:
        """Start from rest (or from the robot's current command) at an episode or engagement boundary."""
        self.last_safe = np.zeros(len(self.low), np.float32) if last_safe is None else last_safe.astype(np.float32)
        self.last_safe = np.clip(self.last_safe, self.low, self.high)
        self._step, self._step_base = None, self.last_safe

    def hold_command(self) -> np.ndarray:
        return np.where(self._zero_on_hold, 0.0, self.last_safe).astype(np.float32)

    def hold(self, reason: str) -> tuple[np.ndarray, SafetyEvent]:
        command = self.hold_command()
        self.last_safe = command
        return command, SafetyEvent(reason, held=True)

    def filter(self, action: np.ndarray | None, state: np.ndarray | None = None, step: int | None = None
               ) -> tuple[np.ndarray, SafetyEvent | None]:
        """The command to send for a proposed `action` (None = nothing in time) given the current `state`.

        `step` names the observation the command answers. Commands for the same step replace one another
        (the robot executes the last), so each is limited against the previous step's command, not against
        its sibling: at a takeover the policy's and the operator's answers to one observation may both
        pass, and chaining them would let the executed command move by more than `max_delta` in one step.
        """
        if step is not None and step == self._step:
            self.last_safe = self._step_base
        else:
            self._step, self._step_base = step, self.last_safe
        if self.estop.latched:
            return self.hold(f"e-stop: {self.estop.reason}")
        if action is None:
            return self.hold("no command in time")
        action = np.asarray(action, np.float32)
        if action.shape != self.low.shape:
            return self.hold(f"command has shape {action.shape}, expected {self.low.shape}")
        if not np.all(np.isfinite(action)):
            return self.hold("command contains NaN or inf")
        safe = np.clip(action, self.low, self.high)
        reasons = ["clipped to action limits"] if not np.array_equal(safe, action) else []
        if self.max_delta is not None:
            limited = np.clip(safe, self.last_safe - self.max_delta, self.last_safe + self.max_delta)
            if not np.array_equal(limited, safe):
                reasons.append("rate limited")
            safe = limited
        if state is not None and self._workspace:
            state = np.asarray(state, np.float32)
            for limit, s_index, a_index in self._workspace:
                value = state[s_index]
                if (value <= limit.low and safe[a_index] < 0) or (value >= limit.high and safe[a_index] > 0):
                    safe[a_index] = 0.0
                    reasons.append(f"workspace limit on {limit.state_name}")
        self.last_safe = safe
        return safe, (SafetyEvent("; ".join(reasons), held=False) if reasons else None)
