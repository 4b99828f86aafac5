"""Committed episodes loaded into memory as flat numpy arrays, one row per control step.

Training on CPU wants every step in RAM (two 96x96 cameras x 6,000 steps is
~330 MB) so that a batch is a fancy-index, not a Zarr read. Bad episodes are
skipped and counted by reason, never trained on silently; callers log the counts
and put them in the bundle's provenance.

Frames are mapped onto one camera geometry per camera (robot_runtime.calibration.preprocess):
the calibration of the first usable episode, undistorted; every episode's frames go through
the calibration it recorded. The same Preprocessor runs on the robot, and `Dataset.calibration`
goes into the bundle so the robot can check its cameras against it. Episodes without a
recorded calibration are used as recorded when none has one, and skipped (layout_mismatch)
when others have one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from robot_runtime.calibration.cameras import CalibrationError, CameraCalibration
from robot_runtime.calibration.preprocess import Preprocessing, Preprocessor
from robot_runtime.calibration.records import record
from robot_runtime.episode import Episode, EpisodeError, EpisodeLayout, EpisodeStore
from robot_runtime.improvement_loop.data.sources import MixtureConfig, episode_source, mixture_weights

log = logging.getLogger(__name__)

SKIP_REASONS = ("unreadable", "unlabeled", "empty", "non_finite", "layout_mismatch", "rate_mismatch")


@dataclass(frozen=True)
class DatasetConfig:
    """Floors keep a dimension that was constant in the data from exploding when it moves later.

    Actions are commands in about [-1, 1], so their floor is a tenth of that
    half-range: a dimension the demonstrations never moved (e.g. a gripper held
    shut) still normalizes a later rollout's full swing to at most ~20.
    """

    chunk_length: int = 10          # actions per predicted chunk (the policy's output horizon)
    state_std_floor: float = 1e-2
    action_std_floor: float = 0.1


@dataclass
class Stats:
    """Per-dimension mean/std of state and action, std floored (see DatasetConfig)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def to_json(self) -> dict:
        return {name: np.asarray(value, dtype=np.float64).tolist() for name, value in vars(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> Stats:
        return cls(**{name: np.asarray(value, dtype=np.float32) for name, value in data.items()})


@dataclass
class EpisodeInfo:
    episode_id: str
    task_index: int
    success: bool
    length: int
    start: int                  # row of its first step in the flat arrays
    policy_version: str
    source: str                 # sources.SOURCES: demonstration, autonomous, corrected or imported


@dataclass
class Dataset:
    """Per-step arrays (N rows, episodes contiguous and in order) plus per-episode info."""

    layout: EpisodeLayout
    control_rate_hz: float
    tasks: list[str]                    # task_index -> instruction text, sorted
    episodes: list[EpisodeInfo]
    images: dict[str, np.ndarray]       # camera -> uint8 [N,H,W,3]
    state: np.ndarray                   # float32 [N,S]
    action: np.ndarray                  # float32 [N,A], the executed command
    action_chunk: np.ndarray            # float32 [N,chunk,A], next actions, last one repeated
    chunk_mask: np.ndarray              # bool [N,chunk], False on the padding and on held steps
    task_index: np.ndarray              # int64 [N]
    episode_index: np.ndarray           # int64 [N]
    step_index: np.ndarray              # int64 [N]
    episode_length: np.ndarray          # int64 [N]
    intervention: np.ndarray            # bool [N], the operator commanded
    held: np.ndarray                    # bool [N], no command came in time and the robot held
    success: np.ndarray                 # bool [N], outcome of the step's episode
    skipped: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, dict] = field(default_factory=dict)  # camera -> the bundle's record (records.record)

    def __len__(self) -> int:
        return len(self.state)

    def mixture(self, cfg: MixtureConfig) -> np.ndarray | None:
        """Row weights of a data mixture by source and task (None: uniform rows)."""
        return mixture_weights([e.source for e in self.episodes], self.tasks, self.episode_index, self.task_index,
                               cfg)

    @property
    def chunk_length(self) -> int:
        return self.action_chunk.shape[1]

    def stats(self, cfg: DatasetConfig) -> Stats:
        return Stats(self.state.mean(0), np.maximum(self.state.std(0), cfg.state_std_floor),
                     self.action.mean(0), np.maximum(self.action.std(0), cfg.action_std_floor))

    def action_bounds(self) -> tuple[list[float], list[float]]:
        """[-1, 1] per action (the command convention), widened where the data goes beyond it."""
        low = np.minimum(self.action.min(0), -1.0)
        high = np.maximum(self.action.max(0), 1.0)
        return low.astype(np.float64).tolist(), high.astype(np.float64).tolist()


def chunk_targets(actions: np.ndarray, held: np.ndarray, chunk_length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each step t, actions[t : t+chunk] padded by repeating the last one, and its mask.

    The mask is False on the padding and on held steps: a hold is the robot
    waiting for a late command, not a decision anyone made, so it is no target.
    """
    steps = len(actions)
    index = np.arange(steps)[:, None] + np.arange(chunk_length)[None, :]
    clipped = np.minimum(index, steps - 1)
    return actions[clipped], (index < steps) & ~held[clipped]


def _skip_reason(episode: Episode, arrays: dict[str, np.ndarray], layout: EpisodeLayout | None,
                 rate: float | None) -> str | None:
    if episode.outcome not in ("success", "failure"):
        return "unlabeled"
    if episode.steps == 0:
        return "empty"
    if layout is not None and episode.layout != layout:
        return "layout_mismatch"
    if rate is not None and float(episode.meta["control_rate_hz"]) != rate:
        return "rate_mismatch"
    if not (np.isfinite(arrays["state"]).all() and np.isfinite(arrays["action"]).all()):
        return "non_finite"
    return None


def load_dataset(store_root: str | os.PathLike, cfg: DatasetConfig,
                 layout: EpisodeLayout | None = None) -> Dataset:
    """Load every usable committed episode of the store.

    `layout` pins the expected cameras/state/action names (e.g. the pretrained
    policy's); by default the first usable episode sets it. Raises ValueError
    when nothing usable is left, naming the skip counts.
    """
    store = EpisodeStore(store_root, create=False)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    kept: list[tuple[Episode, dict[str, np.ndarray]]] = []
    rate = None
    for episode_id in store.episode_ids():
        try:  # the reader checks every file it reads against the episode's commit record
            episode = store.open(episode_id)
            arrays = {name: episode.array(name) for name in ("state", "action", "intervention", "held")}
            reason = _skip_reason(episode, arrays, layout, rate)
            if not reason:  # images last: the bulk of the bytes, read only for episodes kept
                arrays.update({f"images/{cam}": episode.images(cam) for cam in episode.layout.cameras})
        except EpisodeError as err:
            log.warning("skipping episode %s: %s", episode_id, err)
            skipped["unreadable"] += 1
            continue
        if reason:
            log.info("skipping episode %s: %s", episode_id, reason)
            skipped[reason] += 1
            continue
        layout = episode.layout
        rate = float(episode.meta["control_rate_hz"])
        kept.append((episode, arrays))
    kept, uncalibrated = _calibrated(kept, layout)
    skipped["layout_mismatch"] += uncalibrated
    counts = {reason: n for reason, n in skipped.items() if n}
    log.log(logging.WARNING if counts else logging.INFO, "%s: %d episodes usable, %d skipped %s",
            store.root, len(kept), sum(counts.values()), counts)
    if not kept:
        raise ValueError(f"{store.root}: no usable episodes (skipped: {skipped})")
    return _assemble(kept, layout, rate, cfg.chunk_length, skipped)


def episode_calibration(episode: Episode, camera: str) -> CameraCalibration | None:
    """The calibration an episode recorded for `camera`, or None without a usable one."""
    entry = (episode.meta.get("extra") or {}).get("calibration", {}).get(camera)
    if not isinstance(entry, dict):
        return None
    try:
        calibration = CameraCalibration(**entry)
        calibration.validate(camera, episode.episode_id)
        return calibration
    except (TypeError, CalibrationError):
        return None


def _calibrated(kept: list, layout: EpisodeLayout | None) -> tuple[list, int]:
    """`kept` less the episodes lacking a calibration for a camera that other episodes have one for."""
    if not kept:
        return kept, 0
    cameras = [c for c in layout.cameras if any(episode_calibration(e, c) for e, _ in kept)]
    ok = []
    for episode, arrays in kept:
        if all(episode_calibration(episode, c) for c in cameras):
            ok.append((episode, arrays))
        else:
            log.info("skipping episode %s: no camera calibration recorded, other episodes have one",
                     episode.episode_id)
    return ok, len(kept) - len(ok)


def _views(kept: list[tuple[Episode, dict[str, np.ndarray]]], layout: EpisodeLayout) -> dict[str, Preprocessing]:
    """Per calibrated camera, the geometry every episode's frames are mapped onto: the first episode's."""
    views = {}
    for camera in layout.cameras:
        reference = episode_calibration(kept[0][0], camera)
        if reference is not None:
            views[camera] = Preprocessing.of(reference)
    return views


def _assemble(kept: list[tuple[Episode, dict[str, np.ndarray]]], layout: EpisodeLayout, rate: float,
              chunk_length: int, skipped: dict[str, int]) -> Dataset:
    tasks = sorted({episode.task for episode, _ in kept})
    task_of = {task: i for i, task in enumerate(tasks)}
    infos, chunks, masks, start = [], [], [], 0
    for episode, arrays in kept:
        infos.append(EpisodeInfo(episode.episode_id, task_of[episode.task], episode.outcome == "success",
                                 episode.steps, start, str(episode.meta.get("policy_version", "")),
                                 episode_source(episode.meta, int(np.count_nonzero(arrays["intervention"])))))
        chunk, mask = chunk_targets(arrays["action"], arrays["held"], chunk_length)
        chunks.append(chunk)
        masks.append(mask)
        start += episode.steps
    lengths = np.array([info.length for info in infos])

    def per_step(values) -> np.ndarray:
        return np.repeat(np.asarray(values), lengths)

    views = _views(kept, layout)

    def frames(episode: Episode, arrays: dict, camera: str) -> np.ndarray:
        images = arrays.pop(f"images/{camera}")
        if camera not in views:
            return images
        return Preprocessor(episode_calibration(episode, camera), views[camera]).frames(images)

    return Dataset(
        layout=layout,
        control_rate_hz=rate,
        tasks=tasks,
        episodes=infos,
        # pop: each episode's frames are freed once concatenated, so the peak stays near one copy
        images={cam: np.concatenate([frames(episode, arrays, cam) for episode, arrays in kept])
                for cam in layout.cameras},
        state=np.concatenate([arrays["state"] for _, arrays in kept]).astype(np.float32),
        action=np.concatenate([arrays["action"] for _, arrays in kept]).astype(np.float32),
        action_chunk=np.concatenate(chunks).astype(np.float32),
        chunk_mask=np.concatenate(masks),
        task_index=per_step([info.task_index for info in infos]).astype(np.int64),
        episode_index=per_step(np.arange(len(infos))).astype(np.int64),
        step_index=np.concatenate([np.arange(n) for n in lengths]).astype(np.int64),
        episode_length=per_step(lengths).astype(np.int64),
        intervention=np.concatenate([arrays["intervention"] for _, arrays in kept]).astype(bool),
        held=np.concatenate([arrays["held"] for _, arrays in kept]).astype(bool),
        success=per_step([info.success for info in infos]).astype(bool),
        skipped=skipped,
        calibration={cam: record(episode_calibration(kept[0][0], cam), view) for cam, view in views.items()},
    )
