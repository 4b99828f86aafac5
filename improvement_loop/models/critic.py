"""The chunk critic Q(o, instruction, action chunk) the robot uses to rank sampled chunks (value.onnx).

Value-guided execution (robot_runtime/runtime/guidance.py) needs a score for a chunk the policy
*proposes*, which V(o) cannot give. The critic reads the policy's context (the same encoder
design) and one token for the chunk (its actions flattened through a linear layer, padded steps
zeroed), mixes them with one transformer block and reads the chunk token out into RECAP's 201
value bins, trained by cross-entropy on the binned Monte Carlo return of the step the chunk starts
at: Q(o_t, a_t..t+H-1) ~ E[R_t | o_t, the chunk executed]. Its graph takes the bundle's observation
inputs plus the candidate chunk in normalized units, exactly what the policy graph returns.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from robot_runtime.bundle import Manifest
from robot_runtime.improvement_loop.models.layers import Block, ContextEncoder, InputSpec, NetConfig
from robot_runtime.improvement_loop.recap import NUM_BINS, bin_centers


class ChunkCritic(nn.Module):
    """p(R | o, instruction, chunk) over NUM_BINS bins spanning [-1, 0]."""

    def __init__(self, spec: InputSpec, cfg: NetConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        d = cfg.d_model
        self.encoder = ContextEncoder(spec, cfg)
        self.chunk_in = nn.Sequential(nn.Linear(spec.chunk_length * spec.action_dim, d), nn.GELU(), nn.Linear(d, d))
        self.mix = Block(d, cfg.heads)
        self.readout = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, NUM_BINS))
        self.register_buffer("centers", torch.tensor(bin_centers(NUM_BINS), dtype=torch.float32), persistent=False)

    def logits(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
               chunk: torch.Tensor) -> torch.Tensor:
        context = self.encoder(images, state, task_embedding)
        token = self.chunk_in(chunk.flatten(1)).unsqueeze(1)
        return self.readout(self.mix(torch.cat([token, context], dim=1))[:, 0])

    def q(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
          chunk: torch.Tensor) -> torch.Tensor:
        """Expected normalized return of executing `chunk` [B, chunk, A] (normalized units) from o, [B]."""
        return torch.softmax(self.logits(images, state, task_embedding, chunk), dim=-1) @ self.centers

    def loss(self, images: list[torch.Tensor], state: torch.Tensor, task_embedding: torch.Tensor,
             chunk: torch.Tensor, mask: torch.Tensor, target_bins: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy against the binned return; steps past the episode's end (mask 0) enter as zeros."""
        return F.cross_entropy(self.logits(images, state, task_embedding, chunk * mask.unsqueeze(-1)),
                               target_bins), {}


class CriticGraph(nn.Module):
    """value.onnx around a ChunkCritic: the manifest's `value_inputs()` by name, the task table baked in."""

    def __init__(self, critic: ChunkCritic, task_table: torch.Tensor, manifest: Manifest):
        super().__init__()
        self.critic = critic
        self.register_buffer("task_table", task_table.float())
        inputs = manifest.value_inputs()
        self.input_names = tuple(t.name for t in inputs)
        self.image_names = tuple(t.name for t in inputs if t.camera)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.act(dict(zip(self.input_names, inputs, strict=True)))

    def act(self, feeds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """q [B] from the graph inputs by name (the parity check feeds them so)."""
        return self.critic.q([feeds[name] for name in self.image_names], feeds["state"],
                             self.task_table[feeds["task"]], feeds["actions"])
