"""Export a trained policy to ONNX, prove it matches torch, and write the model bundle.

The graph is the bundle's contract (robot_runtime.bundle): the task embedding
table is a constant, the K Euler steps and the CFG combination are unrolled
inside, so the robot runs one ONNX session and no torch. We use the legacy
TorchScript exporter (dynamo=False): the graph takes a variable number of camera
inputs, which torch.export's dynamic-shape spec does not express from
`dynamic_axes`, and the legacy path maps our plain ops one-to-one.

Parity: the same random inputs go through torch and ONNX Runtime (CPU EP), both
fed by input name (positions could pair a tensor with the wrong input); the max
abs difference of the output (normalized action units) is recorded in the
manifest's `training` dict and the export fails above the tolerance.
Measured ~1e-6 for the default network; the tolerance is 1e-4. A chunk critic
(models/critic.py), when given, is exported beside it as value.onnx with the
signature of `manifest.value_inputs()` and checked the same way (its output is a
normalized return in [-1, 0]; `value_parity_max_abs_error` in `training`).
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robot_runtime.bundle import BATCH, POLICY_FILE, VALUE_FILE, Bundle, GraphTensor, Manifest, write_bundle
from robot_runtime.improvement_loop.models.critic import ChunkCritic, CriticGraph
from robot_runtime.improvement_loop.models.policy import PolicyGraph, VLAPolicy


class ExportError(Exception):
    """The exported graph cannot be trusted (e.g. ONNX Runtime disagrees with torch)."""


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 17
    parity_tolerance: float = 1e-4      # max abs error allowed, normalized action units
    parity_batch: int = 3               # differs from the trace batch (2) so the dynamic batch axis is exercised
    seed: int = 0


def example_inputs(manifest: Manifest, batch: int, rng: np.random.Generator,
                   beta: float | None = None, tensors: tuple[GraphTensor, ...] | None = None) -> dict[str, np.ndarray]:
    """Random inputs, by name, for every input of `tensors` (default `manifest.graph_inputs()`: what
    export traces and parity feeds): images 0..255, task indices into `tasks`, prefix weights in [0, 1],
    the scalar beta (default `manifest.beta`), and normals for state, noise, prefix and actions."""
    inputs = {}
    for t in manifest.graph_inputs() if tensors is None else tensors:
        shape = t.shape_for(batch)
        if t.camera:
            inputs[t.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif t.name == "task":
            inputs[t.name] = rng.integers(0, len(manifest.tasks), size=shape).astype(t.dtype)
        elif t.name == "beta":
            inputs[t.name] = np.full(shape, manifest.beta if beta is None else beta, t.dtype)
        elif t.name == "prefix_weights":
            inputs[t.name] = rng.uniform(0, 1, shape).astype(t.dtype)
        else:
            inputs[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return inputs


def _check_matches(policy: VLAPolicy, manifest: Manifest, task_table: np.ndarray) -> None:
    spec = policy.spec
    cameras = tuple((c.name, c.height, c.width) for c in manifest.cameras)
    problems = [
        (cameras != spec.cameras, f"cameras {cameras} vs the policy's {spec.cameras}"),
        (len(manifest.state_names) != spec.state_dim,
         f"{len(manifest.state_names)} state names vs state_dim {spec.state_dim}"),
        (len(manifest.action_names) != spec.action_dim,
         f"{len(manifest.action_names)} action names vs action_dim {spec.action_dim}"),
        (manifest.chunk_length != spec.chunk_length, f"chunk_length {manifest.chunk_length} vs {spec.chunk_length}"),
        (len(task_table) != len(manifest.tasks), f"{len(task_table)} task embeddings for {len(manifest.tasks)} tasks"),
    ]
    for bad, problem in problems:
        if bad:
            raise ExportError(f"manifest '{manifest.model_id}@{manifest.version}' does not fit the policy: {problem}")


def export_onnx(policy: VLAPolicy, manifest: Manifest, task_table: np.ndarray, path: Path,
                cfg: ExportConfig) -> PolicyGraph:
    """Trace the policy graph that `manifest` describes into `path`; returns the traced module."""
    graph = PolicyGraph(policy, torch.as_tensor(task_table), manifest).eval()
    return _trace(graph, manifest, manifest.graph_inputs(), manifest.graph_outputs(), path, cfg)


def export_critic(critic: ChunkCritic, manifest: Manifest, task_table: np.ndarray, path: Path,
                  cfg: ExportConfig) -> CriticGraph:
    """Trace the chunk critic into `path` (value.onnx) with the signature `manifest.value_inputs()` defines."""
    graph = CriticGraph(critic, torch.as_tensor(task_table), manifest).eval()
    return _trace(graph, manifest, manifest.value_inputs(), manifest.value_outputs(), path, cfg)


def _trace(graph: PolicyGraph | CriticGraph, manifest: Manifest, inputs: tuple[GraphTensor, ...],
           outputs: tuple[GraphTensor, ...], path: Path, cfg: ExportConfig):
    """Trace `graph` on random example inputs (batch 2) into `path`, every batch axis dynamic; returns it."""
    example = example_inputs(manifest, 2, np.random.default_rng(cfg.seed), tensors=inputs)
    dynamic = {t.name: {0: "batch"} for t in inputs + outputs if t.shape[:1] == (BATCH,)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)   # the legacy exporter, chosen on purpose (see above)
        torch.onnx.export(graph, tuple(torch.from_numpy(example[n]) for n in graph.input_names), str(path),
                          dynamo=False, opset_version=cfg.opset, input_names=list(graph.input_names),
                          output_names=[t.name for t in outputs], dynamic_axes=dynamic)
    return graph


def parity_error(graph: PolicyGraph | CriticGraph, path: Path, inputs: dict[str, np.ndarray]) -> float:
    """Max abs difference between torch and ONNX Runtime (CPU EP), both fed `inputs` by name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = graph.act({name: torch.from_numpy(value) for name, value in inputs.items()}).numpy()
    (actual,) = session.run(None, inputs)
    return float(np.abs(expected - actual).max())


def export_bundle(policy: VLAPolicy, task_table: np.ndarray, manifest: Manifest, bundle_dir: str | Path,
                  cfg: ExportConfig = ExportConfig(), critic: ChunkCritic | None = None) -> Bundle:
    """Export, check parity, and write the bundle at `bundle_dir` (must not exist yet); with `critic`,
    value.onnx too.

    `manifest` is complete except `files`; its `training` dict gains the parity
    error, tolerance and export seconds. Raises ExportError when the graph and
    the manifest disagree or parity fails.
    """
    _check_matches(policy, manifest, task_table)
    policy.eval()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="policy-export-") as tmp:
        onnx_path = Path(tmp) / POLICY_FILE
        graph = export_onnx(policy, manifest, task_table, onnx_path, cfg)
        error = parity_error(graph, onnx_path, example_inputs(manifest, cfg.parity_batch,
                                                              np.random.default_rng(cfg.seed + 1)))
        if not error <= cfg.parity_tolerance:
            raise ExportError(f"{onnx_path.name} of '{manifest.model_id}@{manifest.version}': ONNX Runtime differs "
                              f"from torch by {error:.3g} (> tolerance {cfg.parity_tolerance:g} normalized units)")
        files = {POLICY_FILE: onnx_path}
        if critic is not None:
            critic.eval()
            files[VALUE_FILE] = Path(tmp) / VALUE_FILE
            graph = export_critic(critic, manifest, task_table, files[VALUE_FILE], cfg)
            inputs = example_inputs(manifest, cfg.parity_batch, np.random.default_rng(cfg.seed + 2),
                                    tensors=manifest.value_inputs())
            value_error = parity_error(graph, files[VALUE_FILE], inputs)
            if not value_error <= cfg.parity_tolerance:
                raise ExportError(f"{VALUE_FILE} of '{manifest.model_id}@{manifest.version}': ONNX Runtime differs "
                                  f"from torch by {value_error:.3g} (> tolerance {cfg.parity_tolerance:g})")
            manifest.training.update(value_parity_max_abs_error=value_error)
        manifest.training.update(parity_max_abs_error=error, parity_tolerance=cfg.parity_tolerance,
                                 export_seconds=round(time.perf_counter() - start, 2))
        return write_bundle(bundle_dir, manifest, files)
