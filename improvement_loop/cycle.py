"""The two RECAP steps the demo and the nightly loop call: `pretrain` once, `improve` each round.

pretrain: V_pre (distributional value on MC returns) and a behaviour-cloning
policy on the store's episodes (operator demonstrations); the bundle runs the
null-indicator branch (conditioning_mode 'none').

improve: V_k retrained from V_pre on every episode, N-step advantages
(N = one second of control), per-task threshold at `positive_fraction`
positive, operator corrections forced positive, then the advantage-conditioned
policy trained from the *pretrained* policy (never the last round, to avoid
drift); the bundle runs CFG with `beta`.

Rounds keep the pretrained normalization stats and camera/state/action layout:
the networks start from pretrained weights that only make sense in those units,
and episodes whose layout differs are skipped and counted.

Work directory:
    <work>/text_cache/                          instruction embeddings
    <work>/pretrain/, <work>/round_NNN/          value/policy .safetensors, result.json, tb/ (TensorBoard)
    <work>/bundles/<model_id>-<version>/         exported bundles
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from robot_runtime.bundle import Camera, Manifest, Normalization
from robot_runtime.episode import EpisodeLayout

from .batches import prepare
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import Dataset, DatasetConfig, Stats, load_dataset
from .export import ExportConfig, export_bundle
from .recap import indicators, n_step_advantages, normalized_returns
from .text import TextEmbedder
from .train import PolicyTrainConfig, TrainConfig, input_spec, predict_values, train_policy, train_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleConfig:
    model_id: str = "vla"
    data: DatasetConfig = field(default_factory=DatasetConfig)
    value: TrainConfig = field(default_factory=TrainConfig)
    policy: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    c_fail: float | None = None         # failure cost; None = the task's longest episode
    positive_fraction: float = 0.4      # per-task share of advantage-labelled steps marked positive in a round
    n_step: int | None = None           # advantage horizon; None = one second (control_rate_hz steps)
    beta: float = 1.0                   # CFG weight of the round bundles (1 = plain positive conditioning)
    denoising_steps: int = 10


@dataclass
class CycleResult:
    stage: str                          # 'pretrain' or 'round'
    round_index: int                    # 0 for pretrain
    version: str
    bundle_path: str
    policy_checkpoint: str
    value_checkpoint: str
    metrics: dict

    def to_json(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CycleResult":
        path = Path(path)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no cycle result; run the pretrain stage first") from None


def stage_dir(work_dir: str | os.PathLike, round_index: int) -> Path:
    return Path(work_dir) / ("pretrain" if round_index == 0 else f"round_{round_index:03d}")


def result_path(work_dir: str | os.PathLike, round_index: int) -> Path:
    return stage_dir(work_dir, round_index) / "result.json"


def pretrain(store_root: str | os.PathLike, work_dir: str | os.PathLike, cfg: CycleConfig = CycleConfig()) -> CycleResult:
    """Train V_pre and the behaviour-cloning policy on the store; export a 'none' bundle."""
    start = time.perf_counter()
    out = stage_dir(work_dir, 0)
    data = load_dataset(store_root, cfg.data)
    stats = data.stats(cfg.data)
    spec = input_spec(data.layout, cfg.data.chunk_length)
    tensors = prepare(data, stats, _embedder(work_dir).embed(data.tasks))
    returns = _returns(data, cfg)
    value, value_metrics = train_value(tensors, returns, spec, cfg.value, log_dir=out / "tb",
                                       extra_scalars=_skip_scalars(data))
    policy, policy_metrics = train_policy(tensors, None, spec, cfg.policy, log_dir=out / "tb")
    metrics = {
        **_data_metrics(data), "value": value_metrics, "policy": policy_metrics,
        "value_explained_variance": _explained_variance(returns, predict_values(value, tensors)),
    }
    return _finish(out, work_dir, data, stats, policy, value, tensors.task_table.numpy(), "none", 0, "", metrics,
                   start, cfg)


def improve(store_root: str | os.PathLike, work_dir: str | os.PathLike, pretrained: CycleResult | str | os.PathLike,
            cfg: CycleConfig = CycleConfig(), round_index: int = 1) -> CycleResult:
    """One RECAP round on every episode of the store, starting from the pretrained checkpoints.

    `pretrained` is pretrain's CycleResult or the path of its result.json.
    The networks keep their pretrained sizes (cfg.value.net / cfg.policy.net are not used here).
    """
    if round_index < 1:
        raise ValueError(f"round_index must be >= 1 (0 is the pretrain stage), got {round_index}")
    if not isinstance(pretrained, CycleResult):
        pretrained = CycleResult.load(pretrained)
    start = time.perf_counter()
    out = stage_dir(work_dir, round_index)
    value, _ = load_checkpoint(pretrained.value_checkpoint, "value")
    policy, info = load_checkpoint(pretrained.policy_checkpoint, "policy")
    stats = Stats.from_json(info["stats"])
    data = load_dataset(store_root, replace(cfg.data, chunk_length=policy.spec.chunk_length),
                        layout=EpisodeLayout.from_json(info["layout"]))
    if data.control_rate_hz != info["control_rate_hz"]:
        raise ValueError(f"{store_root}: episodes run at {data.control_rate_hz} Hz but the pretrained policy "
                         f"{pretrained.policy_checkpoint} was trained at {info['control_rate_hz']} Hz")
    tensors = prepare(data, stats, _embedder(work_dir).embed(data.tasks))
    returns = _returns(data, cfg)
    value, value_metrics = train_value(tensors, returns, policy.spec, cfg.value, init=value, log_dir=out / "tb",
                                       extra_scalars=_skip_scalars(data))
    values = predict_values(value, tensors)
    n = cfg.n_step or max(1, round(data.control_rate_hz))
    advantages = n_step_advantages(returns, values, data.episode_index, data.step_index, data.episode_length, n)
    labels, thresholds = indicators(advantages, data.task_index, data.intervention, cfg.positive_fraction)
    positive = float(np.mean(labels == 1))
    policy, policy_metrics = train_policy(tensors, labels, policy.spec, cfg.policy, init=policy, log_dir=out / "tb",
                                          extra_scalars={"data/positive_fraction": positive})
    metrics = {
        **_data_metrics(data), "value": value_metrics, "policy": policy_metrics,
        "value_explained_variance": _explained_variance(returns, values),
        "n_step": n, "positive_fraction": positive,
        "positive_fraction_target": cfg.positive_fraction,
        "intervention_fraction": float(np.mean(data.intervention)),
        "thresholds": {data.tasks[task]: eps for task, eps in thresholds.items()},
    }
    return _finish(out, work_dir, data, stats, policy, value, tensors.task_table.numpy(), "advantage", round_index,
                   pretrained.version, metrics, start, cfg)


def _embedder(work_dir: str | os.PathLike) -> TextEmbedder:
    return TextEmbedder(Path(work_dir) / "text_cache")


def _returns(data: Dataset, cfg: CycleConfig) -> np.ndarray:
    episodes = data.episodes
    returns, _ = normalized_returns([e.length for e in episodes], [e.task_index for e in episodes],
                                    [e.success for e in episodes], cfg.c_fail)
    return returns


def _explained_variance(returns: np.ndarray, values: np.ndarray) -> float | None:
    """1 - Var(R - V) / Var(R) on the training data: a sanity number (1 = perfect, 0 = constant guess)."""
    spread = float(np.var(returns))
    return None if spread == 0 else round(1.0 - float(np.var(returns - values)) / spread, 4)


def _skip_scalars(data: Dataset) -> dict:
    return {f"data/skipped_{reason}": count for reason, count in data.skipped.items()}


def _data_metrics(data: Dataset) -> dict:
    return {
        "episodes_used": len(data.episodes),
        "steps_used": len(data),
        "episodes_skipped": dict(data.skipped),
        "success_fraction": float(np.mean([e.success for e in data.episodes])),
        "held_fraction": float(np.mean(data.held)),
        "data_policy_versions": dict(Counter(e.policy_version for e in data.episodes)),
    }


def _finish(out: Path, work_dir, data: Dataset, stats: Stats, policy, value, task_table: np.ndarray, mode: str,
            round_index: int, parent_version: str, metrics: dict, start: float, cfg: CycleConfig) -> CycleResult:
    """Save both checkpoints, export the bundle, write result.json."""
    now = datetime.now(timezone.utc)
    version = f"r{round_index}-{now.strftime('%Y%m%dT%H%M%S')}"
    info = {"layout": data.layout.to_json(), "stats": stats.to_json(), "control_rate_hz": data.control_rate_hz,
            "tasks": data.tasks, "version": version}
    policy_path = save_checkpoint(out / "policy.safetensors", policy, info)
    value_path = save_checkpoint(out / "value.safetensors", value, info)
    low, high = data.action_bounds()
    metrics["train_seconds"] = round(time.perf_counter() - start, 2)
    manifest = Manifest(
        model_id=cfg.model_id, version=version,
        cameras=[Camera(name, h, w) for name, (h, w) in data.layout.cameras.items()],
        state_names=list(data.layout.state_names), action_names=list(data.layout.action_names),
        action_low=low, action_high=high, chunk_length=policy.spec.chunk_length,
        control_rate_hz=data.control_rate_hz, tasks=list(data.tasks),
        normalization=Normalization(**stats.to_json()),
        conditioning_mode=mode, beta=cfg.beta if mode == "advantage" else 1.0,
        denoising_steps=cfg.denoising_steps, created_at=now.isoformat(timespec="seconds"),
        parent_version=parent_version,
        training={"stage": "pretrain" if round_index == 0 else "round", "round": round_index, **metrics},
    )
    bundle = export_bundle(policy, task_table, manifest, Path(work_dir) / "bundles" / f"{cfg.model_id}-{version}",
                           cfg.export)
    metrics.update(parity_max_abs_error=manifest.training["parity_max_abs_error"],
                   wall_seconds=round(time.perf_counter() - start, 2))
    result = CycleResult("pretrain" if round_index == 0 else "round", round_index, version, str(bundle.path),
                         str(policy_path), str(value_path), metrics)
    result.save(out / "result.json")
    log.info("%s round %d: bundle %s (%.0f s)", result.stage, round_index, bundle.path, metrics["wall_seconds"])
    return result
