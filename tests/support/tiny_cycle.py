"""A tiny RECAP cycle for tests: synthetic point-to-goal episodes and networks that train in seconds."""
import numpy as np

from robot_runtime.episode import EpisodeLayout, EpisodeMetadata, Step
from robot_runtime.improvement_loop.cycle.rounds import CycleConfig
from robot_runtime.improvement_loop.models.layers import NetConfig
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig

LAYOUT = EpisodeLayout({"front": (16, 16)}, ("x", "y", "goal_x", "goal_y"), ("vx", "vy", "grip"))
SMALL = NetConfig(d_model=32, heads=2, trunk_layers=1, head_layers=1, cnn_channels=(8, 16))
TASKS = ("push the block to the goal", "reach the goal")


def config(beta=1.0):
    value = TrainConfig(steps=4, batch_size=8, progress=False, net=SMALL)
    policy = PolicyTrainConfig(steps=4, batch_size=8, progress=False, net=SMALL)
    return CycleConfig(model_id="tiny", value=value, policy=policy, beta=beta, method="recap")


def write_episode(store, index, outcome, steps=20, stage="demo", layout=LAYOUT, interventions=False,
                  calibration: dict | None = None):
    """A point moving toward a goal; the camera sees a bright square at the point. `calibration`: camera ->
    its calibration as the recorder stores it (asdict of a CameraCalibration)."""
    rng = np.random.default_rng(index)
    meta = EpisodeMetadata(task=TASKS[index % 2], robot_id="sim", control_rate_hz=10.0, episode_id=f"ep{index:03d}",
                           policy_version="" if stage == "demo" else "r0", extra={"stage": stage})
    writer = store.writer(layout, meta)
    pos, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
    for t in range(steps):
        action = np.append(np.clip(goal - pos, -0.2, 0.2) * 5, 1.0).astype(np.float32)
        if stage != "demo" and t < steps // 2:
            action[:2] += rng.normal(0, 0.5, 2)
        image = np.zeros((16, 16, 3), np.uint8)
        row, col = ((pos + 1) * 7.5).astype(int)
        image[max(0, row - 1):row + 2, max(0, col - 1):col + 2] = 255
        writer.append(Step(t * 0.1, {"front": image} if layout.cameras else {}, np.concatenate([pos, goal]).astype(
            np.float32), action, intervention=interventions and t >= steps // 2))
        pos = pos + 0.04 * action[:2]
    writer.commit(outcome, extra={"calibration": calibration} if calibration else None)


def scalars(log_dir) -> dict[str, float]:
    """Last value of every scalar in a TensorBoard directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events in sorted(log_dir.glob("events.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        found.update({tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]})
    return found
