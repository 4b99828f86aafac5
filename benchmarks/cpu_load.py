"""`--load N` for the benchmarks: N busy processes at normal priority beside the system under test.

A robot's computer is never quiet; a figure measured on an idle machine says little about a robot.
Each hog is a separate process spinning in pure Python, so it competes for a whole core like a
perception or planning process would. They are stopped when the block ends, even on an error,
and always run on the normal scheduler, whatever the benchmark's own scheduling.

The benchmarks play the robot's driver in their own process; with `--realtime` that driver runs
real-time too (`driver_scheduling`), as a robot's driver does: a driver starved by the hogs would
be measured as the node's lateness.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def cpu_hogs(count: int):
    """Run `count` busy processes for the duration of the block; yields their pids."""
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=_normal_scheduler) for _ in range(max(0, count))]
    try:
        yield [h.pid for h in hogs]
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def _normal_scheduler() -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


# Below the node under test (its realtime_priority defaults to 50), above its workers' level.
DRIVER_PRIORITY = 45


def driver_scheduling(policy: str) -> str:
    """Give this process (the benchmark's robot driver and its DDS threads) `policy` scheduling; says what it got."""
    from robot_runtime.runtime.realtime import request_realtime_for_process

    got = request_realtime_for_process(policy, DRIVER_PRIORITY)
    return f"{got.policy} {got.priority}" + (f" ({got.note})" if got.note else "")
