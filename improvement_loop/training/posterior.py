"""PostBC: the pretrained policy widened where the demonstrations said little, from an ensemble's disagreement.

Behaviour cloning on a handful of demonstrations is as confident where they disagree or are absent as
where they are dense, so the first rounds' rollouts never try what the demonstrator might have done
there. Posterior behavioural cloning (Wagenmaker et al. 2025; ../shared/RESEARCH_NOTES.md section 4)
fits an ensemble of small regressors to bootstrap resamples of the rows, takes their per-row variance as
a diagonal posterior covariance, and trains the flow-matching policy on targets a + w, w ~ N(0, alpha *
Var(s)): wide where the members disagree, plain BC where the data is dense.

The members read the normalized state and the task embedding, not the cameras: with state observations
that is the whole input; with cameras it is a state-only posterior (documented, not hidden).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robot_runtime.improvement_loop.data.batches import Tensors


@dataclass(frozen=True)
class PosteriorConfig:
    members: int = 10               # ensemble size (the paper's small-scale spec: 10-20)
    alpha: float = 1.0              # posterior noise weight: target noise variance = alpha * ensemble variance
    steps: int = 500                # per member
    hidden: int = 256
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.members < 2 or self.alpha <= 0 or self.steps < 1:
            raise ValueError(f"PostBC needs >= 2 members, alpha > 0 and steps >= 1; got {self.members}, "
                             f"{self.alpha}, {self.steps}")


def posterior_std(t: Tensors, cfg: PosteriorConfig) -> tuple[np.ndarray, dict]:
    """Per row, the standard deviation [N, chunk, A] of PostBC's target noise (normalized action units),
    and figures about it. Each member trains on a bootstrap resample of the rows (with replacement)."""
    start = time.perf_counter()
    x = torch.from_numpy(np.concatenate([t.state, t.task_table.numpy()[t.task_index]], axis=1).astype(np.float32))
    y = torch.from_numpy(t.action_chunk.reshape(len(t), -1))
    mask = torch.from_numpy(np.repeat(t.chunk_mask, t.action_chunk.shape[2], axis=1).astype(np.float32))
    predictions, losses = [], []
    for member in range(cfg.members):
        rng = np.random.default_rng((cfg.seed, member))
        torch.manual_seed(cfg.seed * 1000 + member)
        net = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden),
                            nn.GELU(), nn.Linear(cfg.hidden, y.shape[1]))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        resample = rng.integers(0, len(t), size=len(t))
        for _ in range(cfg.steps):
            rows = torch.from_numpy(resample[rng.integers(0, len(resample), size=cfg.batch_size)])
            loss = ((net(x[rows]) - y[rows]).pow(2) * mask[rows]).sum() / mask[rows].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        with torch.no_grad():
            predictions.append(net(x).numpy())
    variance = np.var(np.stack(predictions), axis=0).reshape(t.action_chunk.shape)
    std = np.sqrt(cfg.alpha * variance).astype(np.float32)
    return std, {"members": cfg.members, "alpha": cfg.alpha, "steps": cfg.steps,
                 "target_noise_std_mean": float(std.mean()),
                 "target_noise_std_p90": float(np.quantile(std.mean(axis=(1, 2)), 0.9)),
                 "member_final_loss_mean": float(np.mean(losses)), "seconds": round(time.perf_counter() - start, 2)}
