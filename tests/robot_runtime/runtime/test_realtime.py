"""Scheduling: the control thread gets real-time priority where permitted, heavy work goes back to normal."""
import os
import threading

import pytest

from robot_runtime.runtime.realtime import WORKER_LEVELS, below_control, normal_priority, request_realtime


def in_thread(fn):
    """Run `fn` in a fresh thread (scheduling is per thread) and return what it returned."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()))
    thread.start()
    thread.join()
    return out["value"]


def test_realtime_or_a_named_fallback():
    def ask():
        got = request_realtime("fifo", 10)
        return got, os.sched_getscheduler(0)

    got, policy = in_thread(ask)
    if got.policy == "fifo":
        assert policy == os.SCHED_FIFO and got.note == ""
    else:  # not permitted here: the fallback says why
        assert "not permitted" in got.note and policy == os.SCHED_OTHER


def test_heavy_work_started_by_a_realtime_thread_returns_to_normal():
    def ask():
        request_realtime("rr", 5)
        child = {}

        def work():
            normal_priority()
            child["policy"] = os.sched_getscheduler(0)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return child["policy"]

    assert in_thread(ask) == os.SCHED_OTHER


@pytest.mark.parametrize("control, expected", [(50, ("fifo", 50 - WORKER_LEVELS)), (5, ("other", 0))])
def test_a_worker_of_a_realtime_thread_stays_realtime_below_it(control, expected):
    """Inference and the episode writer: ahead of busy processes, behind control; normal when control is too low
    to leave a level between them, and untouched when started by a normal thread."""
    def ask():
        if request_realtime("fifo", control).policy != "fifo":
            return None
        child = {}

        def work():
            below_control()
            kind = os.sched_getscheduler(0)
            child["got"] = ("fifo" if kind == os.SCHED_FIFO else "other", os.sched_getparam(0).sched_priority)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return child["got"]

    got = in_thread(ask)
    if got is None:
        pytest.skip("SCHED_FIFO is not permitted here")
    assert got == expected
    assert in_thread(lambda: (below_control(), os.sched_getscheduler(0))[1]) == os.SCHED_OTHER


def test_off_changes_nothing_and_bad_requests_are_refused():
    assert in_thread(lambda: request_realtime("off")).policy == "default"
    with pytest.raises(ValueError, match="not one of"):
        request_realtime("deadline")
    with pytest.raises(ValueError, match="outside"):
        request_realtime("fifo", 1000)


def test_the_whole_process_can_be_made_realtime(tmp_path):
    """In a child process (so this test run keeps its scheduling): threads that already run are raised too."""
    import subprocess
    import sys

    code = """
import os, threading, time
from robot_runtime.runtime.realtime import request_realtime_for_process
stop = threading.Event()
worker = threading.Thread(target=stop.wait); worker.start()
got = request_realtime_for_process("fifo", 10)
print(got.policy, os.sched_getscheduler(worker.native_id) == os.SCHED_FIFO)
stop.set(); worker.join()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out in (["fifo", "True"], ["nice", "False"], ["default", "False"])
