"""Training loops for the value function and the policy (the CLI that runs them is cycle/cli.py).

Sized for a 2-core CPU: with the default NetConfig (1.2 M policy / 0.65 M value
parameters), two 96x96 cameras and batch 64, a policy step takes ~90 ms and a
value step ~60-80 ms on an otherwise idle machine, so the default step counts
keep each run near 100 s whatever the dataset size (2,000-6,000 steps of data
is 10-35 passes). Measured on MetaWorld push, 1,942 steps: value 1,200 steps
in 94 s, policy 1,100 steps in 98 s. Other processes competing for the two
cores slow torch's threads far more than their share (we saw 10x). Runs are
seeded; losses, learning rate, positive fraction, skip counts and (TQL critic)
attention entropies go to TensorBoard; tqdm shows progress.

Every step's randomness (rows, augmentation, indicator dropout, flow noise) comes
from a generator seeded by (seed, step), so a step's global batch is the same
whether one process trains on it or torchrun's ranks split its rows
(distributed.py), and a run resumed from its saved state (resume.py) continues
exactly as if it had never stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from robot_runtime.episode import EpisodeLayout
from robot_runtime.improvement_loop.data.batches import Tensors, model_inputs
from robot_runtime.improvement_loop.models.critic import ChunkCritic
from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
from robot_runtime.improvement_loop.models.policy import VLAPolicy
from robot_runtime.improvement_loop.models.value import DistributionalValue, value_network
from robot_runtime.improvement_loop.recap import NULL, POSITIVE, to_bins
from robot_runtime.improvement_loop.training.distributed import mean, world
from robot_runtime.improvement_loop.training.resume import Progress, load_state, save_state, state_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    image_shift: int = 4            # random-shift augmentation, pixels (0 = off)
    seed: int = 0
    threads: int = 2                # per machine; torchrun's ranks on one machine split them
    progress: bool = True           # tqdm bar
    checkpoint_every: int = 200     # steps between saved training states (when a resume_dir is given)
    net: NetConfig = field(default_factory=NetConfig)


@dataclass(frozen=True)
class PolicyTrainConfig(TrainConfig):
    steps: int = 1100
    indicator_dropout: float = 0.3  # fraction of samples trained with the null indicator (CFG's unconditional branch)


def input_spec(layout: EpisodeLayout, chunk_length: int) -> InputSpec:
    """What the networks read and write, from the episodes' layout."""
    return InputSpec(cameras=tuple((name, h, w) for name, (h, w) in layout.cameras.items()),
                     state_dim=len(layout.state_names), action_dim=len(layout.action_names),
                     chunk_length=chunk_length)


def _fresh(build, spec: InputSpec, cfg: TrainConfig):
    """A new network with seeded initial weights, whatever ran before in this process."""
    torch.manual_seed(cfg.seed)
    return build(spec, cfg.net)


def _step_rng(seed: int, step: int) -> np.random.Generator:
    """Step `step`'s randomness: identical on every rank and after a resume."""
    return np.random.default_rng((seed, step))


def _optimizer(model: torch.nn.Module,
               cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW, linear warm-up then cosine decay to 10 % of the peak rate.

    A network whose parameters need their own rate (the TQL critic's temperatures)
    lists its parameter groups; the schedule scales every group alike.
    """
    groups = (model.optimizer_groups(cfg.lr, cfg.weight_decay) if hasattr(model, "optimizer_groups")
              else model.parameters())
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def scale(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, scale)


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


class _Loss(torch.nn.Module):
    """A loss closure behind forward(): DistributedDataParallel syncs gradients only of what runs in forward."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *batch):
        return self.loss_fn(*batch)


def _local(batch: tuple, rows: slice, device: torch.device) -> list:
    """This rank's rows of a global batch, on its device; a list (the cameras) is sliced item by item."""
    return [[x[rows].to(device) for x in item] if isinstance(item, list) else item[rows].to(device)
            for item in batch]


def _fingerprint(model: torch.nn.Module, cfg: TrainConfig, name: str, first_batch: tuple) -> str:
    """What a saved state must match to be resumed: the settings that shape the run, and its data
    (hashed through the first global batch, which new or relabelled data almost surely changes)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("threads", "progress", "checkpoint_every")}
    digest = hashlib.sha256(json.dumps([name, settings, asdict(model.spec), asdict(model.cfg)], sort_keys=True,
                                       default=str).encode())
    for item in first_batch:
        for x in item if isinstance(item, list) else [item]:
            digest.update(x.numpy().tobytes())
    return digest.hexdigest()


def _fit(model: torch.nn.Module, cfg: TrainConfig, name: str, batch_fn, loss_fn, log_dir, extra_scalars: dict,
         resume_dir: str | Path | None = None) -> dict:
    """The shared loop. Returns loss metrics and the final value of each logged scalar.

    Each step `batch_fn(rng)` draws the global batch (batch-first tensors, or lists
    of them) from the step's generator, and this rank's rows go through
    `loss_fn(*rows) -> (loss, scalars)`. Under torchrun the model is wrapped in
    DistributedDataParallel and only rank 0 logs, shows progress and saves. With
    `resume_dir`, the training state is saved there every `cfg.checkpoint_every`
    steps and at the end, and a run that finds one continues from it.
    """
    w = world()
    torch.set_num_threads(max(1, cfg.threads // w.local_size))
    model.to(w.device).train()
    opt, schedule = _optimizer(model, cfg)
    rows = w.rows(cfg.batch_size)
    path = state_path(resume_dir, name) if resume_dir is not None else None
    fingerprint = _fingerprint(model, cfg, name, batch_fn(_step_rng(cfg.seed, 0))) if path else ""
    progress = load_state(path, model, opt, schedule, fingerprint) if path else Progress()
    resumed_from = progress.step
    if resumed_from:
        log.info("%s: resuming at step %d of %d from %s", name, resumed_from, cfg.steps, path)
    step_loss = _Loss(model, loss_fn)
    runner = step_loss if w.size == 1 else DistributedDataParallel(
        step_loss, device_ids=[w.device.index] if w.device.type == "cuda" else None, broadcast_buffers=False)
    writer = _writer(log_dir) if w.is_main else None
    if writer and not resumed_from:
        for key, value in extra_scalars.items():
            writer.add_scalar(key, value, 0)
    start = time.perf_counter()
    bar = tqdm(range(resumed_from, cfg.steps), desc=name, initial=resumed_from, total=cfg.steps,
               disable=not (cfg.progress and w.is_main), mininterval=2.0)
    for step in bar:
        loss, scalars = runner(*_local(batch_fn(_step_rng(cfg.seed, step)), rows, w.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        schedule.step()
        loss_value, *values = mean([loss.item(), *scalars.values()])     # whole-batch figures under torchrun
        progress.losses.append(loss_value)
        for key, value in zip(scalars, values):
            progress.scalars.setdefault(key, []).append(value)
        progress.step = step + 1
        if writer and (step % 10 == 0 or step == cfg.steps - 1):
            writer.add_scalar(f"{name}/loss", loss_value, step)
            writer.add_scalar(f"{name}/lr", schedule.get_last_lr()[0], step)
            for key, value in zip(scalars, values):
                writer.add_scalar(f"{name}/{key}", value, step)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if path and w.is_main and (progress.step % cfg.checkpoint_every == 0 or progress.step == cfg.steps):
            save_state(path, model, opt, schedule, progress, fingerprint)
    seconds = time.perf_counter() - start
    if writer:
        writer.close()
    model.cpu().eval()
    losses, tail = progress.losses, max(1, len(progress.losses) // 10)
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "loss_first": losses[0] if losses else None,
            "loss_final": float(np.mean(losses[-tail:])) if losses else None,
            "scalars": {key: round(float(np.mean(history[-tail:])), 4) for key, history in progress.scalars.items()},
            "processes": w.size, "resumed_from_step": resumed_from, "seconds": round(seconds, 2)}


def train_value(t: Tensors, returns: np.ndarray, spec: InputSpec, cfg: TrainConfig,
                init: DistributionalValue | None = None, log_dir: str | Path | None = None,
                extra_scalars: dict | None = None, name: str = "value",
                resume_dir: str | Path | None = None) -> tuple[DistributionalValue, dict]:
    """Cross-entropy of the 201-bin value distribution on binned normalized MC `returns` [N].

    `init` continues from a checkpoint (each round starts from V_pre); otherwise
    fresh weights of the critic `cfg.net.critic` names. The TQL critic adds its
    entropy-control losses and logs attention entropy and temperature per layer.
    """
    model = init if init is not None else _fresh(value_network, spec, cfg)
    targets = torch.from_numpy(to_bins(returns))

    def batch(rng: np.random.Generator) -> tuple:
        index = rng.integers(0, len(t), size=cfg.batch_size)
        return (*model_inputs(t, index, rng, cfg.image_shift), targets[index])

    return model, _fit(model, cfg, name, batch, model.loss, log_dir, extra_scalars or {}, resume_dir)


def train_chunk_critic(t: Tensors, returns: np.ndarray, spec: InputSpec, cfg: TrainConfig,
                       log_dir: str | Path | None = None, resume_dir: str | Path | None = None
                       ) -> tuple[ChunkCritic, dict]:
    """Q(o_t, chunk_t) on the binned normalized MC `returns` [N] of the chunk's first step, the chunk
    being the one the data executed (models/critic.py); fresh weights, the value's sizes and budget."""
    model = _fresh(ChunkCritic, spec, cfg)
    targets = torch.from_numpy(to_bins(returns))

    def batch(rng: np.random.Generator) -> tuple:
        index = rng.integers(0, len(t), size=cfg.batch_size)
        return (*model_inputs(t, index, rng, cfg.image_shift), torch.from_numpy(t.action_chunk[index]),
                torch.from_numpy(t.chunk_mask[index]), targets[index])

    return model, _fit(model, cfg, "critic", batch, model.loss, log_dir, {}, resume_dir)


def train_policy(t: Tensors, indicators: np.ndarray | None, spec: InputSpec, cfg: PolicyTrainConfig,
                 init: VLAPolicy | None = None, log_dir: str | Path | None = None,
                 extra_scalars: dict | None = None, sample_weights: np.ndarray | None = None,
                 resume_dir: str | Path | None = None,
                 target_noise: np.ndarray | None = None) -> tuple[VLAPolicy, dict]:
    """Flow-matching training of the action head and encoders.

    `indicators` [N] (recap.NEGATIVE/POSITIVE, interventions already forced
    positive by recap.indicators) trains the advantage-conditioned policy, each
    sample dropped to NULL with probability `cfg.indicator_dropout`. None trains
    plain behaviour cloning: every sample NULL. `sample_weights` [N] (>= 0) draws
    batch rows in proportion to them instead of uniformly (advantage-weighted BC).
    `target_noise` [N, chunk, A] (std, normalized units) perturbs each drawn target
    chunk with Gaussian noise of that size (PostBC, training/posterior.py).
    """
    model = init if init is not None else _fresh(VLAPolicy, spec, cfg)
    labels = None if indicators is None else torch.from_numpy(np.asarray(indicators, dtype=np.int64))
    p = None
    if sample_weights is not None:
        p = np.asarray(sample_weights, dtype=np.float64)
        if p.shape != (len(t),) or not np.all(np.isfinite(p) & (p >= 0)) or p.sum() <= 0:
            raise ValueError(f"sample_weights must be {len(t)} finite non-negative numbers, not all zero")
        p = p / p.sum()

    def batch(rng: np.random.Generator) -> tuple:
        index = rng.integers(0, len(t), size=cfg.batch_size) if p is None else rng.choice(len(t), cfg.batch_size, p=p)
        images, state, task = model_inputs(t, index, rng, cfg.image_shift)
        if labels is None:
            indicator = torch.full((cfg.batch_size,), NULL, dtype=torch.long)
        else:
            dropped = torch.from_numpy(rng.random(cfg.batch_size) < cfg.indicator_dropout)
            indicator = torch.where(dropped, NULL, labels[index])
        chunk = t.action_chunk[index]
        noise = rng.standard_normal(chunk.shape, dtype=np.float32)
        flow_time = rng.random(cfg.batch_size, dtype=np.float32)
        if target_noise is not None:        # drawn last, so runs without it draw exactly as before
            chunk = chunk + rng.standard_normal(chunk.shape, dtype=np.float32) * target_noise[index]
        return (images, state, task, torch.from_numpy(chunk), torch.from_numpy(t.chunk_mask[index]), indicator,
                torch.from_numpy(noise), torch.from_numpy(flow_time))

    def loss_fn(images, state, task, chunk, mask, indicator, noise, flow_time):
        loss = model.loss(images, state, task, chunk, mask, indicator, noise, flow_time)
        if labels is None:
            return loss, {}
        conditioned = (indicator != NULL).sum().clamp(min=1)
        return loss, {"positive_fraction": ((indicator == POSITIVE).sum() / conditioned).item()}

    return model, _fit(model, cfg, "policy", batch, loss_fn, log_dir, extra_scalars or {}, resume_dir)


@torch.no_grad()
def predict_values(model: DistributionalValue, t: Tensors, batch_size: int = 256) -> np.ndarray:
    """V(o_t) for every row, normalized units, no augmentation."""
    model.eval()
    out = []
    for start in range(0, len(t), batch_size):
        index = np.arange(start, min(start + batch_size, len(t)))
        out.append(model.value(*model_inputs(t, index)).numpy())
    return np.concatenate(out).astype(np.float64)
