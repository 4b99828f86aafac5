"""A small fleet for the daemon's tests: recorded MetaWorld reach episodes (state only), a catalog, release
keys, hand-built reference bundles (a reach controller that succeeds, a constant one that never does),
and daemon configs written as YAML."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import yaml

from robot_runtime.bundle import Manifest, Normalization, write_bundle
from robot_runtime.episode import EpisodeStore
from robot_runtime.fleet.keys import create_release_key
from robot_runtime.fleet.protocol import content_sha256, describe_episode
from robot_runtime.improvement_loop.fleet.catalog import Catalog, CatalogRow, row_for
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES, MetaWorldRobot, SimConfig, instruction_for
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator
from robot_runtime.sim.rollout import run_episode

from bundle_factory import reference_graph

TASK = "reach-v3"


def record_episodes(store_root: Path, count: int, first_seed: int = 0, max_steps: int = 40) -> list[str]:
    """`count` operator demonstrations of reach on layouts first_seed.. (real MetaWorld, no cameras)."""
    store = EpisodeStore(store_root)
    robot = MetaWorldRobot(SimConfig(env_name=TASK, max_steps=max_steps, render=False))
    operator = ScriptedOperator(TASK, OperatorConfig(mode="demonstrate"))
    return [run_episode(robot, first_seed + i, operator=operator, store=store).episode_id for i in range(count)]


def catalog_store(catalog_path: Path, store_root: Path, robot: str = "r1") -> None:
    """Catalog every stored episode not yet cataloged, as the ingest server would on receipt."""
    catalog, store = Catalog(catalog_path), EpisodeStore(store_root)
    for episode_id in sorted(set(store.episode_ids()) - catalog.ids()):
        episode = store.open(episode_id)
        catalog.add(row_for(episode, robot, content_sha256(describe_episode(episode.path)), time.time()))
    catalog.close()


def fleet_episode(catalog_path: Path, episode_id: str, version: str, robot: str, success: bool,
                  interventions: int = 0, steps: int = 50, at: float | None = None) -> None:
    """A catalog row for an episode a robot ran with `version` (what the canary reads)."""
    at = time.time() if at is None else at
    catalog = Catalog(catalog_path)
    catalog.add(CatalogRow(episode_id, robot, instruction_for(TASK), version, "success" if success else "failure",
                           None, steps, interventions, 1, at, at, "0" * 64))
    catalog.close()


def release_key(directory: Path) -> Path:
    _, secret = create_release_key(directory, "ws")
    return secret


def reach_bundle(path: Path, gain: float, version: str) -> Path:
    """actions = tanh(gain * (goal - hand)): gain 10 reaches every goal, gain 0 stands still."""
    s, a = len(STATE_NAMES), len(ACTION_NAMES)
    weights = np.zeros((s, a), np.float32)
    for k, axis in enumerate("xyz"):
        weights[STATE_NAMES.index(f"goal_{axis}"), k] = gain
        weights[STATE_NAMES.index(f"hand_{axis}"), k] = -gain
    manifest = Manifest(model_id="ref", version=version, cameras=[], state_names=list(STATE_NAMES),
                        action_names=list(ACTION_NAMES), action_low=[-1.0] * a, action_high=[1.0] * a,
                        chunk_length=4, control_rate_hz=20.0, tasks=[instruction_for(TASK)],
                        normalization=Normalization([0.0] * s, [1.0] * s, [0.0] * a, [1.0] * a),
                        conditioning_mode="none")
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(reference_graph(manifest, weights, np.zeros(a, np.float32)), Path(tmp) / "policy.onnx")
        return write_bundle(path, manifest, {"policy.onnx": Path(tmp) / "policy.onnx"}).path


def write_config(path: Path, root: Path, **sections) -> Path:
    """A daemon YAML for a world under `root`; `sections` override top-level keys or merge into sections."""
    data = {
        "store": str(root / "store"), "catalog": str(root / "catalog.sqlite"), "work": str(root / "daemon"),
        "release_key": str(root / "keys" / "ws.release.pem"),
        "fleet": {"robots": ["r1", "r2"], "canary": ["r1"]},
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        "min_new_episodes": 1,
        "training": {"pretrained": str(root / "train" / "pretrain" / "result.json"), "model_id": "mw",
                     "value_steps": 4, "policy_steps": 4, "threads": 1},
        "gate": {"tasks": [TASK], "episodes": 2, "max_steps": 20, "rule": "not_worse", "margin": 1.0,
                 "first_release_min_success": 0.0, "observations": 8},
        "canary": {"episodes": 2, "poll_seconds": 0.2, "timeout_hours": 1.0},
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path.write_text(yaml.safe_dump(data))
    return path
