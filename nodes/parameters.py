"""Declaring ROS parameters with descriptors in one line each: description, range, choices, checks.

A scalar's range goes into the descriptor (FloatingPointRange / IntegerRange), where rclpy enforces it
on every set and `ros2 param describe` shows it. Choices (enumerated parameters) are listed in the
description; they, the element range of a numeric array and any `check` are enforced at declaration
and on every set. A bad value in a params file stops the node at start-up with the node, the
parameter and what is allowed, instead of running with a setting nobody chose.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException

INT_MAX = 2**31 - 1  # the largest count or seed any of our parameters needs


def declare(node, name: str, default, description: str, read_only: bool = False, *,
            low: float | None = None, high: float | None = None, choices: Sequence[str] = (),
            check: Callable[[object], str | None] | None = None):
    """Declare a parameter and return its current value.

    `low`/`high` bound a number (or every element of a number array), `choices` an enumerated string,
    `check(value)` returns what is wrong with a value, or None."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    checks = []
    if choices:
        descriptor.description += f" (one of: {' | '.join(choices)})"
        checks.append(lambda v: None if v in choices else f"'{v}' is not one of {' | '.join(choices)}")
    if low is not None and high is not None:
        if isinstance(default, bool) or not isinstance(default, (int, float, list)):
            raise TypeError(f"parameter '{name}': a range needs a number or number array")
        if isinstance(default, list):
            descriptor.description += f" (each in [{low}, {high}])"
            checks.append(lambda v: next((f"element {x} is outside [{low}, {high}]" for x in v
                                          if not (math.isfinite(x) and low <= x <= high)), None))
        elif isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high),
                                                                  step=0.0)]
    if check:
        checks.append(check)
    try:
        node.declare_parameter(name, default, descriptor)
    except InvalidParameterValueException as err:
        raise SystemExit(f"{node.get_fully_qualified_name()}: parameter '{name}': {err}; fix it in the params "
                         f"file or on the command line") from None
    value = node.get_parameter(name).value
    if checks:
        problem = _problem(checks, value)
        if problem:
            raise SystemExit(f"{node.get_fully_qualified_name()}: parameter '{name}': {problem}; fix it in the "
                             f"params file or on the command line")
        _checked(node)[name] = checks
    return value


def _problem(checks, value) -> str | None:
    return next((p for p in (c(value) for c in checks) if p), None)


def _checked(node) -> dict:
    """The node's checks by parameter name; the first call registers the callback that applies them."""
    if not hasattr(node, "_parameter_checks"):
        node._parameter_checks = {}

        def validate(params) -> SetParametersResult:
            for p in params:
                problem = _problem(node._parameter_checks.get(p.name, ()), p.value)
                if problem:
                    return SetParametersResult(successful=False, reason=f"{p.name}: {problem}")
            return SetParametersResult(successful=True)

        node.add_on_set_parameters_callback(validate)
    return node._parameter_checks


def _workspace_problem(entries) -> str | None:
    from robot_runtime.runtime.safety import WorkspaceLimit

    try:
        [WorkspaceLimit.parse(e) for e in entries if e]
    except ValueError as err:
        return str(err)
    return None


def declare_safety(node) -> None:
    """The safety filter's parameters, shared by policy_node and teleop_mux."""
    declare(node, "max_delta", [0.0], "per-tick change limit per action; [0.0] = none", low=0.0, high=1e6)
    declare(node, "hold_zero", [""], "actions that hold at zero (deltas, velocities); others hold last value")
    declare(node, "workspace", [""], "limits as state_name:action_name:low:high", check=_workspace_problem)


def safety_filter(node, action_names, action_low, action_high, state_names):
    """A SafetyFilter from the node's safety parameters and the given action limits."""
    from robot_runtime.runtime.safety import SafetyConfig, SafetyFilter, WorkspaceLimit

    max_delta = list(node.get_parameter("max_delta").value)
    return SafetyFilter(SafetyConfig(
        action_names=list(action_names), action_low=list(action_low), action_high=list(action_high),
        max_delta=max_delta if any(d > 0 for d in max_delta) else None,
        hold_zero=[n for n in node.get_parameter("hold_zero").value if n],
        workspace=[WorkspaceLimit.parse(e) for e in node.get_parameter("workspace").value if e]),
        list(state_names))


def apply_realtime(node) -> None:
    """The node's `realtime` / `realtime_priority` parameters: real-time scheduling for its control path and
    its middleware threads (runtime/realtime.py), logged with what was granted and why not, when not."""
    from robot_runtime.runtime.realtime import POLICIES, request_realtime_for_process

    policy = declare(node, "realtime", "off", "scheduling of the control path: SCHED_FIFO, SCHED_RR or the "
                     "default scheduler (needs CAP_SYS_NICE or an rtprio limit)", read_only=True, choices=POLICIES)
    priority = declare(node, "realtime_priority", 50, "real-time priority for fifo/rr", read_only=True, low=1, high=99)
    if policy == "off":
        return
    got = request_realtime_for_process(policy, priority)
    log = node.get_logger()
    (log.warning if got.note else log.info)(f"scheduling: {got.policy} {got.priority}"
                                            + (f" ({got.note})" if got.note else ""))

