"""What the policy (`policy.py`) and the critics (`value.py`) are built from: sizes and shared blocks.

Both read the same context: one small CNN per camera (each camera's last feature
map becomes a few tokens), an instruction token (the 384-d sentence embedding
through a linear layer) and a proprio token, mixed by a transformer trunk.

The policy's flow-matching action head attends to those context tokens and
carries the advantage indicator {negative, positive, null} as its own token, so
classifier-free guidance re-runs only the head, never the trunk or the CNNs.

Every op is plain (conv, linear, matmul, softmax, layer norm) so the legacy ONNX
exporter maps it one-to-one and ONNX Runtime reproduces torch to ~1e-6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from robot_runtime.improvement_loop.data.text import EMBEDDING_DIM


@dataclass(frozen=True)
class InputSpec:
    """What the networks read and write; comes from the dataset's layout."""

    cameras: tuple[tuple[str, int, int], ...]   # (name, height, width), in graph input order
    state_dim: int
    action_dim: int
    chunk_length: int


CRITICS = ("context", "tql")


@dataclass(frozen=True)
class EntropyConfig:
    """Attention-entropy control of the 'tql' critic (TQL, RESEARCH_NOTES section 2).

    With `control`, each (layer, group) gets a temperature tau (groups: the
    [VALUE] row, all other rows); the critic loss adds mean(-sg(tau) * H), an
    entropy bonus, and mean(tau * (sg(H) - target)), whose gradient raises tau
    while H is below its target and lowers it above, as SAC tunes alpha. Since
    tau > 0 the bonus only ever raises entropy: the target is a floor that
    attention may not collapse below, not a setpoint it is pushed down to.
    TQL trains tau with the critic's rate over ~1M steps. Our runs are ~1,000
    steps and Adam moves log tau by about its rate per step, so tau gets 3e-2:
    from 1 to ~0.05 (where the bonus stops dominating) in ~100 steps. With 3e-3
    it was still at 0.4 after 800 steps and held entropy near its maximum
    (benchmarks/tql_entropy.py).
    """

    control: bool = True
    targets: tuple[tuple[float, float], ...] | None = None   # nats, (VALUE row, other rows) per layer
    target_fraction: float = 0.8        # targets None: target_fraction * ln(tokens), the notes' heuristic
    temperature_lr: float = 3e-2
    max_temperature: float = 100.0      # the bonus weight sg(tau) is clipped here (TQL's clip)


@dataclass(frozen=True)
class NetConfig:
    """Sizes. The defaults are tuned so one training run fits ~100 s on 2 CPU cores (see train.py).

    `critic` picks the value network: 'context' (ValueNet, the policy's context
    encoder read out by mean pooling) or 'tql' (value.TQLCritic, one token per
    state scalar, a [VALUE] token, d_model / heads / trunk_layers sized).
    The policy ignores `critic` and `entropy`.
    """

    d_model: int = 128
    heads: int = 4
    trunk_layers: int = 2
    head_layers: int = 2
    image_pool: int = 2                                   # average-pool factor applied to raw pixels first
    cnn_channels: tuple[int, ...] = (16, 32, 64, 64)      # one stride-2 3x3 conv per entry
    critic: str = "context"
    entropy: EntropyConfig = field(default_factory=EntropyConfig)

    def __post_init__(self):
        if self.critic not in CRITICS:
            raise ValueError(f"critic '{self.critic}' must be one of {CRITICS}")
        targets = self.entropy.targets
        if targets is not None and (len(targets) != self.trunk_layers or any(len(t) != 2 for t in targets)):
            raise ValueError(f"entropy targets {targets} must be one (value_row, other_rows) pair per layer "
                             f"({self.trunk_layers} layers)")

    @classmethod
    def from_json(cls, data: dict) -> NetConfig:
        """Inverse of dataclasses.asdict; fields a checkpoint predates keep their defaults."""
        entropy = data.get("entropy", {})
        if entropy.get("targets") is not None:
            entropy = {**entropy, "targets": tuple(tuple(pair) for pair in entropy["targets"])}
        return cls(**{**data, "cnn_channels": tuple(data["cnn_channels"]), "entropy": EntropyConfig(**entropy)})


class Attention(nn.Module):
    """Multi-head attention from explicit matmuls (exports to plain ONNX ops)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(d // heads)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attend(x, context)[0]

    def attend(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output [B, N, d], attention weights [B, heads, N, M]); the weights let a critic measure entropy."""
        def split(t: torch.Tensor) -> torch.Tensor:        # [B, N, d] -> [B, heads, N, d/heads]
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q = split(self.q(x))
        k, v = (split(t) for t in self.kv(context).chunk(2, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.out((weights @ v).transpose(1, 2).flatten(2)), weights


class Block(nn.Module):
    """Pre-norm transformer block; with `cross=True` it also attends to a context sequence."""

    def __init__(self, d: int, heads: int, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.cross = Attention(d, heads) if cross else None
        self.norm_cross = nn.LayerNorm(d) if cross else None
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, context)[0]

    def attend(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, self-attention weights [B, heads, N, N])."""
        h = self.norm1(x)
        attended, weights = self.attn.attend(h, h)
        x = x + attended
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x)), weights


class CameraEncoder(nn.Module):
    """uint8 [B,H,W,3] -> tokens [B, h*w, d]: one token per cell of the last feature map."""

    def __init__(self, height: int, width: int, cfg: NetConfig):
        super().__init__()
        self.pool = cfg.image_pool
        layers, channels = [], 3
        for out in cfg.cnn_channels:
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.ReLU()]
            channels = out
        self.cnn = nn.Sequential(*layers)
        h, w = height // self.pool, width // self.pool
        for _ in cfg.cnn_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.proj = nn.Linear(channels, cfg.d_model)
        self.position = nn.Parameter(torch.randn(h * w, cfg.d_model) * 0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        features = self.cnn(x).flatten(2).transpose(1, 2)
        return self.proj(features) + self.position


class ContextEncoder(nn.Module):
    """Cameras + instruction + proprio -> context tokens [B, N, d] through the trunk."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__()
        self.cameras = nn.ModuleList(CameraEncoder(h, w, cfg) for _, h, w in spec.cameras)
        self.instruction = nn.Linear(EMBEDDING_DIM, cfg.d_model)
        self.proprio = nn.Sequential(nn.Linear(spec.state_dim, cfg.d_model), nn.GELU(),
                                     nn.Linear(cfg.d_model, cfg.d_model))
        self.kind = nn.Parameter(torch.randn(2, cfg.d_model) * 0.02)   # marks instruction vs proprio token
        self.trunk = nn.ModuleList(Block(cfg.d_model, cfg.heads) for _ in range(cfg.trunk_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor) -> torch.Tensor:
        tokens = [encoder(image) for encoder, image in zip(self.cameras, images)]
        tokens.append((self.instruction(task_embedding) + self.kind[0]).unsqueeze(1))
        tokens.append((self.proprio(state) + self.kind[1]).unsqueeze(1))
        x = torch.cat(tokens, dim=1)
        for block in self.trunk:
            x = block(x)
        return self.norm(x)


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of flow time t in [0, 1], [B] -> [B, dim]."""
    freqs = torch.exp(torch.arange(dim // 2, dtype=torch.float32, device=t.device) * (-math.log(1000.0) / (dim // 2)))
    angles = t[:, None] * 1000.0 * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
