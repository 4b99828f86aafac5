"""Value-guided execution: a bundle's chunk critic ranks K candidate chunks sampled in one batched call."""
import numpy as np
import onnx
import pytest

from robot_runtime.bundle import BundleError, load_bundle, write_bundle
from robot_runtime.runtime.executor import PolicyExecutor
from robot_runtime.runtime.guidance import MAX_CANDIDATES, GuidanceError, ValueGuidance
from robot_runtime.runtime.policy import PolicyRunner

from bundle_factory import make_reference_bundle, reference_critic

CHUNK, ACTIONS = 8, 4
STATE = np.zeros(21, np.float32)


def observation(bundle):
    return {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in bundle.manifest.cameras}


def guided_runner(bundle, k: int, seed: int = 3) -> PolicyRunner:
    runner = PolicyRunner.load(bundle.path, "onnxruntime", guidance=ValueGuidance(True, k), seed=seed)
    runner.select_task(bundle.manifest.tasks[0])
    return runner


@pytest.fixture(scope="module")
def preferred():
    """The chunk the critic prefers: well inside the bounds, different on every step and action."""
    return np.linspace(-0.6, 0.6, CHUNK * ACTIONS, dtype=np.float32).reshape(CHUNK, ACTIONS)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, preferred):
    # Samples are the policy's mean (tanh(state W) = 0 at zero state) plus 0.5 x the noise: K different chunks.
    return make_reference_bundle(tmp_path_factory.mktemp("b") / "guided", noise_scale=0.5, critic_target=preferred)


def test_bundle_lists_and_checks_the_critic(bundle):
    assert bundle.manifest.has_value and "value.onnx" in bundle.manifest.files
    assert bundle.value_path == bundle.path / "value.onnx"


def test_the_critic_picks_the_candidate_it_prefers(bundle, preferred):
    k, seed = 16, 3
    runner = guided_runner(bundle, k, seed)
    chunk = runner.infer(observation(bundle), STATE)
    # The candidates are the policy's K samples: the same noise the runner drew (its seeded generator,
    # after the warm-up's draw), times the graph's 0.5.
    rng = np.random.default_rng(seed)
    rng.standard_normal((k, CHUNK, ACTIONS), dtype=np.float32)                      # warm-up
    candidates = 0.5 * rng.standard_normal((k, CHUNK, ACTIONS), dtype=np.float32)
    distances = ((candidates - preferred) ** 2).sum(axis=(1, 2))
    best = int(np.argmin(distances))
    np.testing.assert_allclose(chunk, np.clip(candidates[best], -1, 1), atol=1e-5)
    np.testing.assert_allclose(runner.last_scores, -distances, rtol=1e-4)
    assert runner.candidates == k and runner.critic_failures == 0
    # Unguided, the same bundle executes its first sample, which is farther from the critic's favourite.
    plain = PolicyRunner.load(bundle.path, "onnxruntime", seed=seed)
    plain.select_task(bundle.manifest.tasks[0])
    unguided = plain.infer(observation(bundle), STATE)
    assert plain.candidates == 1 and plain.critic is None
    assert ((chunk - preferred) ** 2).sum() < ((unguided - preferred) ** 2).sum()


def test_guided_executor_runs_the_ranked_chunks(bundle, preferred):
    """More candidates, closer to what the critic prefers: the executor runs what the runner returns."""
    def mean_distance(k: int) -> float:
        executor = PolicyExecutor(guided_runner(bundle, k), realtime=False)
        executor.start_episode(bundle.manifest.tasks[0])
        actions = np.array([executor.tick(observation(bundle), STATE).action for _ in range(4 * CHUNK)])
        return float(np.abs(actions.reshape(-1, CHUNK // 2, ACTIONS) - preferred[:CHUNK // 2]).mean())

    assert mean_distance(32) < mean_distance(1)


def test_absent_critic_falls_back_or_is_refused(tmp_path):
    plain = make_reference_bundle(tmp_path / "plain", noise_scale=0.5)
    assert plain.value_path is None
    runner = PolicyRunner.load(plain.path, "onnxruntime", guidance=ValueGuidance(True, 8))
    assert runner.critic is None and runner.candidates == 1
    assert "no value.onnx" in runner.guidance_note and "fallback 'policy'" in runner.guidance_note
    runner.select_task(plain.manifest.tasks[0])
    assert runner.infer(observation(plain), STATE).shape == (CHUNK, ACTIONS)
    with pytest.raises(GuidanceError, match="no value.onnx"):
        PolicyRunner.load(plain.path, "onnxruntime", guidance=ValueGuidance(True, 8, fallback="refuse"))


@pytest.mark.parametrize("k", [0, -1, MAX_CANDIDATES + 1, 2.5, True, "8"])
def test_bad_candidate_counts_are_refused(k):
    with pytest.raises(GuidanceError, match="candidates"):
        ValueGuidance(True, k)


def test_bad_fallback_is_refused():
    with pytest.raises(GuidanceError, match="fallback"):
        ValueGuidance(True, 4, fallback="guess")


def test_a_critic_with_the_wrong_signature_is_refused(tmp_path, preferred):
    bundle = make_reference_bundle(tmp_path / "b", critic_target=preferred)
    model = reference_critic(bundle.manifest, preferred)
    model.graph.output[0].name = "score"
    model.graph.node[-1].output[0] = "score"
    onnx.save(model, tmp_path / "value.onnx")
    with pytest.raises(BundleError, match="value.onnx: graph has no output 'q'"):
        write_bundle(tmp_path / "bad", bundle.manifest, {"policy.onnx": bundle.policy_path,
                                                         "value.onnx": tmp_path / "value.onnx"})
    (bundle.path / "value.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="value.onnx: sha256 mismatch"):   # the manifest's digest covers it
        load_bundle(bundle.path)
