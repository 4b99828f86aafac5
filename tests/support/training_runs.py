"""Helpers for tests that run `robot-runtime-train` in subprocesses (torchrun, kill -9 and resume)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.data.text import TextEmbedder

from tiny_cycle import TASKS, write_episode

TRAIN = str(Path(sys.executable).with_name("robot-runtime-train"))


def make_store(root: Path, episodes: int = 6) -> Path:
    store = EpisodeStore(root)
    for i in range(episodes):
        write_episode(store, i, "failure" if i % 3 == 0 else "success")
    return root


def work_dirs(parent: Path, *names: str) -> list[Path]:
    """Work directories whose instruction cache is already filled, so no run loads the sentence encoder."""
    first = parent / names[0]
    TextEmbedder(first / "text_cache").embed(list(TASKS))
    for name in names[1:]:
        shutil.copytree(first / "text_cache", parent / name / "text_cache")
    return [parent / name for name in names]


def command(store: Path, work: Path, value_steps: int, policy_steps: int, *extra: str) -> list[str]:
    return [TRAIN, "--store", str(store), "--work", str(work), "--stage", "pretrain", "--model-id", "tiny",
            "--value-steps", str(value_steps), "--policy-steps", str(policy_steps), "--threads", "1", *extra]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str], timeout: float = 120) -> str:
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stderr[-3000:]}"
    return done.stderr


def difference(a: Path, b: Path) -> tuple[float, float]:
    """(max abs difference, relative L2 difference) over all weights of two checkpoints of one network."""
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    worst = max((x[k] - y[k]).abs().max().item() for k in x)
    l2 = torch.sqrt(sum(((x[k] - y[k]) ** 2).sum() for k in x) / sum((x[k] ** 2).sum() for k in x)).item()
    return worst, l2
