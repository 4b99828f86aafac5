"""The small VLA policy and the distributional value function, in torch.

Both read the same context: one small CNN per camera (each camera's last feature
map becomes a few tokens), an instruction token (the 384-d sentence embedding
through a linear layer) and a proprio token, mixed by a transformer trunk.

The policy's flow-matching action head attends to those context tokens and
carries the advantage indicator {negative, positive, null} as its own token, so
classifier-free guidance re-runs only the head, never the trunk or the CNNs.

Flow-matching convention (ours, fixed here): x_t = t * a + (1 - t) * noise with
t ~ U(0, 1); the head predicts the velocity a - noise; sampling integrates
dx/dt = v with K Euler steps from x_0 = noise at t = 0 to x_1 at t = 1.

Every op is plain (conv, linear, matmul, softmax, layer norm) so the legacy ONNX
exporter maps it one-to-one and ONNX Runtime reproduces torch to ~1e-6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .recap import NULL, NUM_BINS, POSITIVE, bin_centers
from .text import EMBEDDING_DIM


@dataclass(frozen=True)
class InputSpec:
    """What the networks read and write; comes from the dataset's layout."""

    cameras: tuple[tuple[str, int, int], ...]   # (name, height, width), in graph input order
    state_dim: int
    action_dim: int
    chunk_length: int


CRITICS = ("context", "tql")
RTC_MAX_GUIDANCE = 5.0  # the paper's beta clip for the prefix guidance weight


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
    encoder read out by mean pooling) or 'tql' (tql.TQLCritic, one token per
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
    def from_json(cls, data: dict) -> "NetConfig":
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


class VLAPolicy(nn.Module):
    """Context encoder + indicator-conditioned flow-matching head over an action chunk [chunk, A]."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        d = cfg.d_model
        self.encoder = ContextEncoder(spec, cfg)
        self.indicator = nn.Embedding(3, d)
        self.action_in = nn.Linear(spec.action_dim, d)
        self.action_position = nn.Parameter(torch.randn(spec.chunk_length, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.head = nn.ModuleList(Block(d, cfg.heads, cross=True) for _ in range(cfg.head_layers))
        self.action_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, spec.action_dim))

    def velocity(self, context: torch.Tensor, x: torch.Tensor, t: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
        """Predicted velocity [B, chunk, A] at noisy chunk x, flow time t [B], indicator [B] (0/1/2)."""
        time = self.time_mlp(time_features(t, self.cfg.d_model))
        actions = self.action_in(x) + self.action_position + time[:, None, :]
        h = torch.cat([self.indicator(indicator)[:, None, :], actions], dim=1)
        for block in self.head:
            h = block(h, context)
        return self.action_out(h[:, 1:])

    def loss(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
             actions: torch.Tensor, mask: torch.Tensor, indicator: torch.Tensor, noise: torch.Tensor,
             t: torch.Tensor) -> torch.Tensor:
        """Flow-matching MSE on the (normalized) action chunk; masked (padding, held) steps count zero.

        The mean runs over every (row, chunk step), masked or not, so the loss is a mean of
        per-row terms and the shards of a batch (torchrun, train.py) average to the whole
        batch's loss. The caller draws `noise` (like `actions`) and flow times `t` [B] ~ U(0, 1),
        so that a batch is a function of the training step alone, however many processes share it.
        """
        context = self.encoder(images, state, task_embedding)
        x_t = t[:, None, None] * actions + (1 - t[:, None, None]) * noise
        error = (self.velocity(context, x_t, t, indicator) - (actions - noise)).pow(2).mean(-1)
        return (error * mask).mean()

    def sample(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
               noise: torch.Tensor, steps: int, beta: torch.Tensor | None, prefix: torch.Tensor | None = None,
               prefix_weights: torch.Tensor | None = None, guidance: float = RTC_MAX_GUIDANCE) -> torch.Tensor:
        """Denoise `noise` [B, chunk, A] with `steps` Euler steps.

        beta None: unconditional (null indicator), the behaviour-cloning policy.
        Otherwise CFG v = v_null + beta * (v_pos - v_null); beta = 1 is plain
        positive conditioning. Both branches run as one doubled batch of the head.

        Real-time chunking (Black et al. 2025, training-free): with `prefix` [B, chunk, A]
        (actions already committed for the chunk's first ticks) and `prefix_weights`
        [B, chunk], every step pulls the predicted clean chunk x1 = x + (1 - t) v toward
        the prefix where the weights are non-zero, v += c(t) W (prefix - x1), with
        c(t) = min(guidance, (1 - t) / (t r^2)), r^2 = (1 - t)^2 / (t^2 + (1 - t)^2). The
        Jacobian of x1 in the paper's guidance is taken as the identity, which keeps the
        loop exportable without autograd.
        """
        context = self.encoder(images, state, task_embedding)
        x = noise
        if beta is not None:
            context = torch.cat([context, context])
            indicator = torch.cat([torch.full_like(state[:, 0], POSITIVE, dtype=torch.long),
                                   torch.full_like(state[:, 0], NULL, dtype=torch.long)])
        else:
            indicator = torch.full_like(state[:, 0], NULL, dtype=torch.long)
        for k in range(steps):
            t = torch.full_like(indicator, 0, dtype=torch.float32) + k / steps
            if beta is None:
                v = self.velocity(context, x, t, indicator)
            else:
                both = self.velocity(context, torch.cat([x, x]), t, indicator).unflatten(0, (2, -1))
                v = both[1] + beta * (both[0] - both[1])          # v_null + beta * (v_pos - v_null)
            if prefix is not None:
                tau = k / steps
                strength = guidance if tau == 0 else min(guidance, (1 - tau) * (tau ** 2 + (1 - tau) ** 2)
                                                         / (tau * (1 - tau) ** 2))
                predicted = x + (1 - tau) * v
                v = v + strength * prefix_weights.unsqueeze(-1) * (prefix - predicted)
            x = x + v / steps
        return x


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


def value_network(spec: InputSpec, cfg: NetConfig) -> DistributionalValue:
    """A fresh critic of the kind `cfg.critic` names."""
    if cfg.critic == "tql":
        from .tql import TQLCritic      # tql.py builds on this module's blocks, so it imports us, not the reverse

        return TQLCritic(spec, cfg)
    return ValueNet(spec, cfg)


class PolicyGraph(nn.Module):
    """The ONNX signature of the bundle around a VLAPolicy (see robot_runtime.bundle).

    forward(image_<camera>..., state, task, noise[, beta][, prefix, prefix_weights]) -> actions,
    with the task table baked in as a constant and the K-step denoising loop unrolled.
    """

    def __init__(self, policy: VLAPolicy, task_table: torch.Tensor, conditioning_mode: str, steps: int,
                 realtime_chunking: bool = False):
        super().__init__()
        if conditioning_mode not in ("none", "advantage"):
            raise ValueError(f"conditioning_mode '{conditioning_mode}' must be 'none' or 'advantage'")
        self.policy = policy
        self.register_buffer("task_table", task_table.float())
        self.advantage = conditioning_mode == "advantage"
        self.steps = steps
        self.realtime_chunking = realtime_chunking

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cameras = len(self.policy.spec.cameras)
        images, (state, task, noise) = list(inputs[:cameras]), inputs[cameras:cameras + 3]
        rest = list(inputs[cameras + 3:])
        beta = rest.pop(0) if self.advantage else None
        prefix, weights = rest if self.realtime_chunking else (None, None)
        return self.policy.sample(images, state, self.task_table[task], noise, self.steps, beta, prefix, weights)
