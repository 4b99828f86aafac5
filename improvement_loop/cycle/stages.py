"""A RECAP round split into four separately run steps, for the daemon's state machine: value -> advantages ->
policy -> export (`robot-runtime-train --stage value|advantages|policy|export`).

Each step reads what the step before it left in the round's directory and leaves one JSON file (written
atomically, last) saying it is done; run again after it is done, it returns that file without training.
Killed mid-step, a rerun resumes its training from the stage's training_state (resume.py). Together they
compute what `--stage round` does (rounds.improve) with the same rows and labels; the intermediate values
and indicators are kept as .npy files beside the checkpoints.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.advantage import cross_fitted_values, label_steps, value_metrics
from robot_runtime.improvement_loop.cycle.baselines import baseline_rows
from robot_runtime.improvement_loop.cycle.rounds import (
    TRAINING_STATE,
    CycleConfig,
    CycleResult,
    data_metrics,
    finish_stage,
    load_round,
    result_path,
    shared_value_rows,
    stage_critic,
    stage_dir,
    train_conditioned,
    value_inits,
)
from robot_runtime.improvement_loop.cycle.rounds import _skip_scalars as _skip_scalars
from robot_runtime.improvement_loop.models.checkpoint import load_checkpoint, save_checkpoint
from robot_runtime.improvement_loop.training.distributed import barrier, world
from robot_runtime.improvement_loop.training.train import train_policy

STEPS = ("value", "advantages", "policy", "export")
_DONE = {"value": "value.json", "advantages": "advantages.json", "policy": "policy.json"}


def done_path(work_dir: str | os.PathLike, round_index: int, step: str) -> Path:
    """The file that says `step` of the round is done (export's is the round's result.json)."""
    if step not in STEPS:
        raise ValueError(f"round step {step!r}: one of {STEPS}")
    return result_path(work_dir, round_index) if step == "export" else stage_dir(work_dir, round_index) / _DONE[step]


def run_step(step: str, store_root, work_dir, pretrained, cfg: CycleConfig, round_index: int) -> dict:
    """Run `step` of round `round_index` unless it is done; return its done file's contents."""
    done = done_path(work_dir, round_index, step)
    if not done.is_file():
        for before in STEPS[:STEPS.index(step)]:
            if not done_path(work_dir, round_index, before).is_file():
                raise FileNotFoundError(f"{done_path(work_dir, round_index, before)}: round {round_index} step "
                                        f"'{before}' has not run; run it before '{step}'")
        if round_index < 1:
            raise ValueError(f"round_index must be >= 1 (0 is the pretrain stage), got {round_index}")
        pretrained = pretrained if isinstance(pretrained, CycleResult) else CycleResult.load(pretrained)
        _STEPS[step](Path(store_root), Path(work_dir), pretrained, cfg, round_index, done)
        barrier()
    return json.loads(done.read_text())


def _value(store, work, pretrained, cfg, round_index, done) -> None:
    start = time.perf_counter()
    out = stage_dir(work, round_index)
    data, _, tensors, returns = load_round(store, work, pretrained, cfg)
    inits = value_inits(work, pretrained, cfg, round_index)
    extra = shared_value_rows(store, work, pretrained, cfg)
    values, members, models, fold_metrics = cross_fitted_values(tensors, data, returns, inits, cfg.value, cfg.labels,
                                                                extra, out / "tb", out / TRAINING_STATE)
    if world().is_main:
        _, info = load_checkpoint(pretrained.value_checkpoints[0], "value")
        paths = [str(save_checkpoint(out / f"values_step_{k}.safetensors", m, info)) for k, m in enumerate(models)]
        np.save(out / "values.npy", values)
        write_json_atomic(done, {"checkpoints": paths, "seconds": round(time.perf_counter() - start, 2),
                                 "metrics": value_metrics(returns, values, members, fold_metrics, inits, cfg.labels,
                                                          extra)})


def _advantages(store, work, pretrained, cfg, round_index, done) -> None:
    out = stage_dir(work, round_index)
    data, _, _, returns = load_round(store, work, pretrained, cfg)
    values = np.load(out / "values.npy")
    if len(values) != len(returns):
        raise ValueError(f"{out / 'values.npy'}: {len(values)} values for {len(returns)} steps: the store changed "
                         "since the value step; rerun the round from its value step on the same episodes")
    advantages, labels, metrics = label_steps(data, returns, values, cfg.labels)
    if world().is_main:
        np.save(out / "indicators.npy", labels)
        np.save(out / "advantages.npy", advantages)
        write_json_atomic(done, {"metrics": metrics})


def _policy(store, work, pretrained, cfg, round_index, done) -> None:
    start = time.perf_counter()
    out = stage_dir(work, round_index)
    data, _, tensors, _ = load_round(store, work, pretrained, cfg)
    policy, info = load_checkpoint(pretrained.policy_checkpoint, "policy")
    indicators = np.load(out / "indicators.npy")
    advantages = json.loads(done_path(work, round_index, "advantages").read_text())["metrics"]
    scalars = {**_skip_scalars(data), "data/positive_fraction": advantages["positive_fraction"]}
    if cfg.method == "recap":
        policy, metrics = train_conditioned(data, tensors, indicators, policy, cfg, out, scalars)
    else:                               # a baseline on the same rows (baselines.py), as the round itself
        rows, weights, selection = baseline_rows(cfg.method, data.success, data.intervention,
                                                 np.load(out / "advantages.npy"), indicators, data.task_index,
                                                 data.mixture(cfg.mixture))
        policy, metrics = train_policy(tensors if rows is None else tensors.subset(rows), None, policy.spec,
                                       cfg.policy, init=policy, log_dir=out / "tb", extra_scalars=scalars,
                                       sample_weights=weights, resume_dir=out / TRAINING_STATE)
        metrics = {**metrics, "method": cfg.method, "selection": selection}
    if world().is_main:
        path = save_checkpoint(out / "policy_step.safetensors", policy, info)
        write_json_atomic(done, {"checkpoint": str(path), "metrics": metrics,
                                 "seconds": round(time.perf_counter() - start, 2)})


def _export(store, work, pretrained, cfg, round_index, done) -> None:
    data, stats, tensors, returns = load_round(store, work, pretrained, cfg)
    read = {step: json.loads(done_path(work, round_index, step).read_text()) for step in STEPS[:3]}
    policy, _ = load_checkpoint(read["policy"]["checkpoint"], "policy")
    values = [load_checkpoint(path, "value")[0] for path in read["value"]["checkpoints"]]
    metrics = {**data_metrics(data), **read["value"]["metrics"], **read["advantages"]["metrics"],
               "method": cfg.method, "policy": read["policy"]["metrics"]}
    seconds = read["value"]["seconds"] + read["policy"]["seconds"]
    critic = stage_critic(tensors, returns, policy.spec, cfg, stage_dir(work, round_index), metrics)
    finish_stage(stage_dir(work, round_index), work, data, stats, policy, values, tensors.task_table.numpy(),
                 "advantage" if cfg.method == "recap" else "none", round_index, pretrained.version, metrics,
                 time.perf_counter() - seconds, cfg, critic)


_STEPS = {"value": _value, "advantages": _advantages, "policy": _policy, "export": _export}
