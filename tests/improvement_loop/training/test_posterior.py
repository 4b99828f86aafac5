"""PostBC's posterior noise: wide where the demonstrations are sparse, narrow where they are dense; a policy
trained on zero noise is the BC policy, step for step."""
import numpy as np
import pytest
import torch

from robot_runtime.improvement_loop.data.batches import Tensors
from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
from robot_runtime.improvement_loop.training.posterior import PosteriorConfig, posterior_std
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, train_policy

CHUNK, ACTIONS = 3, 2


def rows(dense: int, sparse: int) -> Tensors:
    """`dense` rows at one state with one action; `sparse` rows spread far away with actions all different."""
    rng = np.random.default_rng(0)
    state = np.concatenate([np.zeros((dense, 2)), rng.uniform(3, 6, (sparse, 2))]).astype(np.float32)
    action = np.concatenate([np.full((dense, CHUNK, ACTIONS), 0.5), rng.normal(0, 1, (sparse, CHUNK, ACTIONS))])
    n = dense + sparse
    return Tensors([], state, action.astype(np.float32), np.ones((n, CHUNK), np.float32), np.zeros(n, np.int64),
                   torch.zeros(1, 384))


def test_the_noise_is_wide_where_the_data_is_sparse():
    t = rows(190, 10)
    std, metrics = posterior_std(t, PosteriorConfig(members=4, steps=150, hidden=32))
    assert std.shape == t.action_chunk.shape and np.all(np.isfinite(std)) and np.all(std >= 0)
    assert std[190:].mean() > 5 * std[:190].mean()
    assert metrics["members"] == 4 and metrics["target_noise_std_mean"] == pytest.approx(std.mean())
    doubled, _ = posterior_std(t, PosteriorConfig(members=4, steps=150, hidden=32, alpha=4.0))
    np.testing.assert_allclose(doubled, 2 * std, rtol=1e-5)                    # std grows with sqrt(alpha)
    with pytest.raises(ValueError, match="members"):
        PosteriorConfig(members=1)


def test_zero_noise_trains_the_bc_policy_exactly():
    t = rows(20, 5)
    spec = InputSpec(cameras=(), state_dim=2, action_dim=ACTIONS, chunk_length=CHUNK)
    cfg = PolicyTrainConfig(steps=3, batch_size=8, threads=1, progress=False,
                            net=NetConfig(d_model=16, heads=2, trunk_layers=1, head_layers=1))
    plain, _ = train_policy(t, None, spec, cfg)
    zero, _ = train_policy(t, None, spec, cfg, target_noise=np.zeros_like(t.action_chunk))
    noisy, _ = train_policy(t, None, spec, cfg, target_noise=np.ones_like(t.action_chunk))
    for a, b in zip(plain.parameters(), zero.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(plain.parameters(), noisy.parameters()))
