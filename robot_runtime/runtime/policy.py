"""A loaded bundle as a callable policy: robot units in, an action chunk in robot units out.

Applies the manifest's normalization around the graph, picks the instruction by
task text, draws the flow-matching noise, and refuses observations or outputs
that are malformed (wrong shape, NaN/inf) instead of acting on them.
"""
from __future__ import annotations

import threading

import numpy as np

from robot_runtime.bundle import Bundle, load_bundle
from robot_runtime.runtime.engines.base import InferenceEngine
from robot_runtime.runtime.engines.factory import create_engine


class PolicyInputError(ValueError):
    """The observation cannot be fed to this bundle; the robot must hold."""


class PolicyOutputError(RuntimeError):
    """The graph produced unusable actions (NaN/inf or wrong shape); the robot must hold."""


class PolicyRunner:
    def __init__(self, bundle: Bundle, engine: InferenceEngine, beta: float | None = None, seed: int = 0):
        m = bundle.manifest
        self.bundle = bundle
        self.manifest = m
        self.engine = engine
        self.beta = m.beta if beta is None else float(beta)
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        norm = m.normalization
        self._state_mean = np.asarray(norm.state_mean, np.float32)
        self._state_std = np.asarray(norm.state_std, np.float32)
        self._action_mean = np.asarray(norm.action_mean, np.float32)
        self._action_std = np.asarray(norm.action_std, np.float32)
        self._low = np.asarray(m.action_low, np.float32)
        self._high = np.asarray(m.action_high, np.float32)
        self._noise_shape = (1, m.chunk_length, len(m.action_names))
        # Which inputs the graph takes comes from the manifest's signature, read once here, not per tick.
        inputs = m.graph_inputs()
        self._images = [(t.camera, t.name, t.shape[1:]) for t in inputs if t.camera]
        names = {t.name for t in inputs}
        self._takes_beta, self._takes_prefix = "beta" in names, "prefix" in names
        self.task_index: int | None = None
        self.inferences = 0

    @classmethod
    def load(cls, path, engine: str = "auto", threads: int = 1, beta: float | None = None, seed: int = 0,
             warmup: bool = True, fp16: bool = False, cache_dir=None) -> PolicyRunner:
        """Validate the bundle (unless `path` is an already validated Bundle), build the engine and
        (by default) run it once so the first tick is fast."""
        bundle = path if isinstance(path, Bundle) else load_bundle(path)
        runner = cls(bundle, create_engine(engine, bundle.policy_path, threads, fp16=fp16, cache_dir=cache_dir),
                     beta, seed)
        if warmup:
            runner.warmup()
        return runner

    def select_task(self, task: str) -> None:
        try:
            self.task_index = self.manifest.tasks.index(task)
        except ValueError:
            raise PolicyInputError(
                f"task '{task}' is unknown to bundle {self.bundle.label}; it knows {self.manifest.tasks}") from None

    def warmup(self) -> None:
        """Run the graph on a blank observation; raises PolicyOutputError if it yields garbage."""
        images = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.manifest.cameras}
        previous = self.task_index
        self.task_index = 0 if previous is None else previous
        try:
            self.infer(images, self._state_mean.copy())
        finally:
            self.task_index = previous
            self.inferences = 0

    def _prefix_feeds(self, prefix, weights) -> tuple[np.ndarray, np.ndarray]:
        chunk, actions = self._noise_shape[1:]
        full = np.zeros((1, chunk, actions), np.float32)
        full_weights = np.zeros((1, chunk), np.float32)
        if prefix is not None and len(prefix):
            n = min(len(prefix), chunk)
            full[0, :n] = (np.asarray(prefix[:n], np.float32) - self._action_mean) / self._action_std
            full_weights[0, :n] = np.asarray(weights[:n], np.float32)
        return full, full_weights

    def _noise(self) -> np.ndarray:
        with self._rng_lock:  # the executor's inference thread and an inline call may overlap
            return self._rng.standard_normal(self._noise_shape, dtype=np.float32)

    def infer(self, images: dict[str, np.ndarray], state: np.ndarray, prefix: np.ndarray | None = None,
              prefix_weights: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
        """One action chunk [chunk_length, A] in robot units, clipped to the manifest's bounds (unless `clip`
        is False: the workstation's gate measures how far a candidate reaches past them).

        `prefix` [n <= chunk_length, A] (robot units) are actions already committed for the
        chunk's first ticks and `prefix_weights` [n] how firmly to keep them; a bundle with
        `realtime_chunking` inpaints them, others ignore them."""
        if self.task_index is None:
            raise PolicyInputError("no task selected; call select_task() at episode start")
        state = np.asarray(state, np.float32)
        if state.shape != self._state_mean.shape:
            raise PolicyInputError(f"state has shape {state.shape}, bundle expects {self._state_mean.shape}")
        if not np.all(np.isfinite(state)):
            raise PolicyInputError("state contains NaN or inf")
        feeds = {
            "state": ((state - self._state_mean) / self._state_std)[None],
            "task": np.array([self.task_index], np.int64),
            "noise": self._noise(),
        }
        for camera, name, shape in self._images:
            image = images.get(camera)
            if image is None:
                raise PolicyInputError(f"no image from camera '{camera}'")
            if image.shape != shape or image.dtype != np.uint8:
                raise PolicyInputError(f"camera '{camera}' image is {image.dtype}{image.shape}, "
                                       f"bundle expects uint8{shape}")
            feeds[name] = image[None]
        if self._takes_beta:
            feeds["beta"] = np.array(self.beta, np.float32)
        if self._takes_prefix:
            feeds["prefix"], feeds["prefix_weights"] = self._prefix_feeds(prefix, prefix_weights)
        actions = self.engine.run(feeds)["actions"]
        if actions.shape != self._noise_shape:
            raise PolicyOutputError(f"graph returned actions of shape {actions.shape}, expected {self._noise_shape}")
        chunk = actions[0] * self._action_std + self._action_mean
        if not np.all(np.isfinite(chunk)):
            raise PolicyOutputError(f"bundle {self.bundle.label} produced NaN or inf actions")
        self.inferences += 1
        return np.clip(chunk, self._low, self._high) if clip else chunk
