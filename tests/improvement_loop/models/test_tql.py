"""The TQL critic as a RECAP value function: tokens, entropy per layer, the temperatures' dual update, checkpoints."""
import math

import numpy as np
import pytest
import torch

from robot_runtime.improvement_loop.cycle.rounds import CycleConfig, improve, pretrain
from robot_runtime.improvement_loop.data.batches import prepare
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint, save_checkpoint
from robot_runtime.improvement_loop.models.layers import EntropyConfig, InputSpec, NetConfig
from robot_runtime.improvement_loop.models.value import TQLCritic, value_network
from robot_runtime.improvement_loop.recap import normalized_returns
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig, train_value

from tiny_cycle import SMALL, scalars
from training_runs import make_store

SPEC = InputSpec((("front", 16, 16),), state_dim=4, action_dim=3, chunk_length=10)
TQL = NetConfig(d_model=32, heads=2, trunk_layers=2, cnn_channels=(8, 16), critic="tql")


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randint(0, 256, (n, 16, 16, 3), dtype=torch.uint8, generator=g)],
            torch.randn(n, 4, generator=g), torch.randn(n, 384, generator=g), torch.randint(0, 201, (n,), generator=g))


def test_one_token_per_state_scalar_plus_value_instruction_and_image_tokens():
    critic = value_network(SPEC, TQL)
    assert isinstance(critic, TQLCritic)
    # [VALUE] + 4 state scalars + instruction + 2x2 cells of the 16x16 camera (pooled 2x, two stride-2 convs).
    assert critic.tokens == 1 + 4 + 1 + 4
    assert critic.target_entropy.tolist() == [[pytest.approx(0.8 * math.log(10))] * 2] * 2
    images, state, task, _ = batch()
    logits, entropy = critic.attend(images, state, task)
    assert logits.shape == (6, 201) and entropy.shape == (2, 2)
    assert torch.all(entropy > 0) and torch.all(entropy <= math.log(critic.tokens) + 1e-5)


def test_losses_and_logged_scalars_with_and_without_control():
    images, state, task, target = batch()
    loss, logged = value_network(SPEC, TQL).loss(images, state, task, target)
    assert set(logged) == {"cross_entropy"} | {f"{kind}/layer{layer}_{group}" for kind in
                                               ("attention_entropy", "temperature")
                                               for layer in (0, 1) for group in ("value", "other")}
    # At tau = 1: loss = CE - mean(H) + mean(H - target).
    assert loss.item() == pytest.approx(logged["cross_entropy"] - 0.8 * math.log(10), abs=1e-4)
    plain = value_network(SPEC, NetConfig(**{**vars(TQL), "entropy": EntropyConfig(control=False)}))
    assert not hasattr(plain, "log_temperature")
    loss, logged = plain.loss(images, state, task, target)
    assert loss.item() == pytest.approx(logged["cross_entropy"]) and "temperature/layer0_value" not in logged


@pytest.mark.parametrize("target, direction", [(100.0, 1), (0.0, -1)])
def test_temperature_rises_while_entropy_is_below_target_and_falls_above(target, direction):
    cfg = NetConfig(**{**vars(TQL), "entropy": EntropyConfig(targets=((target, target),) * 2)})
    critic = value_network(SPEC, cfg)
    opt = torch.optim.AdamW(critic.optimizer_groups(1e-3, 0.0))
    critic.loss(*batch())[0].backward()
    opt.step()
    assert torch.all(torch.sign(critic.log_temperature.detach()) == direction)


def test_entropy_targets_must_be_one_pair_per_layer():
    with pytest.raises(ValueError, match=r"one \(value_row, other_rows\) pair per layer \(2 layers\)"):
        NetConfig(critic="tql", entropy=EntropyConfig(targets=((3.0, 3.0),)))
    with pytest.raises(ValueError, match="critic 'mlp' must be one of"):
        NetConfig(critic="mlp")


def test_checkpoint_round_trip_keeps_the_critic_and_its_control(tmp_path):
    cfg = NetConfig(**{**vars(TQL), "entropy": EntropyConfig(targets=((2.0, 1.5), (1.0, 0.5)))})
    critic = value_network(SPEC, cfg)
    with torch.no_grad():
        critic.log_temperature.fill_(0.3)
    path = save_checkpoint(tmp_path / "v.safetensors", critic, {"note": 1})
    loaded, info = load_checkpoint(path, "value")
    assert isinstance(loaded, TQLCritic) and loaded.cfg == cfg and info == {"note": 1}
    assert loaded.target_entropy.tolist() == [[2.0, 1.5], [1.0, 0.5]]
    images, state, task, _ = batch()
    assert torch.equal(loaded.value(images, state, task), critic.value(images, state, task))
    assert torch.equal(loaded.log_temperature, critic.log_temperature)


def test_training_logs_entropy_and_temperature_per_layer(tmp_path):
    data = load_dataset(make_store(tmp_path / "store"), DatasetConfig())
    t = prepare(data, data.stats(DatasetConfig()), np.zeros((len(data.tasks), 384), np.float32))
    returns, _ = normalized_returns([e.length for e in data.episodes], [e.task_index for e in data.episodes],
                                    [e.success for e in data.episodes])
    cfg = TrainConfig(steps=12, batch_size=8, progress=False, threads=1, net=TQL)
    critic, metrics = train_value(t, returns, SPEC, cfg, log_dir=tmp_path / "tb")
    assert isinstance(critic, TQLCritic)
    for layer in (0, 1):
        assert 0 < metrics["scalars"][f"attention_entropy/layer{layer}_value"] <= math.log(critic.tokens)
        assert metrics["scalars"][f"temperature/layer{layer}_other"] > 0
    logged = scalars(tmp_path / "tb")
    assert {"value/attention_entropy/layer1_other", "value/temperature/layer0_value",
            "value/cross_entropy"} <= set(logged)


def test_pretrain_and_a_round_carry_the_tql_critic_into_the_fold_models(tmp_path):
    store = make_store(tmp_path / "store")
    policy = PolicyTrainConfig(steps=2, batch_size=8, progress=False, threads=1, net=SMALL)
    value = TrainConfig(steps=4, batch_size=8, progress=False, threads=1, net=TQL)
    cfg = CycleConfig(model_id="tql", value=value, policy=policy)
    pretrained = pretrain(store, tmp_path / "work", cfg)
    assert "attention_entropy/layer0_value" in pretrained.metrics["value"]["scalars"]
    # The round's config names the default critic; the folds still start from, and stay, the TQL V_pre.
    round_cfg = CycleConfig(model_id="tql", policy=policy,
                            value=TrainConfig(steps=2, batch_size=8, progress=False, threads=1))
    round1 = improve(store, tmp_path / "work", pretrained, round_cfg)
    for path in round1.value_checkpoints:
        fold, _ = load_checkpoint(path, "value")
        assert isinstance(fold, TQLCritic) and fold.cfg == TQL
    assert "temperature/layer1_other" in round1.metrics["value_folds"][0]["scalars"]
    assert np.isfinite(round1.metrics["value_explained_variance_out_of_fold"])
