"""Teleop devices through one configurable mapping: gamepad, 6-DoF mouse, leader arm.

Every device becomes the same thing: a deadman state and a vector of named
actions. A mapping says, per action, which device inputs feed it:

    ee_dx:   "axes[1] * 0.8"                       gamepad stick (sensor_msgs/Joy)
    gripper: "buttons[0] * 1.0 + buttons[1] * -1.0" two buttons, open/close
    ee_dz:   "linear.z * 2.0"                      6-DoF mouse (geometry_msgs/Twist)
    joint_3: "joint:shoulder_lift"                 leader arm (sensor_msgs/JointState)
    ...      "+ 0.1"                               a constant offset

and the deadman is `buttons[i]` of a Joy message (a gamepad shoulder button,
the 6-DoF mouse's button, a leader arm's foot pedal wired as a Joy), or
`always` for a device that is only powered while the operator holds it.
Inputs inside `deadband` read as zero so a resting stick does not creep.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

DEVICES = ("joy", "twist", "joint_state")
_TERM = re.compile(r"^\s*(?:(?P<source>axes\[\d+\]|buttons\[\d+\]|(?:linear|angular)\.[xyz]|joint:[\w./-]+)"
                   r"\s*(?:\*\s*(?P<scale>[-+]?[\d.]+(?:e[-+]?\d+)?))?|(?P<const>[-+]?[\d.]+(?:e[-+]?\d+)?))\s*$")


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    source: str | None  # None: a constant
    scale: float


def parse_expression(action: str, text: str) -> list[Term]:
    """'axes[1] * 0.5 + buttons[0] * -1 + 0.1' -> terms; raises MappingError naming the action."""
    terms = []
    for part in re.split(r"\s+\+\s+", text.strip()):
        match = _TERM.match(part)
        if not match:
            raise MappingError(f"mapping for '{action}': cannot read '{part}' in '{text}' "
                               "(use axes[i], buttons[i], linear.x, angular.z, joint:<name>, * scale, + constant)")
        if match["const"] is not None:
            terms.append(Term(None, float(match["const"])))
        else:
            terms.append(Term(match["source"], float(match["scale"]) if match["scale"] else 1.0))
    return terms


class TeleopDevice:
    """Latest device inputs -> (engaged, actions). Fed by the device node's callbacks."""

    def __init__(self, device: str, action_names: list[str], mapping: dict[str, str], deadman: str,
                 deadband: float = 0.05):
        if device not in DEVICES:
            raise MappingError(f"device '{device}' is not one of {DEVICES}")
        unknown = set(mapping) - set(action_names)
        if unknown:
            raise MappingError(f"mapping names unknown actions {sorted(unknown)}; actions are {action_names}")
        if deadman != "always" and not re.fullmatch(r"buttons\[\d+\]", deadman):
            raise MappingError(f"deadman '{deadman}' must be buttons[i] or always")
        self.device = device
        self.action_names = list(action_names)
        self.terms = {a: parse_expression(a, mapping[a]) for a in action_names if mapping.get(a)}
        self.deadman = deadman
        self.deadband = deadband
        self.inputs: dict[str, float] = {}
        self.buttons: list[int] = []

    def update_joy(self, axes, buttons) -> None:
        self.buttons = list(buttons)
        self.inputs.update({f"axes[{i}]": float(v) for i, v in enumerate(axes)})
        self.inputs.update({f"buttons[{i}]": float(v) for i, v in enumerate(buttons)})

    def update_twist(self, linear: tuple[float, float, float], angular: tuple[float, float, float]) -> None:
        for prefix, vector in (("linear", linear), ("angular", angular)):
            self.inputs.update({f"{prefix}.{axis}": float(v) for axis, v in zip("xyz", vector)})

    def update_joint_state(self, names, positions) -> None:
        self.inputs.update({f"joint:{n}": float(p) for n, p in zip(names, positions)})

    @property
    def engaged(self) -> bool:
        if self.deadman == "always":
            return bool(self.inputs)
        index = int(self.deadman[8:-1])
        return index < len(self.buttons) and self.buttons[index] > 0

    def actions(self) -> np.ndarray:
        """Actions from the latest inputs; an input not yet received raises MappingError."""
        out = np.zeros(len(self.action_names), np.float32)
        for i, name in enumerate(self.action_names):
            for term in self.terms.get(name, []):
                if term.source is None:
                    out[i] += term.scale
                    continue
                if term.source not in self.inputs:
                    raise MappingError(f"'{name}' reads {term.source}, which the {self.device} has not sent")
                value = self.inputs[term.source]
                if term.source.startswith(("axes", "linear", "angular")) and abs(value) < self.deadband:
                    value = 0.0
                out[i] += term.scale * value
        return out
