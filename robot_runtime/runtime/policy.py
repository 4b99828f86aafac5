"""A loaded bundle as a callable policy: robot units in, an action chunk in robot units out.

Applies the manifest's normalization around the graph, picks the instruction by
task text, draws the flow-matching noise, and refuses observations or outputs
that are malformed (wrong shape, NaN/inf) instead of acting on them. With value
guidance (guidance.py) each inference samples K chunks in one batched call and
returns the one the bundle's critic ranks highest.
"""
from __future__ import annotations

import threading

import numpy as np

from robot_runtime.bundle import Bundle, load_bundle
from robot_runtime.runtime.engines.base import InferenceEngine
from robot_runtime.runtime.engines.factory import create_engine
from robot_runtime.runtime.guidance import GuidanceError, ValueGuidance, best_candidate


class PolicyInputError(ValueError):
    """The observation cannot be fed to this bundle; the robot must hold."""


class PolicyOutputError(RuntimeError):
    """The graph produced unusable actions (NaN/inf or wrong shape); the robot must hold."""


class PolicyRunner:
    def __init__(self, bundle: Bundle, engine: InferenceEngine, beta: float | None = None, seed: int = 0,
                 critic: InferenceEngine | None = None, candidates: int = 1):
        """`critic` (the engine of the bundle's value.onnx) with `candidates` K > 1 ranks K samples per
        inference; `engine` must then take batches of K."""
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
        self.critic = critic
        self.candidates = candidates if critic is not None else 1
        self.guidance_note = ""         # why guidance asked for is not running (the critic is absent)
        self.last_scores: np.ndarray | None = None
        self.critic_failures = 0        # inferences whose critic gave no finite score (the first sample ran)
        self._noise_shape = (self.candidates, m.chunk_length, len(m.action_names))
        # Which inputs the graph takes comes from the manifest's signature, read once here, not per tick.
        inputs = m.graph_inputs()
        self._images = [(t.camera, t.name, t.shape[1:]) for t in inputs if t.camera]
        names = {t.name for t in inputs}
        self._takes_beta, self._takes_prefix = "beta" in names, "prefix" in names
        self.task_index: int | None = None
        self.inferences = 0

    @classmethod
    def load(cls, path, engine: str = "auto", threads: int = 1, beta: float | None = None, seed: int = 0,
             warmup: bool = True, fp16: bool = False, cache_dir=None,
             guidance: ValueGuidance = ValueGuidance()) -> PolicyRunner:
        """Validate the bundle (unless `path` is an already validated Bundle), build the engine (and the
        critic's, under value guidance) and (by default) run it once so the first tick is fast.

        Guidance asked for on a bundle without value.onnx runs the policy alone (`guidance_note` says
        so) or, with fallback 'refuse', raises GuidanceError."""
        bundle = path if isinstance(path, Bundle) else load_bundle(path)
        critic, candidates, note = None, 1, ""
        if guidance.enabled and bundle.value_path is None:
            if guidance.fallback == "refuse":
                raise GuidanceError(f"bundle {bundle.label} carries no value.onnx (chunk critic) and value guidance "
                                    "is on with fallback 'refuse'; export it with a critic or use fallback 'policy'")
            note = f"bundle {bundle.label} carries no value.onnx: running the policy alone (fallback 'policy')"
        elif guidance.enabled and guidance.candidates > 1:
            candidates = guidance.candidates
            critic = create_engine(engine, bundle.value_path, threads, fp16=fp16, cache_dir=cache_dir,
                                   batch=candidates)
        policy = create_engine(engine, bundle.policy_path, threads, fp16=fp16, cache_dir=cache_dir, batch=candidates)
        runner = cls(bundle, policy, beta, seed, critic, candidates)
        runner.guidance_note = note
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
        rows, chunk, actions = self._noise_shape
        full = np.zeros((rows, chunk, actions), np.float32)
        full_weights = np.zeros((rows, chunk), np.float32)
        if prefix is not None and len(prefix):
            n = min(len(prefix), chunk)
            full[:, :n] = (np.asarray(prefix[:n], np.float32) - self._action_mean) / self._action_std
            full_weights[:, :n] = np.asarray(weights[:n], np.float32)
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
        rows = self.candidates
        feeds = {
            "state": np.repeat(((state - self._state_mean) / self._state_std)[None], rows, axis=0),
            "task": np.full(rows, self.task_index, np.int64),
            "noise": self._noise(),
        }
        for camera, name, shape in self._images:
            image = images.get(camera)
            if image is None:
                raise PolicyInputError(f"no image from camera '{camera}'")
            if image.shape != shape or image.dtype != np.uint8:
                raise PolicyInputError(f"camera '{camera}' image is {image.dtype}{image.shape}, "
                                       f"bundle expects uint8{shape}")
            feeds[name] = np.repeat(image[None], rows, axis=0)
        if self._takes_beta:
            feeds["beta"] = np.array(self.beta, np.float32)
        if self._takes_prefix:
            feeds["prefix"], feeds["prefix_weights"] = self._prefix_feeds(prefix, prefix_weights)
        actions = self.engine.run(feeds)["actions"]
        if actions.shape != self._noise_shape:
            raise PolicyOutputError(f"graph returned actions of shape {actions.shape}, expected {self._noise_shape}")
        chunk = actions[self._rank(feeds, actions)] * self._action_std + self._action_mean
        if not np.all(np.isfinite(chunk)):
            raise PolicyOutputError(f"bundle {self.bundle.label} produced NaN or inf actions")
        self.inferences += 1
        return np.clip(chunk, self._low, self._high) if clip else chunk

    def _rank(self, feeds: dict[str, np.ndarray], actions: np.ndarray) -> int:
        """Which of the candidate rows to execute: the critic's best (row 0 without guidance)."""
        if self.critic is None:
            return 0
        observation = {name: value for name, value in feeds.items() if name in ("state", "task") or
                       name.startswith("image_")}
        scores = np.asarray(self.critic.run({**observation, "actions": actions})["q"], np.float64).reshape(-1)
        if scores.shape != (self.candidates,):
            raise PolicyOutputError(f"value.onnx returned {scores.shape[0]} scores for {self.candidates} candidates")
        self.last_scores = scores
        self.critic_failures += not np.isfinite(scores).any()
        index = best_candidate(actions, scores)
        if index < 0:
            raise PolicyOutputError(f"bundle {self.bundle.label} produced NaN or inf in every candidate chunk")
        return index
