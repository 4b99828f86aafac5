"""Network checkpoints as safetensors, self-describing enough to rebuild the network.

The safetensors metadata (str -> str) carries JSON: which network, its InputSpec
and NetConfig, and whatever the caller needs to reuse it (normalization stats,
the camera/state/action layout), so a later round can start from a checkpoint
without the run that wrote it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from robot_runtime.files import replace_atomically
from robot_runtime.improvement_loop.models.critic import ChunkCritic
from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
from robot_runtime.improvement_loop.models.policy import VLAPolicy
from robot_runtime.improvement_loop.models.value import DistributionalValue, value_network

# kind -> (what it is, how to build a fresh one from spec and config); a value network's
# NetConfig.critic picks the critic, so a TQL V_pre comes back as a TQL critic.
KINDS = {"policy": (VLAPolicy, VLAPolicy), "value": (DistributionalValue, value_network),
         "critic": (ChunkCritic, ChunkCritic)}


def save_checkpoint(path: str | os.PathLike, model: VLAPolicy | DistributionalValue | ChunkCritic, info: dict) -> Path:
    """Write `model`'s weights plus its spec/config and the JSON-able `info` to `path`."""
    path = Path(path)
    kind = next(name for name, (cls, _) in KINDS.items() if isinstance(model, cls))
    metadata = {"kind": kind, "spec": json.dumps(asdict(model.spec)), "net": json.dumps(asdict(model.cfg)),
                "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    return replace_atomically(path, lambda tmp: save_file(weights, str(tmp), metadata=metadata))


def load_checkpoint(path: str | os.PathLike, kind: str) -> tuple[VLAPolicy | DistributionalValue, dict]:
    """Rebuild the network saved at `path` and return it with its `info` dict."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("kind") != kind:
        raise ValueError(f"{path}: holds a '{metadata.get('kind')}' checkpoint, expected '{kind}'")
    spec_json = json.loads(metadata["spec"])
    spec = InputSpec(cameras=tuple(tuple(c) for c in spec_json["cameras"]), state_dim=spec_json["state_dim"],
                     action_dim=spec_json["action_dim"], chunk_length=spec_json["chunk_length"])
    model = KINDS[kind][1](spec, NetConfig.from_json(json.loads(metadata["net"])))
    model.load_state_dict(load_file(str(path)))
    return model, json.loads(metadata["info"])
