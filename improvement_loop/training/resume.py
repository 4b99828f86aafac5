"""A training run's state, saved every N steps, so that a killed run continues where it stopped.

One safetensors file per run (`<dir>/<name>.safetensors`): the model weights and
the optimizer's moment tensors, and as JSON metadata the step, the scheduler's
and the optimizer's settings, the loss and scalar history, and a fingerprint of
the run. It is written to a temporary file and renamed, so a kill mid-write
leaves the previous state whole. No RNG state is saved because there is none to
carry: train.py draws step k's batch, augmentation and flow noise from a
generator seeded by (seed, k), so a resumed run draws exactly what an
uninterrupted one would have.

The fingerprint (the training config plus a hash of the first global batch)
stops a rerun with other settings or other data from continuing a stale run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from robot_runtime.files import replace_atomically


class StaleStateError(ValueError):
    """The saved state belongs to a run with other settings or other data."""


@dataclass
class Progress:
    step: int = 0                                   # steps done
    losses: list[float] = field(default_factory=list)
    scalars: dict[str, list[float]] = field(default_factory=dict)


def state_path(directory: str | os.PathLike, name: str) -> Path:
    return Path(directory) / f"{name}.safetensors"


def save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
               schedule: torch.optim.lr_scheduler.LRScheduler, progress: Progress, fingerprint: str) -> None:
    optimizer = opt.state_dict()
    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    for index, state in optimizer["state"].items():
        tensors.update({f"optimizer.{index}.{key}": torch.as_tensor(value).cpu().contiguous()
                        for key, value in state.items()})
    metadata = {"fingerprint": fingerprint, "step": str(progress.step), "losses": json.dumps(progress.losses),
                "scalars": json.dumps(progress.scalars), "optimizer_groups": json.dumps(optimizer["param_groups"]),
                "schedule": json.dumps(schedule.state_dict())}
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
               schedule: torch.optim.lr_scheduler.LRScheduler, fingerprint: str) -> Progress:
    """Restore model, optimizer and schedule from `path`; a fresh Progress when there is no file."""
    if not path.is_file():
        return Progress()
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("fingerprint") != fingerprint:
        raise StaleStateError(f"{path}: saved training state is from a run with other settings or data; "
                              f"delete it to train from scratch")
    device = next(model.parameters()).device
    tensors = load_file(str(path), device=str(device))
    model.load_state_dict({name[len("model."):]: t for name, t in tensors.items() if name.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = t.cpu() if key == "step" else t
    opt.load_state_dict({"state": state, "param_groups": json.loads(metadata["optimizer_groups"])})
    schedule.load_state_dict(json.loads(metadata["schedule"]))
    return Progress(int(metadata["step"]), json.loads(metadata["losses"]), json.loads(metadata["scalars"]))
