"""Training batches: normalized tensors drawn from an in-memory Dataset, with image shift augmentation.

Normalization happens once here, with the same stats the bundle's manifest
carries, so the network trains on exactly what the runtime will feed it:
state (x - mean) / std, action chunks in the same normalized units, raw uint8
pixels (the graph divides by 255 itself).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robot_runtime.improvement_loop.data.dataset import Dataset, Stats


@dataclass
class Tensors:
    """Everything a batch is cut from; images stay uint8 numpy until a batch is drawn."""

    images: list[np.ndarray]            # per camera, in the layout's order, uint8 [N,H,W,3]
    state: np.ndarray                   # float32 [N,S], normalized
    action_chunk: np.ndarray            # float32 [N,chunk,A], normalized
    chunk_mask: np.ndarray              # float32 [N,chunk]
    task_index: np.ndarray              # int64 [N]
    task_table: torch.Tensor            # float32 [tasks, 384]

    def __len__(self) -> int:
        return len(self.state)

    def subset(self, rows: np.ndarray) -> Tensors:
        """The rows selected by a boolean mask (a copy; used to train on some episodes only)."""
        return Tensors([image[rows] for image in self.images], self.state[rows], self.action_chunk[rows],
                       self.chunk_mask[rows], self.task_index[rows], self.task_table)


def prepare(data: Dataset, stats: Stats, task_table: np.ndarray) -> Tensors:
    if len(task_table) != len(data.tasks):
        raise ValueError(f"task table has {len(task_table)} rows for {len(data.tasks)} tasks")
    return Tensors(
        images=[data.images[cam] for cam in data.layout.cameras],
        state=((data.state - stats.state_mean) / stats.state_std).astype(np.float32),
        action_chunk=((data.action_chunk - stats.action_mean) / stats.action_std).astype(np.float32),
        chunk_mask=data.chunk_mask.astype(np.float32),
        task_index=data.task_index,
        task_table=torch.as_tensor(task_table, dtype=torch.float32),
    )


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by up to `pad` pixels (edge-padded), the DrQ augmentation for small data."""
    if pad == 0:
        return images
    batch, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, batch))
    # A slice per sample is ~10x faster than one fancy-index gather over all pixels.
    return np.stack([padded[i, y:y + height, x:x + width] for i, (y, x) in enumerate(zip(dy, dx))])


def model_inputs(t: Tensors, index: np.ndarray, rng: np.random.Generator | None = None,
                 shift: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(images, state, task embedding) of the rows `index`; augmented when `rng` is given."""
    images = [cam[index] for cam in t.images]
    if rng is not None:
        images = [random_shift(image, shift, rng) for image in images]
    task_embedding = t.task_table[torch.from_numpy(t.task_index[index])]
    return [torch.from_numpy(np.ascontiguousarray(i)) for i in images], torch.from_numpy(t.state[index]), task_embedding
