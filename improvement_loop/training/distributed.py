"""Data-parallel training under torchrun; the same code runs unchanged in one process.

`torchrun --nproc_per_node=K robot-runtime-train ...` starts K copies with RANK,
WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE set; `world()` joins the process
group on first use (gloo on CPU, NCCL when CUDA is there) and plain `python`
gets a world of one, so nothing else branches on how it was launched. Every rank
builds the same global batch and trains on its contiguous share of the rows
(train.py); DistributedDataParallel averages the gradients, so K ranks take
exactly the step one process would take on the whole batch, up to float
summation order. Only rank 0 writes files; ranks read the same paths, so a
multi-node job needs a shared work directory.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_size: int = 1                 # ranks on this machine; they share its cores
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, TensorBoard, bundles and progress bars."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's contiguous share of a global batch."""
        if batch_size % self.size:
            raise ValueError(f"batch size {batch_size} does not split over {self.size} processes; "
                             f"use a multiple of {self.size}")
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)


def world() -> World:
    """This process's place in the job, from torchrun's environment (one process when it is absent)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", size)), device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean(values: list[float]) -> list[float]:
    """Average a few numbers (a step's loss and scalars) over the ranks, for logging."""
    if not dist.is_initialized() or not values:
        return values
    w = world()
    total = torch.tensor(values, dtype=torch.float64, device=w.device)
    dist.all_reduce(total)
    return (total / w.size).tolist()


@contextmanager
def main_first():
    """Rank 0 runs the block before the others (e.g. filling a cache they then read)."""
    is_main = world().is_main
    if not is_main:
        barrier()
    yield
    if is_main:
        barrier()


def shutdown() -> None:
    """Leave the process group (the CLI calls this at the end; library callers under torchrun should too)."""
    if dist.is_initialized():
        dist.destroy_process_group()
