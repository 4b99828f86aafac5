"""Exported policy graphs: ONNX Runtime matches torch, CFG means what it says, the bundle loads."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from robot_runtime.bundle import Camera, Manifest, Normalization, load_bundle
from robot_runtime.improvement_loop.models.export import (
    ExportConfig,
    ExportError,
    example_inputs,
    export_bundle,
    parity_error,
)
from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
from robot_runtime.improvement_loop.models.policy import PolicyGraph, VLAPolicy
from robot_runtime.improvement_loop.recap import NEGATIVE, NULL, POSITIVE

SMALL = NetConfig(d_model=32, heads=2, trunk_layers=1, head_layers=1, cnn_channels=(8, 16))
CAMERAS = {"none": (), "two": (("front", 24, 32), ("wrist", 16, 16))}


def make(cameras, mode, beta, seed=0):
    torch.manual_seed(seed)
    spec = InputSpec(cameras=cameras, state_dim=5, action_dim=3, chunk_length=4)
    policy = VLAPolicy(spec, SMALL).eval()
    manifest = Manifest(
        model_id="test", version=f"{mode}-{beta}", cameras=[Camera(*c) for c in cameras],
        state_names=[f"s{i}" for i in range(5)], action_names=["a", "b", "c"],
        action_low=[-1.0] * 3, action_high=[1.0] * 3, chunk_length=4, control_rate_hz=10.0,
        tasks=["push", "reach", "pick"],
        normalization=Normalization([0.0] * 5, [1.0] * 5, [0.0] * 3, [1.0] * 3),
        conditioning_mode=mode, beta=beta, denoising_steps=5)
    table = np.random.default_rng(seed).standard_normal((3, 384)).astype(np.float32)
    return policy, manifest, table


def run(bundle, inputs):
    session = ort.InferenceSession(str(bundle.policy_path), providers=["CPUExecutionProvider"])
    return session.run(["actions"], inputs)[0]


def euler(policy, table, inputs, indicator):
    """Reference sampler written out here: K Euler steps with one fixed indicator."""
    cams = [torch.from_numpy(v) for k, v in inputs.items() if k.startswith("image_")]
    state, task = torch.from_numpy(inputs["state"]), torch.from_numpy(inputs["task"])
    x = torch.from_numpy(inputs["noise"])
    with torch.no_grad():
        context = policy.encoder(cams, state, torch.from_numpy(table)[task])
        label = torch.full((len(x),), indicator, dtype=torch.long)
        for k in range(5):
            x = x + policy.velocity(context, x, torch.full((len(x),), k / 5), label) / 5
    return x.numpy()


@pytest.mark.parametrize("cameras", list(CAMERAS), ids=lambda c: f"cameras-{c}")
@pytest.mark.parametrize("mode,beta", [("none", 1.0), ("advantage", 1.0), ("advantage", 2.0)])
def test_export_parity_and_bundle_loads(tmp_path, cameras, mode, beta):
    policy, manifest, table = make(CAMERAS[cameras], mode, beta)
    bundle = export_bundle(policy, table, manifest, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.manifest.conditioning_mode == mode and loaded.manifest.beta == beta
    error = loaded.manifest.training["parity_max_abs_error"]
    assert 0 <= error <= 1e-4 == loaded.manifest.training["parity_tolerance"]
    # Independently of the exporter's own check: a new batch size, ORT vs a sampler written out here.
    inputs = example_inputs(manifest, 5, np.random.default_rng(7))
    actions = run(bundle, inputs)
    assert actions.shape == (5, 4, 3)
    if mode == "none":
        np.testing.assert_allclose(actions, euler(policy, table, inputs, NULL), atol=1e-4)
    elif beta == 1.0:
        np.testing.assert_allclose(actions, euler(policy, table, inputs, POSITIVE), atol=1e-4)


def test_cfg_beta_is_a_live_input(tmp_path):
    """beta = 0 gives the unconditional policy, beta = 1 the positive one, beta = 2 extrapolates."""
    policy, manifest, table = make(CAMERAS["two"], "advantage", 1.5)
    bundle = export_bundle(policy, table, manifest, tmp_path / "bundle")
    inputs = example_inputs(manifest, 2, np.random.default_rng(3), beta=0.0)
    null, positive = euler(policy, table, inputs, NULL), euler(policy, table, inputs, POSITIVE)
    np.testing.assert_allclose(run(bundle, {**inputs, "beta": np.array(0.0, np.float32)}), null, atol=1e-4)
    np.testing.assert_allclose(run(bundle, {**inputs, "beta": np.array(1.0, np.float32)}), positive, atol=1e-4)
    beyond = run(bundle, {**inputs, "beta": np.array(2.0, np.float32)})
    assert np.abs(beyond - positive).max() > 1e-3


def test_export_refuses_a_manifest_that_does_not_fit(tmp_path):
    policy, manifest, table = make(CAMERAS["two"], "none", 1.0)
    with pytest.raises(ExportError, match="task embeddings for 3 tasks"):
        export_bundle(policy, table[:2], manifest, tmp_path / "bundle")
    manifest.chunk_length = 8
    with pytest.raises(ExportError, match="chunk_length 8"):
        export_bundle(policy, table, manifest, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_parity_failure_stops_the_export(tmp_path):
    policy, manifest, table = make(CAMERAS["none"], "none", 1.0)
    with pytest.raises(ExportError, match="differs from torch"):
        export_bundle(policy, table, manifest, tmp_path / "bundle", ExportConfig(parity_tolerance=-1.0))
    assert not (tmp_path / "bundle").exists()


def test_realtime_chunking_inpaints_the_committed_prefix(tmp_path):
    """With the prefix inputs, the chunk keeps the committed actions where the weights say so,
    follows the policy where they are zero, and matches torch after export."""
    policy, manifest, table = make(CAMERAS["two"], "advantage", 1.0)
    manifest.realtime_chunking = True
    bundle = export_bundle(policy, table, manifest, tmp_path / "bundle")
    assert bundle.manifest.training["parity_max_abs_error"] <= 1e-4  # parity includes the prefix inputs
    inputs = example_inputs(manifest, 3, np.random.default_rng(5))
    free = run(bundle, {**inputs, "prefix_weights": np.zeros((3, 4), np.float32)})
    np.testing.assert_allclose(free, euler(policy, table, inputs, POSITIVE), atol=1e-4)  # no weight, no effect
    weights = np.zeros((3, 4), np.float32)
    weights[:, :2] = 1.0  # two ticks will have executed before this chunk lands
    guided = run(bundle, {**inputs, "prefix_weights": weights})
    prefix = inputs["prefix"]
    before = np.abs(free[:, :2] - prefix[:, :2]).mean()
    after = np.abs(guided[:, :2] - prefix[:, :2]).mean()
    assert after < 0.2 * before, (before, after)  # the committed ticks are kept


def test_parity_pairs_torch_and_onnx_runtime_inputs_by_name(tmp_path):
    """Both sides read inputs by name: reordering the mapping changes nothing, while handing torch
    one input's tensor under another's name (noise and prefix have the same shape) is caught."""
    policy, manifest, table = make(CAMERAS["two"], "advantage", 1.5)
    manifest.realtime_chunking = True
    bundle = export_bundle(policy, table, manifest, tmp_path / "bundle")
    graph = PolicyGraph(policy, torch.as_tensor(table), manifest).eval()
    inputs = example_inputs(manifest, 3, np.random.default_rng(11))
    reordered = dict(reversed(inputs.items()))
    assert list(reordered) != list(graph.input_names)
    assert parity_error(graph, bundle.policy_path, reordered) <= 1e-4
    with torch.no_grad():
        by_name = graph.act({k: torch.from_numpy(v) for k, v in inputs.items()})
        by_position = graph(*(torch.from_numpy(inputs[name]) for name in graph.input_names))
        swapped = graph.act({**{k: torch.from_numpy(v) for k, v in inputs.items()},
                             "noise": torch.from_numpy(inputs["prefix"]), "prefix": torch.from_numpy(inputs["noise"])})
    torch.testing.assert_close(by_position, by_name, rtol=0, atol=0)
    assert np.abs(swapped.numpy() - run(bundle, inputs)).max() > 100 * ExportConfig().parity_tolerance


def test_indicators_from_null_start_both_branches_as_the_bc_policy():
    policy, _, _ = make((), "advantage", 1.0)
    context, x = torch.randn(2, 3, SMALL.d_model), torch.randn(2, 4, 3)
    t = torch.full((2,), 0.5)

    def velocity(label):
        return policy.velocity(context, x, t, torch.full((2,), label))

    assert not torch.allclose(velocity(POSITIVE), velocity(NULL))       # untrained embeddings differ
    policy.indicators_from_null()
    assert torch.equal(velocity(POSITIVE), velocity(NULL)) and torch.equal(velocity(NEGATIVE), velocity(NULL))
