"""The distributional critics of RECAP: p(V | o, instruction) over 201 bins, trained on Monte Carlo returns.

Two kinds, chosen by `NetConfig.critic`: 'context' (ValueNet, the policy's context encoder
read out by mean pooling) and 'tql' (TQLCritic, RESEARCH_NOTES section 2).

TQL finds that transformer critics get worse as they grow because attention
entropy collapses, and steers each layer's entropy toward a target. We keep
RECAP's objective (201-bin cross-entropy on Monte Carlo returns, no TD) and take
TQL's critic: one token per state scalar (a shared Dense(1 -> d) plus learned
positional and modality embeddings), the instruction token, the camera encoders'
tokens when there are cameras, a prepended [VALUE] token read out by
Dense(d/2)-ReLU-Dense(bins), pre-LN blocks, dropout 0.

Entropy control (EntropyConfig) follows the authors' code (agents/tql.py of the
r_mtql fork): H per (layer, {VALUE row, other rows}) averaged over batch and
heads; loss CE + mean(-sg(clip(tau)) * H) + mean(tau * (sg(H) - target)), tau =
exp(log tau) initialised at 1. There tau weights the entropy bonus (a dual
variable, like SAC's alpha); it does not rescale the attention logits.
Left out: TQL's two-critic ensemble, which serves TD targets we do not have.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from robot_runtime.improvement_loop.data.text import EMBEDDING_DIM
from robot_runtime.improvement_loop.models.layers import Block, CameraEncoder, ContextEncoder, InputSpec, NetConfig
from robot_runtime.improvement_loop.recap import NUM_BINS, bin_centers


class DistributionalValue(nn.Module):
    """p(V | o, instruction) over NUM_BINS bins spanning [-1, 0]; subclasses provide `logits`."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.register_buffer("centers", torch.tensor(bin_centers(NUM_BINS), dtype=torch.float32), persistent=False)

    def logits(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def value(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor) -> torch.Tensor:
        """Expected normalized value V = sum_b p(b) v(b), [B]."""
        return torch.softmax(self.logits(images, state, task_embedding), dim=-1) @ self.centers

    def loss(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
             target_bins: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """(training loss, scalars to log): cross-entropy against the binned Monte Carlo returns."""
        return F.cross_entropy(self.logits(images, state, task_embedding), target_bins), {}


class ValueNet(DistributionalValue):
    """The policy's context encoder, mean-pooled, read out into the value bins (critic 'context')."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__(spec, cfg)
        self.encoder = ContextEncoder(spec, cfg)
        self.readout = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                     nn.Linear(cfg.d_model, NUM_BINS))

    def logits(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor) -> torch.Tensor:
        return self.readout(self.encoder(images, state, task_embedding).mean(dim=1))


GROUPS = ("value", "other")     # attention rows: the [VALUE] token's, everyone else's


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the [VALUE] row and of the other rows: weights [B, heads, N, N] -> [2]."""
    rows = -(weights * torch.log(weights.clamp_min(1e-9))).sum(-1)      # [B, heads, N]
    return torch.stack([rows[..., 0].mean(), rows[..., 1:].mean()])


class TQLCritic(DistributionalValue):
    """Per-scalar tokens + [VALUE] token through pre-LN blocks; attention entropy per (layer, group)."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__(spec, cfg)
        d = cfg.d_model
        self.cameras = nn.ModuleList(CameraEncoder(h, w, cfg) for _, h, w in spec.cameras)
        self.state_in = nn.Linear(1, d)                                   # shared by every state scalar
        self.state_position = nn.Parameter(torch.randn(spec.state_dim, d) * 0.02)
        self.instruction = nn.Linear(EMBEDDING_DIM, d)
        self.modality = nn.Parameter(torch.randn(2 + len(spec.cameras), d) * 0.02)   # state, instruction, cameras
        self.value_token = nn.Parameter(torch.randn(1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.trunk_layers))
        self.norm = nn.LayerNorm(d)
        self.readout = nn.Sequential(nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, NUM_BINS))
        self.tokens = 2 + spec.state_dim + sum(camera.position.shape[0] for camera in self.cameras)
        targets = cfg.entropy.targets or [[cfg.entropy.target_fraction * math.log(self.tokens)] * 2] * cfg.trunk_layers
        self.register_buffer("target_entropy", torch.tensor(targets, dtype=torch.float32), persistent=False)
        if cfg.entropy.control:
            self.log_temperature = nn.Parameter(torch.zeros(cfg.trunk_layers, len(GROUPS)))

    def attend(self, images: list[torch.Tensor], state: torch.Tensor,
               task_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, bins], attention entropy [layers, 2] in nats)."""
        batch = state.shape[0]
        tokens = [self.value_token.expand(batch, 1, -1),
                  self.state_in(state[..., None]) + self.state_position + self.modality[0],
                  (self.instruction(task_embedding) + self.modality[1]).unsqueeze(1)]
        tokens += [encoder(image) + self.modality[2 + k]
                   for k, (encoder, image) in enumerate(zip(self.cameras, images))]
        x = torch.cat(tokens, dim=1)
        entropy = []
        for block in self.blocks:
            x, weights = block.attend(x)
            entropy.append(attention_entropy(weights))
        return self.readout(self.norm(x[:, 0])), torch.stack(entropy)

    def logits(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor) -> torch.Tensor:
        return self.attend(images, state, task_embedding)[0]

    def loss(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
             target_bins: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy, plus the entropy bonus and the temperatures' dual loss when controlled."""
        logits, entropy = self.attend(images, state, task_embedding)
        cross_entropy = F.cross_entropy(logits, target_bins)
        scalars = {"cross_entropy": cross_entropy.item(), **_per_layer("attention_entropy", entropy)}
        if not self.cfg.entropy.control:
            return cross_entropy, scalars
        tau = self.log_temperature.exp()
        bonus = (-tau.detach().clamp(max=self.cfg.entropy.max_temperature) * entropy).mean()
        dual = (tau * (entropy.detach() - self.target_entropy)).mean()
        return cross_entropy + bonus + dual, {**scalars, **_per_layer("temperature", tau)}

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The temperatures train at their own rate, without weight decay (they are multipliers, not weights)."""
        rest = [p for name, p in self.named_parameters() if name != "log_temperature"]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if self.cfg.entropy.control:
            groups.append({"params": [self.log_temperature], "lr": self.cfg.entropy.temperature_lr,
                           "weight_decay": 0.0})
        return groups


def _per_layer(prefix: str, values: torch.Tensor) -> dict[str, float]:
    return {f"{prefix}/layer{layer}_{group}": value
            for layer, row in enumerate(values.detach().tolist()) for group, value in zip(GROUPS, row)}


def value_network(spec: InputSpec, cfg: NetConfig) -> DistributionalValue:
    """A fresh critic of the kind `cfg.critic` names."""
    if cfg.critic == "tql":
        return TQLCritic(spec, cfg)
    return ValueNet(spec, cfg)
