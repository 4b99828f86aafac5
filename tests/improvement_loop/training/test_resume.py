"""A training command killed with SIGKILL and rerun ends with the weights of an uninterrupted run.

The run is killed mid-way through the policy stage, after the value stage has
saved its final state and the policy at least one periodic state. The rerun
continues both from there: model, optimizer, schedule and step come from the
saved state and every step's randomness from (seed, step), so it is bitwise the
uninterrupted run; the test allows 1e-6.
"""
import json
import subprocess
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from robot_runtime.improvement_loop.data.batches import Tensors
from robot_runtime.improvement_loop.models.layers import InputSpec, NetConfig
from robot_runtime.improvement_loop.training.resume import StaleStateError, state_path
from robot_runtime.improvement_loop.training.train import TrainConfig, train_value

from training_runs import command, difference, env, make_store, run, work_dirs

VALUE_STEPS, POLICY_STEPS, EVERY = 30, 40, 5


def saved_step(path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except (FileNotFoundError, OSError):
        return 0


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    store = make_store(tmp_path / "store")
    whole, killed = work_dirs(tmp_path, "whole", "killed")
    run(command(store, whole, VALUE_STEPS, POLICY_STEPS, "--checkpoint-every", str(EVERY)))
    assert not (whole / "pretrain" / "training_state").exists()          # removed once the stage finished

    states = killed / "pretrain" / "training_state"
    child = subprocess.Popen(command(store, killed, VALUE_STEPS, POLICY_STEPS, "--checkpoint-every", str(EVERY)),
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while saved_step(state_path(states, "policy")) < EVERY and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()
    child.wait()
    at_kill = saved_step(state_path(states, "policy"))
    assert child.returncode == -9 and EVERY <= at_kill < POLICY_STEPS, "the run was not killed mid-policy"
    assert saved_step(state_path(states, "value")) == VALUE_STEPS
    assert not (killed / "pretrain" / "result.json").exists()

    log = run(command(store, killed, VALUE_STEPS, POLICY_STEPS, "--checkpoint-every", str(EVERY)))
    assert f"value: resuming at step {VALUE_STEPS} of {VALUE_STEPS}" in log
    assert "policy: resuming at step" in log
    for name in ("value", "policy"):
        worst, _ = difference(whole / "pretrain" / f"{name}.safetensors", killed / "pretrain" / f"{name}.safetensors")
        assert worst <= 1e-6, f"{name}: max abs difference {worst:.2e} after resuming"
    metrics = json.loads((killed / "pretrain" / "result.json").read_text())["metrics"]
    assert metrics["policy"]["resumed_from_step"] >= at_kill
    assert metrics["policy"]["loss_first"] == json.loads((whole / "pretrain" / "result.json").read_text())[
        "metrics"]["policy"]["loss_first"]                          # the loss history came back with the state


def tiny_rows(n: int, seed: int) -> tuple[Tensors, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = Tensors([], rng.standard_normal((n, 3)).astype(np.float32), np.zeros((n, 2, 1), np.float32),
                np.ones((n, 2), np.float32), np.zeros(n, np.int64), torch.zeros(1, 384))
    return t, -rng.random(n)


def test_a_state_from_other_data_or_settings_is_refused(tmp_path):
    spec = InputSpec((), 3, 1, 2)
    cfg = TrainConfig(steps=4, batch_size=8, progress=False, checkpoint_every=2,
                      net=NetConfig(d_model=16, heads=2, trunk_layers=1))
    t, returns = tiny_rows(20, seed=0)
    train_value(t, returns, spec, cfg, resume_dir=tmp_path)
    assert saved_step(state_path(tmp_path, "value")) == 4
    _, metrics = train_value(t, returns, spec, cfg, resume_dir=tmp_path)       # same run: nothing left to do
    assert metrics["resumed_from_step"] == 4
    other_t, other_returns = tiny_rows(20, seed=1)
    with pytest.raises(StaleStateError, match="delete it to train from scratch"):
        train_value(other_t, other_returns, spec, cfg, resume_dir=tmp_path)
    with pytest.raises(StaleStateError):
        train_value(t, returns, spec, replace(cfg, lr=1e-3), resume_dir=tmp_path)
