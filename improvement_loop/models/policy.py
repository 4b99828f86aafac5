"""The VLA policy: context encoder + indicator-conditioned flow-matching head, and its ONNX graph.

Flow-matching convention (ours, fixed here): x_t = t * a + (1 - t) * noise with
t ~ U(0, 1); the head predicts the velocity a - noise; sampling integrates
dx/dt = v with K Euler steps from x_0 = noise at t = 0 to x_1 at t = 1.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robot_runtime.bundle import Manifest
from robot_runtime.improvement_loop.models.layers import Block, ContextEncoder, InputSpec, NetConfig, time_features
from robot_runtime.improvement_loop.recap import NEGATIVE, NULL, POSITIVE

RTC_MAX_GUIDANCE = 5.0  # the paper's beta clip for the prefix guidance weight


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

    @torch.no_grad()
    def indicators_from_null(self) -> None:
        """Set the positive and negative indicator embeddings to the null one.

        Behaviour cloning trains only the null token, so after pretrain the other two
        are still their random initialization: conditioning on them first shifts the head
        away from what BC learned, and part of a round's budget goes to undoing that.
        Started from the null token, both branches begin as the BC policy and training
        only has to pull them apart.
        """
        for label in (POSITIVE, NEGATIVE):
            self.indicator.weight[label] = self.indicator.weight[NULL]

    def velocity(self, context: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                 indicator: torch.Tensor) -> torch.Tensor:
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


class PolicyGraph(nn.Module):
    """The bundle's ONNX graph around a VLAPolicy, with the signature the manifest defines.

    forward(*inputs) takes the inputs positionally in `manifest.graph_inputs()` order (what
    torch.onnx.export traces); act(feeds) takes them by name, as ONNX Runtime does, so a parity
    check cannot pair the wrong tensors. Whether `beta` (advantage conditioning) and `prefix`,
    `prefix_weights` (real-time chunking) are inputs is the manifest's decision alone. The task
    table is baked in as a constant and the K-step denoising loop is unrolled.
    """

    def __init__(self, policy: VLAPolicy, task_table: torch.Tensor, manifest: Manifest):
        super().__init__()
        self.policy = policy
        self.register_buffer("task_table", task_table.float())
        self.steps = manifest.denoising_steps
        inputs = manifest.graph_inputs()
        self.input_names = tuple(t.name for t in inputs)
        self.image_names = tuple(t.name for t in inputs if t.camera)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.act(dict(zip(self.input_names, inputs, strict=True)))

    def act(self, feeds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Actions [B, chunk, A] from the graph inputs by name; names the manifest does not list are ignored."""
        feeds = {name: feeds[name] for name in self.input_names}
        return self.policy.sample([feeds[name] for name in self.image_names], feeds["state"],
                                  self.task_table[feeds["task"]], feeds["noise"], self.steps, feeds.get("beta"),
                                  feeds.get("prefix"), feeds.get("prefix_weights"))
