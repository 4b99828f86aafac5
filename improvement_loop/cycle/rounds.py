"""The two RECAP steps the demo and the nightly loop call: `pretrain` once, `improve` each round.

pretrain: V_pre (distributional value on MC returns) and a behaviour-cloning
policy on the store's episodes (operator demonstrations); the bundle runs the
null-indicator branch (conditioning_mode 'none').

improve: value models retrained from V_pre on the store's episodes, cross-fitted
by episode (see advantage.py for why), N-step advantages (N = one second of
control), per-task threshold at `positive_fraction` positive, operator
corrections forced positive, then the advantage-conditioned policy trained from
the *pretrained* policy (never the last round, to avoid drift); the bundle runs
CFG with `beta`. `CycleConfig.labels` (advantage.LabelConfig) holds the other
estimators, thresholds and values (ensemble, warm start, shared across stores);
every round reports its label quality (label_quality.py) in its metrics.
With `chunk_critic`, each stage also trains a chunk critic Q(o, chunk) on the same
rows and returns (models/critic.py) and ships it as the bundle's value.onnx, for
value-guided execution on the robot (parity-checked at export like the policy).
improve = `round_data` (rows + labels) then `train_round`, split so that
baselines (baselines.py) reuse a round's labels instead of retraining values.

Rounds keep the pretrained normalization stats and camera/state/action layout:
the networks start from pretrained weights that only make sense in those units,
and episodes whose layout differs are skipped and counted.

Work directory:
    <work>/text_cache/                          instruction embeddings
    <work>/pretrain/, <work>/round_NNN/          policy.safetensors, value*.safetensors, result.json,
                                                tb/ (TensorBoard), training_state/ (while training:
                                                rerunning a killed stage resumes from it; see resume.py)
    <work>/bundles/<model_id>-<version>/         exported bundles
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from robot_runtime.bundle import Camera, Manifest, Normalization
from robot_runtime.episode import EpisodeLayout
from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.advantage import LabelConfig, Labels, joined, round_labels
from robot_runtime.improvement_loop.cycle.methods import DEFAULT_METHOD, ROUND_METHODS
from robot_runtime.improvement_loop.data.batches import Tensors, prepare
from robot_runtime.improvement_loop.data.dataset import Dataset, DatasetConfig, Stats, load_dataset
from robot_runtime.improvement_loop.data.sources import MixtureConfig, combined
from robot_runtime.improvement_loop.data.text import TextEmbedder
from robot_runtime.improvement_loop.metrics import explained_variance
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint, save_checkpoint
from robot_runtime.improvement_loop.models.export import ExportConfig, export_bundle
from robot_runtime.improvement_loop.recap import POSITIVE, normalized_returns
from robot_runtime.improvement_loop.training.distributed import barrier, main_first, world
from robot_runtime.improvement_loop.training.posterior import PosteriorConfig, posterior_std
from robot_runtime.improvement_loop.training.train import (
    PolicyTrainConfig,
    TrainConfig,
    input_spec,
    predict_values,
    train_chunk_critic,
    train_policy,
    train_value,
)

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state"       # per stage directory; removed once the stage's result is written


@dataclass(frozen=True)
class CycleConfig:
    """Everything pretrain and improve need; the defaults are sized for the 2-core demo machine."""

    model_id: str = "vla"
    data: DatasetConfig = field(default_factory=DatasetConfig)
    value: TrainConfig = field(default_factory=TrainConfig)
    policy: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    c_fail: float | None = None         # failure cost; None = the task's longest episode
    labels: LabelConfig = field(default_factory=LabelConfig)   # a round's values, advantages and thresholds
    beta: float = 1.0                   # CFG weight of the round bundles (1 = plain positive conditioning)
    denoising_steps: int = 10
    realtime_chunking: bool = True      # bundles take the committed prefix (see models.policy.VLAPolicy.sample)
    chunk_critic: bool = False          # train Q(o, chunk) with cfg.value's sizes; bundles carry it as value.onnx
    positive_share: float | None = None     # RECAP's batches: this share drawn from positive rows (None: uniform)
    indicators_from_null: bool = False  # start a round's positive/negative embeddings at BC's null one
    method: str = DEFAULT_METHOD        # what a round trains (cycle/methods.py); improve() always trains RECAP
    mixture: MixtureConfig = field(default_factory=MixtureConfig)  # policy rows' weights by source and task
    postbc: PosteriorConfig | None = None   # pretrain a PostBC policy (training/posterior.py); None: plain BC

    def __post_init__(self):
        if self.positive_share is not None and not 0.0 < self.positive_share < 1.0:
            raise ValueError(f"CycleConfig.positive_share must be in (0, 1) or None, got {self.positive_share}")
        if self.method not in ROUND_METHODS:
            raise ValueError(f"CycleConfig.method must be one of {ROUND_METHODS}, got {self.method!r}")
        if self.method != "recap" and self.chunk_critic:
            raise ValueError(f"the chunk critic is trained with RECAP rounds only, not with method {self.method!r}")


@dataclass
class CycleResult:
    stage: str                          # 'pretrain' or 'round'
    round_index: int                    # 0 for pretrain
    version: str
    bundle_path: str
    policy_checkpoint: str
    value_checkpoints: list[str]        # pretrain: [V_pre]; a round: one per (ensemble member, fold), member-major
    metrics: dict

    def to_json(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CycleResult:
        path = Path(path)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no cycle result; run the pretrain stage first") from None
        except TypeError as err:
            raise ValueError(f"{path}: not a cycle result this version reads ({err})") from None


def stage_dir(work_dir: str | os.PathLike, round_index: int) -> Path:
    return Path(work_dir) / ("pretrain" if round_index == 0 else f"round_{round_index:03d}")


def result_path(work_dir: str | os.PathLike, round_index: int) -> Path:
    return stage_dir(work_dir, round_index) / "result.json"


def pretrain(store_root: str | os.PathLike, work_dir: str | os.PathLike,
             cfg: CycleConfig = CycleConfig()) -> CycleResult:
    """Train V_pre and the behaviour-cloning policy on the store; export a 'none' bundle."""
    start = time.perf_counter()
    out = stage_dir(work_dir, 0)
    data = load_dataset(store_root, cfg.data)
    stats = data.stats(cfg.data)
    spec = input_spec(data.layout, cfg.data.chunk_length)
    tensors = prepare(data, stats, _embed(work_dir, data.tasks))
    returns = _returns(data, cfg)
    mixture = data.mixture(cfg.mixture)         # before any training: a bad mixture is refused at once
    value, value_metrics = train_value(tensors, returns, spec, cfg.value, log_dir=out / "tb",
                                       extra_scalars=_skip_scalars(data), resume_dir=out / TRAINING_STATE)
    noise, posterior = posterior_std(tensors, cfg.postbc) if cfg.postbc else (None, None)
    policy, policy_metrics = train_policy(tensors, None, spec, cfg.policy, log_dir=out / "tb",
                                          sample_weights=mixture, resume_dir=out / TRAINING_STATE,
                                          target_noise=noise)
    metrics = {
        **data_metrics(data), "value": value_metrics, "policy": policy_metrics,
        # In-sample, hence optimistic: V_pre has seen every episode it is scored on.
        "value_explained_variance_in_sample": explained_variance(returns, predict_values(value, tensors)),
        **({"postbc": posterior} if posterior else {}),
    }
    critic = stage_critic(tensors, returns, spec, cfg, out, metrics)
    return finish_stage(out, work_dir, data, stats, policy, [value], tensors.task_table.numpy(), "none", 0, "",
                        metrics, start, cfg, critic)


@dataclass
class RoundData:
    """One round's training rows and RECAP labels, computed once.

    `train_round` turns it into the advantage-conditioned policy; the benchmark's
    baselines (baselines.py) train on exactly the same rows and reuse the same
    cross-fitted advantages, so the value models are trained once per round.
    """

    round_index: int
    pretrained: CycleResult
    data: Dataset
    stats: Stats                        # the pretrained normalization (rounds never change units)
    tensors: Tensors
    labels: Labels
    seconds: float                      # loading + value training + labelling


def round_data(store_root: str | os.PathLike, work_dir: str | os.PathLike, pretrained: CycleResult | str | os.PathLike,
               cfg: CycleConfig = CycleConfig(), round_index: int = 1) -> RoundData:
    """Every episode of the store in the pretrained units, cross-fitted values, and indicators.

    `pretrained` is pretrain's CycleResult or the path of its result.json.
    """
    if round_index < 1:
        raise ValueError(f"round_index must be >= 1 (0 is the pretrain stage), got {round_index}")
    if not isinstance(pretrained, CycleResult):
        pretrained = CycleResult.load(pretrained)
    if pretrained.stage != "pretrain":
        raise ValueError(f"round {round_index} must start from the pretrain result, not from round "
                         f"{pretrained.round_index} ({pretrained.version}): rounds never build on rounds")
    start = time.perf_counter()
    data, stats, tensors, returns = load_round(store_root, work_dir, pretrained, cfg)
    out = stage_dir(work_dir, round_index)
    labels = round_labels(tensors, data, returns, value_inits(work_dir, pretrained, cfg, round_index), cfg.value,
                          cfg.labels, shared_value_rows(store_root, work_dir, pretrained, cfg),
                          out / "tb", out / TRAINING_STATE)
    return RoundData(round_index, pretrained, data, stats, tensors, labels, time.perf_counter() - start)


def load_round(store_root: str | os.PathLike, work_dir: str | os.PathLike, pretrained: CycleResult,
               cfg: CycleConfig) -> tuple[Dataset, Stats, Tensors, np.ndarray]:
    """A store's usable episodes in the pretrained layout, chunk length, rate and normalization, with their
    normalized returns: (dataset, the pretrained stats, tensors, returns)."""
    policy, info = load_checkpoint(pretrained.policy_checkpoint, "policy")
    stats = Stats.from_json(info["stats"])
    data = load_dataset(store_root, replace(cfg.data, chunk_length=policy.spec.chunk_length),
                        layout=EpisodeLayout.from_json(info["layout"]))
    if data.control_rate_hz != info["control_rate_hz"]:
        raise ValueError(f"{store_root}: episodes run at {data.control_rate_hz} Hz but the pretrained policy "
                         f"{pretrained.policy_checkpoint} was trained at {info['control_rate_hz']} Hz")
    return data, stats, prepare(data, stats, _embed(work_dir, data.tasks)), _returns(data, cfg)


def shared_value_rows(store_root: str | os.PathLike, work_dir: str | os.PathLike, pretrained: CycleResult,
                      cfg: CycleConfig) -> tuple[Tensors, np.ndarray] | None:
    """The rows and returns of `cfg.labels.value_stores` (None without any), in the pretrained units."""
    rows = None
    for store in cfg.labels.value_stores:
        if Path(store).resolve() == Path(store_root).resolve():
            raise ValueError(f"{store}: value_stores lists the round's own store; its episodes would be valued "
                             "by models that trained on them")
        _, _, tensors, returns = load_round(store, work_dir, pretrained, cfg)
        rows = (tensors, returns) if rows is None else (joined(rows[0], tensors), np.concatenate([rows[1], returns]))
    return rows


def value_inits(work_dir: str | os.PathLike, pretrained: CycleResult, cfg: CycleConfig, round_index: int) -> list[str]:
    """The checkpoint each (member, fold) value model of the round starts from (see LabelConfig.value_init)."""
    lc = cfg.labels
    if lc.value_init == "pretrained" or round_index == 1:
        return [pretrained.value_checkpoints[0]] * (lc.ensemble * lc.folds)
    path = result_path(work_dir, round_index - 1)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: value_init 'previous' warm-starts from round {round_index - 1}'s values; "
                                "run that round first (or use value_init 'pretrained')")
    previous = CycleResult.load(path)
    made = previous.metrics.get("value_models", {})
    needed = {"members": lc.ensemble, "folds": lc.folds, "fold_rule": "episode_hash"}
    if {key: made.get(key) for key in needed} != needed:
        raise ValueError(f"{path}: its values were made as {made or 'shuffled folds'}; a warm start needs {needed} "
                         "(the same models, folds by episode hash, so no model has seen the episodes it values)")
    return previous.value_checkpoints


def improve(store_root: str | os.PathLike, work_dir: str | os.PathLike, pretrained: CycleResult | str | os.PathLike,
            cfg: CycleConfig = CycleConfig(), round_index: int = 1) -> CycleResult:
    """One RECAP round on every episode of the store, starting from the pretrained checkpoints.

    `pretrained` is pretrain's CycleResult or the path of its result.json.
    The networks keep their pretrained sizes (cfg.value.net / cfg.policy.net are not used here).
    """
    return train_round(round_data(store_root, work_dir, pretrained, cfg, round_index), work_dir, cfg)


def train_round(rd: RoundData, work_dir: str | os.PathLike, cfg: CycleConfig = CycleConfig()) -> CycleResult:
    """The advantage-conditioned policy of a prepared round, trained from the pretrained policy; a CFG bundle."""
    start = time.perf_counter() - rd.seconds
    out = stage_dir(work_dir, rd.round_index)
    policy, _ = load_checkpoint(rd.pretrained.policy_checkpoint, "policy")
    scalars = {**_skip_scalars(rd.data), "data/positive_fraction": rd.labels.metrics["positive_fraction"]}
    policy, policy_metrics = train_conditioned(rd.data, rd.tensors, rd.labels.indicators, policy, cfg, out, scalars)
    metrics = {**data_metrics(rd.data), **rd.labels.metrics, "method": "recap", "policy": policy_metrics}
    critic = stage_critic(rd.tensors, _returns(rd.data, cfg), policy.spec, cfg, out, metrics)
    return finish_stage(out, work_dir, rd.data, rd.stats, policy, rd.labels.models, rd.tensors.task_table.numpy(),
                        "advantage", rd.round_index, rd.pretrained.version, metrics, start, cfg, critic)


def train_conditioned(data: Dataset, tensors: Tensors, indicators: np.ndarray, policy, cfg: CycleConfig, out: Path,
                      scalars: dict) -> tuple:
    """RECAP's policy training from the pretrained `policy` with the cycle's batch, mixture and embedding
    options; (policy, metrics), the options recorded in the metrics. Shared by train_round and the daemon's
    steps."""
    if cfg.indicators_from_null:
        policy.indicators_from_null()
    share = None if cfg.positive_share is None else share_weights(indicators == POSITIVE, cfg.positive_share)
    weights = combined(share, data.mixture(cfg.mixture))
    policy, metrics = train_policy(tensors, indicators, policy.spec, cfg.policy, init=policy, log_dir=out / "tb",
                                   extra_scalars=scalars, sample_weights=weights, resume_dir=out / TRAINING_STATE)
    return policy, {**metrics, "positive_share": cfg.positive_share, "indicators_from_null": cfg.indicators_from_null}


def share_weights(positive: np.ndarray, share: float) -> np.ndarray:
    """Row weights that draw `share` of each batch from the positive rows, uniformly within each side.

    Uniform rows give the positive-conditioned branch only the positive fraction of a
    batch; with a fixed step budget that branch then trains on fewer samples than
    filtered BC's whole batch. A side without rows gets the whole batch.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"positive_share must be in (0, 1), got {share}")
    positive = np.asarray(positive, dtype=bool)
    count = int(positive.sum())
    if count in (0, len(positive)):
        return np.ones(len(positive))
    return np.where(positive, share / count, (1.0 - share) / (len(positive) - count))


def stage_critic(tensors: Tensors, returns: np.ndarray, spec, cfg: CycleConfig, out: Path, metrics: dict):
    """The stage's chunk critic when `cfg.chunk_critic` (else None), trained after the policy on its rows;
    its training figures go to `metrics['critic']`."""
    if not cfg.chunk_critic:
        return None
    critic, critic_metrics = train_chunk_critic(tensors, returns, spec, cfg.value, log_dir=out / "tb",
                                                resume_dir=out / TRAINING_STATE)
    metrics["critic"] = critic_metrics
    return critic


def _embed(work_dir: str | os.PathLike, tasks: list[str]) -> np.ndarray:
    """Instruction embeddings through the work directory's cache; under torchrun rank 0 fills it first."""
    with main_first():
        return TextEmbedder(Path(work_dir) / "text_cache").embed(tasks)


def _returns(data: Dataset, cfg: CycleConfig) -> np.ndarray:
    episodes = data.episodes
    returns, _ = normalized_returns([e.length for e in episodes], [e.task_index for e in episodes],
                                    [e.success for e in episodes], cfg.c_fail)
    return returns


def _skip_scalars(data: Dataset) -> dict:
    return {f"data/skipped_{reason}": count for reason, count in data.skipped.items()}


def data_metrics(data: Dataset) -> dict:
    """What a stage trained on, for its result.json (shared by RECAP and the baselines)."""
    return {
        "episodes_used": len(data.episodes),
        "steps_used": len(data),
        "episodes_skipped": dict(data.skipped),
        "success_fraction": float(np.mean([e.success for e in data.episodes])),
        "held_fraction": float(np.mean(data.held)),
        "data_policy_versions": dict(Counter(e.policy_version for e in data.episodes)),
    }


def finish_stage(out: Path, work_dir, data: Dataset, stats: Stats, policy, values: list, task_table: np.ndarray,
                 mode: str, round_index: int, parent_version: str, metrics: dict, start: float,
                 cfg: CycleConfig, critic=None) -> CycleResult:
    """Save the checkpoints, export the bundle (with value.onnx from `critic`, a ChunkCritic, if given),
    write result.json: rank 0 does; the other ranks read its result."""
    if not world().is_main:
        barrier()
        return CycleResult.load(out / "result.json")
    now = datetime.now(timezone.utc)
    version = f"r{round_index}-{now.strftime('%Y%m%dT%H%M%S')}"
    info = {"layout": data.layout.to_json(), "stats": stats.to_json(), "control_rate_hz": data.control_rate_hz,
            "tasks": data.tasks, "version": version}
    policy_path = save_checkpoint(out / "policy.safetensors", policy, info)
    names = ["value.safetensors"] if len(values) == 1 else [f"value_fold{k}.safetensors" for k in range(len(values))]
    value_paths = [str(save_checkpoint(out / name, value, info)) for name, value in zip(names, values)]
    if critic is not None:
        metrics["critic_checkpoint"] = str(save_checkpoint(out / "critic.safetensors", critic, info))
    low, high = data.action_bounds()
    metrics["train_seconds"] = round(time.perf_counter() - start, 2)
    if not cfg.mixture.uniform:
        metrics["mixture"] = {"sources": dict(cfg.mixture.sources), "tasks": dict(cfg.mixture.tasks)}
    manifest = Manifest(
        model_id=cfg.model_id, version=version,
        cameras=[Camera(name, h, w) for name, (h, w) in data.layout.cameras.items()],
        state_names=list(data.layout.state_names), action_names=list(data.layout.action_names),
        action_low=low, action_high=high, chunk_length=policy.spec.chunk_length,
        control_rate_hz=data.control_rate_hz, tasks=list(data.tasks),
        normalization=Normalization(**stats.to_json()),
        conditioning_mode=mode, beta=cfg.beta if mode == "advantage" else 1.0,
        denoising_steps=cfg.denoising_steps, realtime_chunking=cfg.realtime_chunking,
        created_at=now.isoformat(timespec="seconds"),
        parent_version=parent_version,
        training={"stage": "pretrain" if round_index == 0 else "round", "round": round_index, **metrics},
        calibration=data.calibration,
    )
    bundle = export_bundle(policy, task_table, manifest, Path(work_dir) / "bundles" / f"{cfg.model_id}-{version}",
                           cfg.export, critic)
    metrics.update(parity_max_abs_error=manifest.training["parity_max_abs_error"],
                   wall_seconds=round(time.perf_counter() - start, 2))
    result = CycleResult("pretrain" if round_index == 0 else "round", round_index, version, str(bundle.path),
                         str(policy_path), value_paths, metrics)
    result.save(out / "result.json")
    shutil.rmtree(out / TRAINING_STATE, ignore_errors=True)     # done: a rerun of the stage trains afresh
    log.info("%s round %d: bundle %s (%.0f s)", result.stage, round_index, bundle.path, metrics["wall_seconds"])
    barrier()
    return result
