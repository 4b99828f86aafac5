"""Runs a policy at the control rate: one command per tick, inference off the control path.

Each observation is a tick. The tick takes the scheduled action at once; when
the plan is running low, inference on the newest observation starts in a
background thread, given the actions the current plan has committed for the
coming ticks (a real-time-chunking bundle inpaints them, so the new chunk
continues what will already have executed by the time it lands), and its chunk
is merged when it lands (latency compensated, blended, see scheduler.py). The
first chunk of an episode, and the first after the operator hands control back,
are computed inline: there is nothing valid to execute yet.

Synchronous mode (`realtime=False`, for simulated time: rollouts, benchmarks,
tests) starts no thread: every chunk the scheduler wants is inferred inline on
the tick that asks for it, as if inference took no time (lead 0, so it lands on
the tick it was requested and skips nothing). It goes through the same
adoption, prefix, blending, replan and hot swap code as the real-time mode, so
a simulated episode executes chunks the way the robot does.

Hot swap: a new bundle is loaded and warmed by the caller, then `stage()`d; the
next inference request runs on it, and only a valid chunk from it makes the
swap, so a bundle that yields NaN never drives the robot. If the new bundle
later produces invalid output, the executor returns to the previous one. Either
way the control loop never waits for a load.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from robot_runtime.runtime.policy import PolicyInputError, PolicyOutputError, PolicyRunner
from robot_runtime.runtime.realtime import below_control
from robot_runtime.runtime.scheduler import ChunkScheduler


class SwapError(ValueError):
    """The new bundle cannot replace the running one without a restart."""


@dataclass
class TickResult:
    action: np.ndarray | None  # None: hold (reason says why)
    reason: str = ""
    events: list[str] = field(default_factory=list)
    inline_ms: float = 0.0  # inference run on the control path this tick (episode start, replan)


@dataclass
class ExecutorStats:
    ticks: int = 0
    holds: int = 0
    deadline_misses: int = 0
    chunks: int = 0
    swaps: int = 0
    rollbacks: int = 0
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=2000))


def prefix_weights(length: int, frozen: int) -> np.ndarray:
    """Real-time chunking's soft mask over the committed prefix: 1 for the ticks that will
    execute before the new chunk can land, then decaying exponentially to 0 at its end."""
    weights = np.zeros(length, np.float32)
    frozen = min(frozen, length)
    weights[:frozen] = 1.0
    tail = length - frozen
    if tail > 0:
        c = (tail - np.arange(tail, dtype=np.float32)) / (tail + 1)
        weights[frozen:] = c * np.expm1(c) / np.expm1(1.0)
    return weights


def io_signature(runner: PolicyRunner) -> tuple:
    m = runner.manifest
    return ([(c.name, c.height, c.width) for c in m.cameras], list(m.state_names), list(m.action_names),
            m.control_rate_hz)


class PolicyExecutor:
    def __init__(self, runner: PolicyRunner, execution_horizon: int = 0, blend_steps: int = 2,
                 realtime: bool = True):
        self.runner = runner
        self.realtime = realtime
        self.stats = ExecutorStats()
        horizon = execution_horizon or max(1, runner.manifest.chunk_length // 2)
        self.scheduler = ChunkScheduler(min(horizon, runner.manifest.chunk_length), blend_steps)
        self._previous: PolicyRunner | None = None
        self._staged: PolicyRunner | None = None
        self._task = ""
        self._tick = 0
        self._replan = False
        # Start the next inference this many ticks early: the recent 90th-percentile latency,
        # recomputed when a chunk lands (not every tick: the percentile is a tick's largest cost).
        # Synchronous: 0, inference takes no simulated time.
        self._lead = 1 if realtime else 0
        self._episode = 0
        self._cond = threading.Condition()
        self._request = None  # (episode, tick, images, state, runner, prefix, prefix weights)
        self._result = None   # (episode, tick, runner, chunk | exception, milliseconds)
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        if realtime:
            self._thread = threading.Thread(target=self._work, name="policy-inference", daemon=True)
            self._thread.start()

    @property
    def period_s(self) -> float:
        return 1.0 / self.runner.manifest.control_rate_hz

    def start_episode(self, task: str) -> None:
        """Select the instruction and forget the last episode's plan (and any chunk still in flight)."""
        for runner in (self.runner, self._staged):
            if runner is not None:
                runner.select_task(task)
        with self._cond:
            self._episode += 1
            self._result = None
        self._task, self._tick = task, 0
        self.scheduler.reset()

    def replan(self) -> None:
        """Drop the current plan; the next tick plans from its own observation (e.g. the operator just
        handed back control, so the old plan describes a robot that is no longer there)."""
        with self._cond:
            self._episode += 1  # a chunk in flight was planned from the operator's trajectory
            self._result = None
        self.scheduler.reset()
        self._replan = True

    def stage(self, runner: PolicyRunner) -> None:
        """Queue an already loaded and warmed bundle to take over at the next chunk boundary."""
        if io_signature(runner) != io_signature(self.runner):
            raise SwapError(f"{runner.bundle.label} reads or writes different cameras, state, actions or rate "
                            f"than {self.runner.bundle.label}; deactivate and reconfigure the node to switch")
        if self._task:
            runner.select_task(self._task)
        self._staged = runner

    @property
    def staged(self) -> PolicyRunner | None:
        return self._staged

    def tick(self, images: dict[str, np.ndarray], state: np.ndarray) -> TickResult:
        tick, result = self._tick, TickResult(None)
        self._tick += 1
        self.stats.ticks += 1
        self._collect(tick, result.events)
        wanted = self.scheduler.wants_chunk(tick, self._lead)
        # Inline: at episode start or after a replan (nothing valid planned yet), and every chunk when synchronous.
        if tick == 0 or self._replan or (wanted and not self.realtime):
            self._replan = False
            started = time.perf_counter()
            self._infer_inline(tick, images, state, result.events)
            result.inline_ms = (time.perf_counter() - started) * 1000.0
        elif wanted:
            self._submit(tick, images, state)
        result.action = self.scheduler.action(tick)
        if result.action is None:
            self.stats.holds += 1
            if tick == 0:
                result.reason = "no plan yet"
            elif self.realtime:
                self.stats.deadline_misses += 1
                result.reason = "inference missed its deadline: no planned action for this tick"
            else:
                result.reason = "inference failed and the plan ran out: no planned action for this tick"
        return result

    def _submit(self, tick: int, images, state) -> None:
        with self._cond:
            if self._busy or self._request is not None:
                return
            runner = self._staged or self.runner
            self._request = (self._episode, tick, images, state, runner, *self._prefix(tick, runner))
            self._cond.notify_all()

    def _prefix(self, tick: int, runner: PolicyRunner) -> tuple[np.ndarray, np.ndarray]:
        """What the current plan commits from `tick` on (none after a reset), and how firmly to keep it."""
        prefix = self.scheduler.committed(tick, runner.manifest.chunk_length)
        return prefix, prefix_weights(len(prefix), self._lead)

    def _infer_inline(self, tick: int, images, state, events: list[str]) -> None:
        """Plan from this observation now, given what the current plan commits (if anything is planned);
        if a staged bundle fails here, the active one plans instead."""
        for runner in [r for r in (self._staged, self.runner) if r is not None]:
            outcome, ms = self._run(runner, images, state, *self._prefix(tick, runner))
            self._adopt(tick, tick, runner, outcome, ms, events)
            if not isinstance(outcome, Exception):
                return

    @staticmethod
    def _run(runner: PolicyRunner, images, state, prefix=None, weights=None):
        started = time.perf_counter()
        try:
            outcome = runner.infer(images, state, prefix, weights)
        except (PolicyInputError, PolicyOutputError) as err:
            outcome = err
        return outcome, (time.perf_counter() - started) * 1000.0

    def _collect(self, tick: int, events: list[str]) -> None:
        with self._cond:
            result, self._result = self._result, None
        if result is not None:
            episode, obs_tick, runner, outcome, ms = result
            if episode == self._episode:
                self._adopt(obs_tick, tick, runner, outcome, ms, events)

    def _adopt(self, obs_tick: int, tick: int, runner: PolicyRunner, outcome, ms: float, events: list[str]) -> None:
        self.stats.inference_ms.append(ms)
        if self.realtime:
            p90 = float(np.percentile(self.stats.inference_ms, 90)) / 1000.0
            self._lead = max(1, math.ceil(p90 / self.period_s))
        if isinstance(outcome, Exception):
            self._reject(runner, outcome, events)
            return
        if runner is self._staged:
            self._previous, self.runner, self._staged = self.runner, runner, None
            self.stats.swaps += 1
            events.append(f"swapped to {runner.bundle.label} at tick {tick}")
        skipped = self.scheduler.accept(outcome, obs_tick, tick)
        self.stats.chunks += 1
        if skipped >= len(outcome):
            events.append(f"a chunk arrived {skipped} ticks late and was dropped")

    def _reject(self, runner: PolicyRunner, err: Exception, events: list[str]) -> None:
        if runner is self._staged:
            self._staged = None
            self.stats.rollbacks += 1
            events.append(f"rejected new bundle {runner.bundle.label}: {err}; keeping {self.runner.bundle.label}")
        elif runner is self.runner and self._previous is not None:
            bad, self.runner, self._previous = self.runner, self._previous, None
            self.stats.rollbacks += 1
            events.append(f"bundle {bad.bundle.label} failed ({err}); returned to {self.runner.bundle.label}")
        else:
            events.append(f"inference failed: {err}")

    def _work(self) -> None:
        below_control()  # ahead of busy processes (a late chunk is a missed deadline), never ahead of control
        while True:
            with self._cond:
                while self._request is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                episode, tick, images, state, runner, prefix, weights = self._request
                self._request, self._busy = None, True
            outcome, ms = self._run(runner, images, state, prefix, weights)
            with self._cond:
                self._busy = False
                self._result = (episode, tick, runner, outcome, ms)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
