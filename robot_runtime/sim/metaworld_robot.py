"""The simulated robot: a MetaWorld task in MuJoCo with fast headless cameras.

ROS-free so the sim node, the benchmark and the tests drive the same code. The
robot exposes what a real arm would (named proprioception, camera images, a
Cartesian delta + gripper command) plus, as privileged state, the object and goal
poses that a real cell would get from perception; a bundle says which state
entries it reads.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

# Headless rendering; must be set before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

# Instruction text per MetaWorld task: what an operator would type.
TASK_INSTRUCTIONS = {
    "reach-v3": "reach the goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "door-open-v3": "open the door",
    "window-open-v3": "slide the window open",
    "plate-slide-v3": "slide the plate into the goal",
    "coffee-push-v3": "push the mug under the coffee machine",
}

STATE_NAMES = (
    "hand_x", "hand_y", "hand_z", "gripper_opening",
    "obj_x", "obj_y", "obj_z", "obj_qw", "obj_qx", "obj_qy", "obj_qz",
    "obj2_x", "obj2_y", "obj2_z", "obj2_qw", "obj2_qx", "obj2_qy", "obj2_qz",
    "goal_x", "goal_y", "goal_z",
)
ACTION_NAMES = ("ee_dx", "ee_dy", "ee_dz", "gripper")
ACTION_LOW = (-1.0, -1.0, -1.0, -1.0)
ACTION_HIGH = (1.0, 1.0, 1.0, 1.0)
# Cameras whose MetaWorld mounting renders them upside down.
ROTATED_CAMERAS = ("corner", "corner2", "corner3", "corner4")


class UnknownTaskError(ValueError):
    pass


def instruction_for(env_name: str) -> str:
    """The operator's sentence for a task; a v3 task without one in TASK_INSTRUCTIONS gets its name in words
    ('coffee-pull-v3' -> 'coffee pull'), so every task with a scripted expert can be run."""
    if env_name in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[env_name]
    from metaworld.policies import ENV_POLICY_MAP

    if env_name in ENV_POLICY_MAP:
        return env_name.removesuffix("-v3").replace("-", " ")
    raise UnknownTaskError(f"no instruction for MetaWorld task '{env_name}'; known: {sorted(TASK_INSTRUCTIONS)} "
                           "and every task of metaworld.policies.ENV_POLICY_MAP")


def full_observation(state: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Rebuild MetaWorld's 39-d observation [current 18, previous 18, goal 3] from named state rows."""
    return np.concatenate([state[:18], previous[:18], state[18:21]]).astype(np.float64)


@dataclass
class SimConfig:
    env_name: str = "push-v3"
    cameras: tuple[str, ...] = ("corner", "gripperPOV")
    image_size: int = 96
    max_steps: int = 150
    render: bool = True


@dataclass
class SimObservation:
    state: np.ndarray  # float32 [len(STATE_NAMES)]
    images: dict[str, np.ndarray]  # camera -> uint8 [H, W, 3]


class MetaWorldRobot:
    """One MetaWorld task; `reset(seed)` gives the same object/goal layout for the same seed."""

    def __init__(self, config: SimConfig):
        import metaworld
        import mujoco

        self.instruction = instruction_for(config.env_name)  # fails early on an unknown task
        self.config = config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            benchmark = metaworld.MT1(config.env_name, seed=0)
            self._env = benchmark.train_classes[config.env_name]()
            self._env.set_task(benchmark.train_tasks[0])
        # Draw a fresh object/goal layout from the env's own RNG, seeded per episode.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.max_path_length = max(config.max_steps + 1, self._env.max_path_length)
        self.steps = 0
        self.success = False
        self.reward = 0.0   # MetaWorld's shaped reward of the last step (0-10, 10 at the goal): its own progress
        self._renderer = None
        if config.render:
            model = self._env.model
            known = {model.camera(i).name for i in range(model.ncam)}
            unknown = [c for c in config.cameras if c not in known]
            if unknown:
                raise ValueError(f"unknown camera(s) {unknown}; this scene has {sorted(known)}")
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, config.image_size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, config.image_size)
            model.vis.quality.offsamples = 0
            self._mujoco = mujoco
            self._renderer = mujoco.Renderer(model, config.image_size, config.image_size)

    def _render(self) -> dict[str, np.ndarray]:
        if self._renderer is None:
            return {}
        images = {}
        flags = self._mujoco.mjtRndFlag
        for camera in self.config.cameras:
            self._renderer.update_scene(self._env.data, camera=camera)
            self._renderer.scene.flags[flags.mjRND_SHADOW] = 0
            self._renderer.scene.flags[flags.mjRND_REFLECTION] = 0
            image = self._renderer.render()
            if camera in ROTATED_CAMERAS:
                image = image[::-1, ::-1]
            images[camera] = np.ascontiguousarray(image)
        return images

    def _observation(self, obs39: np.ndarray) -> SimObservation:
        state = np.concatenate([obs39[:18], obs39[36:39]]).astype(np.float32)
        return SimObservation(state=state, images=self._render())

    def reset(self, seed: int) -> SimObservation:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._env.seed(int(seed))
            obs, _ = self._env.reset()
        self.steps = 0
        self.success = False
        self.reward = 0.0
        return self._observation(obs)

    def step(self, action: np.ndarray) -> SimObservation:
        action = np.clip(np.asarray(action, dtype=np.float64), ACTION_LOW, ACTION_HIGH)
        if action.shape != (len(ACTION_NAMES),) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {len(ACTION_NAMES)} finite numbers, got {action!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, reward, _, _, info = self._env.step(action)
        self.reward = float(reward)
        self.steps += 1
        self.success = self.success or bool(info["success"])
        return self._observation(obs)

    @property
    def timed_out(self) -> bool:
        return self.steps >= self.config.max_steps

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()
