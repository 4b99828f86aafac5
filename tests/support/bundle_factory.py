"""A small, real ONNX policy that satisfies the bundle contract, built without torch.

actions[b, k, :] = tanh(state[b] @ W + bias) for every chunk step k; the image,
task, noise and beta inputs are consumed (times zero) so the graph's signature is
exactly what the manifest's `graph_inputs()` defines. Lets robot-side tests run
real ONNX Runtime without the workstation half.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from robot_runtime.bundle import Camera, GraphTensor, Manifest, Normalization, write_bundle
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, instruction_for


def value_info(t: GraphTensor) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(t.dtype), list(t.shape))


def reference_graph(manifest: Manifest, weights: np.ndarray, bias: np.ndarray, busy_matmuls: int = 0,
                    nan_above: float | None = None, noise_scale: float = 0.0) -> onnx.ModelProto:
    """The reference policy with exactly the inputs and output `manifest` defines; `noise_scale` adds
    that much of the flow-matching noise to the chunk (so samples differ, for value guidance)."""
    inputs = manifest.graph_inputs()
    names = {t.name for t in inputs}
    init = [helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel()),
            helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("noise_scale", TensorProto.FLOAT, [], [noise_scale]),
            helper.make_tensor("axes1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axes12", TensorProto.INT64, [2], [1, 2])]
    nodes = [helper.make_node("MatMul", ["state", "W"], ["sw"]),
             helper.make_node("Add", ["sw", "bias"], ["swb"]),
             helper.make_node("Tanh", ["swb"], ["act"]),
             helper.make_node("Unsqueeze", ["act", "axes1"], ["act3"]),
             helper.make_node("Mul", ["noise", "noise_scale"], ["noise0"]),
             helper.make_node("Add", ["act3", "noise0"], ["acc0"]),
             helper.make_node("Cast", ["task"], ["taskf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["taskf", "zero"], ["task0"]),
             helper.make_node("Unsqueeze", ["task0", "axes12"], ["task3"]),
             helper.make_node("Add", ["acc0", "task3"], ["acc1"])]
    last = "acc1"
    for i, image in enumerate(t.name for t in inputs if t.camera):
        nodes += [helper.make_node("Cast", [image], [f"imf{i}"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", [f"imf{i}"], [f"imm{i}"], keepdims=0, axes=[1, 2, 3]),
                  helper.make_node("Mul", [f"imm{i}", "zero"], [f"im0{i}"]),
                  helper.make_node("Unsqueeze", [f"im0{i}", "axes12"], [f"im3{i}"]),
                  helper.make_node("Add", [last, f"im3{i}"], [f"acc_im{i}"])]
        last = f"acc_im{i}"
    if busy_matmuls:  # real work that takes time, for latency and deadline tests
        init.append(helper.make_tensor("M", TensorProto.FLOAT, [256, 256], np.full(256 * 256, 1e-3, np.float32)))
        # Tie the chain to an input so ONNX Runtime cannot constant-fold it away at load time.
        nodes += [helper.make_node("ReduceMean", ["state"], ["state_mean"], keepdims=0),
                  helper.make_node("Mul", ["state_mean", "zero"], ["state_zero"]),
                  helper.make_node("Add", ["M", "state_zero"], ["M_live"])]
        prev = "M_live"
        for i in range(busy_matmuls):
            nodes.append(helper.make_node("MatMul", [prev, "M"], [f"busy_{i}"]))
            prev = f"busy_{i}"
        nodes += [helper.make_node("ReduceMean", [prev], ["busy_mean"], keepdims=0),
                  helper.make_node("Mul", ["busy_mean", "zero"], ["busy_zero"]),
                  helper.make_node("Add", [last, "busy_zero"], ["acc_busy"])]
        last = "acc_busy"
    if nan_above is not None:  # sqrt(threshold - state[0]) is NaN past the threshold; 0 * NaN stays NaN
        init += [helper.make_tensor("threshold", TensorProto.FLOAT, [], [nan_above]),
                 helper.make_tensor("first", TensorProto.INT64, [1], [0])]
        nodes += [helper.make_node("Gather", ["state", "first"], ["state0"], axis=1),
                  helper.make_node("Sub", ["threshold", "state0"], ["margin"]),
                  helper.make_node("Sqrt", ["margin"], ["root"]),
                  helper.make_node("Mul", ["root", "zero"], ["root0"]),
                  helper.make_node("Unsqueeze", ["root0", "axes1"], ["root3"]),
                  helper.make_node("Add", [last, "root3"], ["acc_nan"])]
        last = "acc_nan"
    if "beta" in names:
        nodes += [helper.make_node("Mul", ["beta", "zero"], ["beta0"]),
                  helper.make_node("Add", [last, "beta0"], ["acc_beta"])]
        last = "acc_beta"
    if "prefix" in names:  # hard inpainting: actions = (1 - w) * plan + w * prefix
        init.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
        init.append(helper.make_tensor("axes2", TensorProto.INT64, [1], [2]))
        nodes += [helper.make_node("Unsqueeze", ["prefix_weights", "axes2"], ["w3"]),
                  helper.make_node("Sub", ["one", "w3"], ["keep"]),
                  helper.make_node("Mul", [last, "keep"], ["planned"]),
                  helper.make_node("Mul", ["prefix", "w3"], ["committed"]),
                  helper.make_node("Add", ["planned", "committed"], ["acc_rtc"])]
        last = "acc_rtc"
    nodes.append(helper.make_node("Identity", [last], ["actions"]))
    graph = helper.make_graph(nodes, "reference_policy", [value_info(t) for t in inputs],
                              [value_info(t) for t in manifest.graph_outputs()], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def reference_critic(manifest: Manifest, target: np.ndarray) -> onnx.ModelProto:
    """A chunk critic preferring `target` [chunk, A] (normalized): q = -sum((actions - target)^2); the
    observation inputs are consumed times zero, so the signature is exactly `manifest.value_inputs()`."""
    inputs = manifest.value_inputs()
    init = [helper.make_tensor("target", TensorProto.FLOAT, target.shape, target.astype(np.float32).ravel()),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("axes12", TensorProto.INT64, [2], [1, 2])]
    nodes = [helper.make_node("Sub", ["actions", "target"], ["diff"]),
             helper.make_node("Mul", ["diff", "diff"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "axes12"], ["dist"], keepdims=0),
             helper.make_node("Neg", ["dist"], ["acc"])]
    last = "acc"
    for i, t in enumerate(t for t in inputs if t.name != "actions"):
        nodes += [helper.make_node("Cast", [t.name], [f"f{i}"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", [f"f{i}"], [f"m{i}"], keepdims=0, axes=list(range(1, len(t.shape))))
                  if len(t.shape) > 1 else helper.make_node("Identity", [f"f{i}"], [f"m{i}"]),
                  helper.make_node("Mul", [f"m{i}", "zero"], [f"z{i}"]),
                  helper.make_node("Add", [last, f"z{i}"], [f"acc{i}"])]
        last = f"acc{i}"
    nodes.append(helper.make_node("Identity", [last], ["q"]))
    graph = helper.make_graph(nodes, "reference_critic", [value_info(t) for t in inputs],
                              [value_info(t) for t in manifest.value_outputs()], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def make_reference_bundle(path: Path, cameras=(("corner", 96), ("gripperPOV", 96)), state_names=STATE_NAMES,
                          action_names=ACTION_NAMES, tasks=(instruction_for("push-v3"),), chunk_length: int = 8,
                          conditioning: str = "none", control_rate_hz: float = 20.0, nan: bool = False,
                          version: str = "v1", seed: int = 0, busy_matmuls: int = 0,
                          nan_above: float | None = None, realtime_chunking: bool = False,
                          noise_scale: float = 0.0, critic_target: np.ndarray | None = None):
    """The reference policy as a bundle; with `critic_target` [chunk, A] it also carries value.onnx
    (reference_critic)."""
    rng = np.random.default_rng(seed)
    cams = [Camera(name, size, size) for name, size in cameras]
    s, a = len(state_names), len(action_names)
    weights = rng.normal(0, 0.3, (s, a)).astype(np.float32)
    bias = np.full(a, np.nan if nan else 0.0, np.float32)
    manifest = Manifest(
        model_id="reference", version=version, cameras=cams, state_names=list(state_names),
        action_names=list(action_names), action_low=[-1.0] * a, action_high=[1.0] * a,
        chunk_length=chunk_length, control_rate_hz=control_rate_hz, tasks=list(tasks),
        normalization=Normalization([0.0] * s, [1.0] * s, [0.0] * a, [1.0] * a),
        conditioning_mode=conditioning, realtime_chunking=realtime_chunking)
    model = reference_graph(manifest, weights, bias, busy_matmuls, nan_above, noise_scale)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"policy.onnx": Path(tmp) / "policy.onnx"}
        onnx.save(model, files["policy.onnx"])
        if critic_target is not None:
            files["value.onnx"] = Path(tmp) / "value.onnx"
            onnx.save(reference_critic(manifest, critic_target), files["value.onnx"])
        return write_bundle(path, manifest, files)
