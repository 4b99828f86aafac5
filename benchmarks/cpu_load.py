"""`--load N` for the benchmarks: N busy processes at normal priority beside the system under test.

A robot's computer is never quiet; a figure measured on an idle machine says little about a robot.
Each hog is a separate process spinning in pure Python, so it competes for a whole core like a
perception or planning process would. They are stopped when the block ends, even on an error.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys

SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def cpu_hogs(count: int):
    """Run `count` busy processes for the duration of the block; yields their pids."""
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(max(0, count))]
    try:
        yield [h.pid for h in hogs]
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
