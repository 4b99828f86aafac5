"""Training loops for the value function and the policy, and the `robot-runtime-train` CLI.

Sized for a 2-core CPU: with the default NetConfig (1.2 M policy / 0.65 M value
parameters), two 96x96 cameras and batch 64, a policy step takes ~90 ms and a
value step ~60-80 ms on an otherwise idle machine, so the default step counts
keep each run near 100 s whatever the dataset size (2,000-6,000 steps of data
is 10-35 passes). Measured on MetaWorld push, 1,942 steps: value 1,200 steps
in 94 s, policy 1,100 steps in 98 s. Other processes competing for the two
cores slow torch's threads far more than their share (we saw 10x). Runs are
seeded; losses, learning rate, positive fraction and skip counts go to
TensorBoard; tqdm shows progress.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from robot_runtime.episode import EpisodeLayout

from .batches import Tensors, model_inputs
from .networks import InputSpec, NetConfig, ValueNet, VLAPolicy
from .recap import NULL, POSITIVE, to_bins

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
    threads: int = 2
    progress: bool = True           # tqdm bar
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


def _setup(cfg: TrainConfig) -> np.random.Generator:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return np.random.default_rng(cfg.seed)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW, linear warm-up then cosine decay to 10 % of the peak rate."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

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


def _fit(model: torch.nn.Module, cfg: TrainConfig, name: str, loss_fn, log_dir, extra_scalars: dict) -> dict:
    """The shared loop: `loss_fn(step, rng) -> (loss, scalars)` per step. Returns loss metrics."""
    rng = _setup(cfg)
    model.train()
    opt, schedule = _optimizer(model, cfg)
    writer = _writer(log_dir)
    for key, value in extra_scalars.items():
        if writer:
            writer.add_scalar(key, value, 0)
    losses, start = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=name, disable=not cfg.progress, mininterval=2.0)
    for step in bar:
        loss, scalars = loss_fn(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if writer and (step % 10 == 0 or step == cfg.steps - 1):
            writer.add_scalar(f"{name}/loss", losses[-1], step)
            writer.add_scalar(f"{name}/lr", schedule.get_last_lr()[0], step)
            for key, value in scalars.items():
                writer.add_scalar(f"{name}/{key}", value, step)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    seconds = time.perf_counter() - start
    if writer:
        writer.close()
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "loss_first": losses[0] if losses else None,
            "loss_final": float(np.mean(tail)) if losses else None, "seconds": round(seconds, 2)}


def train_value(t: Tensors, returns: np.ndarray, spec: InputSpec, cfg: TrainConfig,
                init: ValueNet | None = None, log_dir: str | Path | None = None,
                extra_scalars: dict | None = None, name: str = "value") -> tuple[ValueNet, dict]:
    """Cross-entropy of the 201-bin value distribution on binned normalized MC `returns` [N].

    `init` continues from a checkpoint (each round starts from V_pre); otherwise fresh weights.
    """
    model = init if init is not None else ValueNet(spec, cfg.net)
    targets = torch.from_numpy(to_bins(returns))

    def loss_fn(rng: np.random.Generator):
        index = rng.integers(0, len(t), size=cfg.batch_size)
        images, state, task = model_inputs(t, index, rng, cfg.image_shift)
        return F.cross_entropy(model.logits(images, state, task), targets[index]), {}

    return model, _fit(model, cfg, name, loss_fn, log_dir, extra_scalars or {})


def train_policy(t: Tensors, indicators: np.ndarray | None, spec: InputSpec, cfg: PolicyTrainConfig,
                 init: VLAPolicy | None = None, log_dir: str | Path | None = None,
                 extra_scalars: dict | None = None) -> tuple[VLAPolicy, dict]:
    """Flow-matching training of the action head and encoders.

    `indicators` [N] (recap.NEGATIVE/POSITIVE, interventions already forced
    positive by recap.indicators) trains the advantage-conditioned policy, each
    sample dropped to NULL with probability `cfg.indicator_dropout`. None trains
    plain behaviour cloning: every sample NULL.
    """
    model = init if init is not None else VLAPolicy(spec, cfg.net)
    labels = None if indicators is None else torch.from_numpy(np.asarray(indicators, dtype=np.int64))

    def loss_fn(rng: np.random.Generator):
        index = rng.integers(0, len(t), size=cfg.batch_size)
        images, state, task = model_inputs(t, index, rng, cfg.image_shift)
        if labels is None:
            indicator = torch.full((cfg.batch_size,), NULL, dtype=torch.long)
        else:
            dropped = torch.from_numpy(rng.random(cfg.batch_size) < cfg.indicator_dropout)
            indicator = torch.where(dropped, NULL, labels[index])
        loss = model.loss(images, state, task, torch.from_numpy(t.action_chunk[index]),
                          torch.from_numpy(t.chunk_mask[index]), indicator)
        conditioned = indicator != NULL
        scalars = {} if labels is None or not conditioned.any() else {
            "positive_fraction": (indicator[conditioned] == POSITIVE).float().mean().item()}
        return loss, scalars

    return model, _fit(model, cfg, "policy", loss_fn, log_dir, extra_scalars or {})


@torch.no_grad()
def predict_values(model: ValueNet, t: Tensors, batch_size: int = 256) -> np.ndarray:
    """V(o_t) for every row, normalized units, no augmentation."""
    model.eval()
    out = []
    for start in range(0, len(t), batch_size):
        index = np.arange(start, min(start + batch_size, len(t)))
        out.append(model.value(*model_inputs(t, index)).numpy())
    return np.concatenate(out).astype(np.float64)


def main(argv: list[str] | None = None) -> None:
    """`robot-runtime-train --store DIR --work DIR --stage pretrain|round [--round N]`."""
    from .cycle import CycleConfig, improve, pretrain, result_path

    parser = argparse.ArgumentParser(description="Train and export a RECAP policy bundle from an episode store.")
    parser.add_argument("--store", required=True, help="episode store root (robot_runtime.episode.EpisodeStore)")
    parser.add_argument("--work", required=True, help="work directory: checkpoints, TensorBoard logs, bundles/")
    parser.add_argument("--stage", choices=("pretrain", "round"), required=True)
    parser.add_argument("--round", type=int, default=1, help="round index for --stage round (>= 1)")
    parser.add_argument("--model-id", default=CycleConfig.model_id)
    parser.add_argument("--beta", type=float, default=CycleConfig.beta, help="CFG weight of the round's bundle")
    parser.add_argument("--policy-steps", type=int, default=PolicyTrainConfig.steps)
    parser.add_argument("--value-steps", type=int, default=TrainConfig.steps)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = CycleConfig(model_id=args.model_id, beta=args.beta, value=TrainConfig(steps=args.value_steps),
                      policy=PolicyTrainConfig(steps=args.policy_steps))
    if args.stage == "pretrain":
        result = pretrain(args.store, args.work, cfg)
    else:
        result = improve(args.store, args.work, result_path(args.work, 0), cfg, args.round)
    print(json.dumps(result.to_json(), indent=1))
