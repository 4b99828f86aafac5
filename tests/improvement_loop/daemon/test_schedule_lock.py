"""The schedule on a fake clock (cron in a time zone, a missed run after downtime runs once) and the cycle lock
(a second cycle is refused; a lock left by a killed daemon is taken over)."""
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from daemon_world import write_config

from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.cli import Scheduler
from robot_runtime.improvement_loop.daemon.config import load_config
from robot_runtime.improvement_loop.daemon.lock import CycleLock, LockBusy
from robot_runtime.improvement_loop.daemon.schedule import due

BERLIN = ZoneInfo("Europe/Berlin")
DAEMON = str(Path(sys.executable).with_name("robot-runtime-daemon"))


def at(*args) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def test_one_run_a_night_at_local_time_across_daylight_saving():
    """Clocks go back on 25 October 2026 (02:00-03:00 happens twice) and forward on 29 March."""
    for start, days in ((at(2026, 10, 23, 12, 0), [24, 25, 26, 27]), (at(2026, 3, 27, 12, 0), [28, 29, 30, 31])):
        runs, last, now = [], None, start
        while now < start + 4 * 86400:
            when, last = due("0 2 * * *", BERLIN, last, now)
            if when is not None:
                runs.append(datetime.fromtimestamp(when, BERLIN))
            now += 600                           # the daemon looks every 10 minutes of a fake clock
        assert [t.day for t in runs] == days
        assert all(t.hour in (2, 3) and t.minute == 0 for t in runs)   # 02:00 does not exist on 29 March


def test_first_start_waits_and_a_missed_run_runs_once():
    nothing, last = due("0 2 * * *", BERLIN, None, at(2026, 6, 1, 12, 0))
    assert nothing is None and last == at(2026, 6, 1, 2, 0)       # first start: wait for the next time
    assert due("0 2 * * *", BERLIN, last, at(2026, 6, 2, 1, 59)) == (None, last)
    when, last = due("0 2 * * *", BERLIN, last, at(2026, 6, 2, 2, 0, 30))
    assert when == at(2026, 6, 2, 2, 0)
    # Down from the 2nd to the 5th, noon: three nights missed, one run, for the latest.
    when, last = due("0 2 * * *", BERLIN, last, at(2026, 6, 5, 12, 0))
    assert when == at(2026, 6, 5, 2, 0)
    assert due("0 2 * * *", BERLIN, last, at(2026, 6, 5, 12, 1))[0] is None


def test_the_scheduler_runs_each_due_time_once_and_skips_without_new_data(tmp_path):
    (tmp_path / "train" / "pretrain").mkdir(parents=True)
    (tmp_path / "train" / "pretrain" / "result.json").write_text("{}")
    cfg = load_config(write_config(tmp_path / "daemon.yaml", tmp_path, min_new_episodes=5))
    conn = records.connect(cfg.catalog)
    clock = [at(2026, 6, 1, 12, 0)]
    scheduler = Scheduler(cfg, conn, clock=lambda: clock[0], sleep=lambda s: None)
    assert scheduler.tick() is None
    clock[0] = at(2026, 6, 2, 2, 0, 5)
    ran = scheduler.tick()
    assert (ran.status, ran.state) == ("skipped", "snapshot")
    assert "0 new labeled episodes since the last cycle, fewer than min_new_episodes (5)" in ran.reason
    assert scheduler.tick() is None
    clock[0] = at(2026, 6, 6, 9, 0)   # four nights down
    assert scheduler.tick() is not None and scheduler.tick() is None
    assert len(records.cycles(conn)) == 2
    records.set_paused(conn, True)
    clock[0] = at(2026, 6, 7, 3, 0)
    assert scheduler.tick() is None


def test_a_second_cycle_is_refused_while_one_holds_the_lock(tmp_path):
    cfg = load_config(write_config(tmp_path / "daemon.yaml", tmp_path))
    conn = records.connect(cfg.catalog)
    with CycleLock(cfg.work, conn):
        with pytest.raises(LockBusy, match="pid"):
            CycleLock(cfg.work, records.connect(cfg.catalog)).acquire()
        done = subprocess.run([DAEMON, "--config", str(tmp_path / "daemon.yaml"), "run-now"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "a cycle is running in pid" in done.stderr and "Traceback" not in done.stderr
    assert records.daemon_state(conn).lock_pid is None


def test_a_lock_left_by_a_killed_daemon_is_taken_over(tmp_path):
    cfg = load_config(write_config(tmp_path / "daemon.yaml", tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", f"""
import os, signal, time
from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.lock import CycleLock
CycleLock({cfg.work!r}, records.connect({cfg.catalog!r})).acquire()
print('held', flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert holder.wait(30) == -9
    conn = records.connect(cfg.catalog)
    assert records.daemon_state(conn).lock_pid == holder.pid       # the dead owner is still on record
    with CycleLock(cfg.work, conn):
        assert records.daemon_state(conn).lock_pid != holder.pid


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_resumes_a_cycle_left_running_serves_the_page_and_stops_on_sigterm(tmp_path):
    """`run` as systemd starts it: a cycle a crash left running is finished first (here: skipped, no new data),
    and the fleet page is served beside the schedule and shows that cycle."""
    (tmp_path / "train" / "pretrain").mkdir(parents=True)
    (tmp_path / "train" / "pretrain" / "result.json").write_text("{}")
    port = _free_port()
    config = write_config(tmp_path / "daemon.yaml", tmp_path, min_new_episodes=5, page={"port": port})
    cfg = load_config(config)
    conn = records.connect(cfg.catalog)
    left = records.new_cycle(conn, cfg.digest(), "", cfg.work)
    daemon = subprocess.Popen([DAEMON, "--config", str(config), "run"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while records.daemon_state(conn).last_scheduled is None and time.monotonic() < deadline:
            time.sleep(0.2)   # the schedule is looked at once the left cycle is done
        assert records.cycle(conn, left.id).status == "skipped"
        assert records.daemon_state(conn).last_scheduled is not None and len(records.cycles(conn)) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30) as answer:
            page = json.loads(answer.read())
        assert [c["id"] for c in page["cycles"]] == [left.id], page["cycles"]
    finally:
        daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == -signal.SIGTERM
    log = daemon.stderr.read()
    assert "daemon up: cron '0 2 * * *' (Europe/Berlin)" in log and f"fleet page on http://127.0.0.1:{port}" in log
