"""Scheduling for the control path on a busy computer: real-time priority where permitted, `nice` where not.

A robot's computer is never quiet (perception, planning, logging share it). Under Linux's default
scheduler a control thread waiting for a state message competes with every busy process for the
cores, so ticks slip whenever the machine is loaded. With SCHED_FIFO (or SCHED_RR) the control
thread, and the DDS threads created after it (threads inherit their creator's policy), run as soon
as they are runnable. It needs CAP_SYS_NICE or an rtprio limit (`/etc/security/limits.conf`,
`LimitRTPRIO=` in a systemd unit); where that is missing we fall back to a lower nice value, and
say which one we got. Work the control path waits for (inference, writing episodes) runs
`below_control`: still real-time, so busy processes cannot delay it (measured: at normal priority
under load it lagged into deadline misses and dropped frames), but below the control thread, which
preempts it whenever a tick is due. One-off heavy work (loading a bundle) goes back to the normal
scheduler with `normal_priority`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

POLICIES = ("fifo", "rr", "off")


@dataclass(frozen=True)
class Scheduling:
    """What the calling thread got, for logs and /diagnostics."""

    policy: str          # "fifo", "rr", "nice" or "default"
    priority: int        # real-time priority, or the nice value for "nice"
    note: str = ""       # why it is not what was asked for; "" when it is


def request_realtime(policy: str = "fifo", priority: int = 50, fallback_nice: int = -10) -> Scheduling:
    """Give the calling thread (and threads it creates later) real-time priority, or the best fallback."""
    if policy not in POLICIES:
        raise ValueError(f"scheduling policy '{policy}' is not one of {POLICIES}")
    if policy == "off":
        return Scheduling("default", 0)
    kind = os.SCHED_FIFO if policy == "fifo" else os.SCHED_RR
    low, high = os.sched_get_priority_min(kind), os.sched_get_priority_max(kind)
    if not low <= priority <= high:
        raise ValueError(f"real-time priority {priority} is outside {low}..{high} for SCHED_{policy.upper()}")
    try:
        os.sched_setscheduler(0, kind, os.sched_param(priority))
        return Scheduling(policy, priority)
    except PermissionError:
        reason = (f"SCHED_{policy.upper()} not permitted (needs CAP_SYS_NICE or an rtprio limit, "
                  "e.g. LimitRTPRIO=99 in the systemd unit)")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, fallback_nice)
        return Scheduling("nice", fallback_nice, f"{reason}; running at nice {fallback_nice}")
    except PermissionError:
        return Scheduling("default", 0, f"{reason}; lowering nice is not permitted either")


def request_realtime_for_process(policy: str = "fifo", priority: int = 50, fallback_nice: int = -10) -> Scheduling:
    """`request_realtime` for the calling thread and every thread the process already runs (a node calls this
    once its middleware threads exist: DDS receive threads must not wait behind busy processes either).
    Worker threads call `below_control` or `normal_priority` when they start."""
    got = request_realtime(policy, priority, fallback_nice)
    if got.policy in ("fifo", "rr"):
        kind = os.SCHED_FIFO if got.policy == "fifo" else os.SCHED_RR
        for task in os.listdir("/proc/self/task"):
            try:
                os.sched_setscheduler(int(task), kind, os.sched_param(priority))
            except (PermissionError, ProcessLookupError):  # a thread that ended meanwhile
                pass
    return got


def normal_priority(nice: int = 0) -> None:
    """Put the calling thread back on the normal scheduler (for heavy work started by a real-time thread)."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:  # raising nice (lowering priority) is always permitted; be safe anyway
        pass


# How far below its real-time creator a worker runs (`below_control`).
WORKER_LEVELS = 10


def below_control(levels: int = WORKER_LEVELS) -> None:
    """For a worker started by a real-time thread: the same policy `levels` priorities lower, so it outranks
    busy processes but never the control thread. Where that would reach the policy's lowest priority (the
    two would then share a level and the worker could delay a tick), the worker gets the normal scheduler
    instead. A worker started by a normal thread is left as it is."""
    try:
        kind = os.sched_getscheduler(0)
        if kind not in (os.SCHED_FIFO, os.SCHED_RR):
            return
        priority = os.sched_getparam(0).sched_priority - levels
        if priority < os.sched_get_priority_min(kind) + 1:
            normal_priority()
        else:
            os.sched_setscheduler(0, kind, os.sched_param(priority))
    except PermissionError:
        pass
