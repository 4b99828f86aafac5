"""`robot-runtime-daemon --config daemon.yaml run | run-now | status [--json] | pause | resume`.

run: the scheduler in the foreground (for systemd): resumes a cycle a crash left running, then starts one
at each scheduled time (cron in schedule.timezone; after downtime the latest missed time runs once); with
page.serve it serves the fleet page beside it (127.0.0.1:5871 by default; a token off loopback).
run-now: one cycle now (or the running one resumed), in this process, to its end; refused while another
process holds the cycle lock. pause: no new cycle starts and a running one stops at its next state
boundary (it resumes on `resume`). status: the lock's owner, the running cycle and its state, the last
cycles and their decisions, the next scheduled time.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from datetime import datetime

from robot_runtime.improvement_loop.daemon import records
from robot_runtime.improvement_loop.daemon.config import ConfigError, DaemonConfig, load_config
from robot_runtime.improvement_loop.daemon.cycle import CycleRunner
from robot_runtime.improvement_loop.daemon.lock import LockBusy
from robot_runtime.improvement_loop.daemon.schedule import due, upcoming

log = logging.getLogger("daemon")
IDLE_POLL_SECONDS = 30.0


class Scheduler:
    """The `run` loop, one `tick` at a time so a test drives it with its own clock."""

    def __init__(self, cfg: DaemonConfig, conn, clock=time.time, sleep=time.sleep):
        self.cfg, self.conn, self.clock, self.sleep = cfg, conn, clock, sleep
        self.runner = CycleRunner(cfg, conn, sleep=sleep, clock=clock)

    def tick(self) -> records.Cycle | None:
        """Resume a running cycle, or run the one that is due; the cycle it ran, or None."""
        state = records.daemon_state(self.conn)
        if state.paused:
            return None
        if records.current_cycle(self.conn) is not None:
            return self.runner.run()
        when, last = due(self.cfg.schedule.cron, self.cfg.zone(), state.last_scheduled, self.clock())
        if last != state.last_scheduled:
            records.set_last_scheduled(self.conn, last)   # before the cycle: a crash resumes it, not reruns it
        if when is None:
            return None
        log.info("scheduled cycle for %s", datetime.fromtimestamp(when, self.cfg.zone()).isoformat())
        return self.runner.run()

    def serve(self) -> None:
        log.info("daemon up: cron '%s' (%s), next %s", self.cfg.schedule.cron, self.cfg.schedule.timezone,
                 _when(self.cfg, upcoming(self.cfg.schedule.cron, self.cfg.zone(), self.clock())))
        while True:
            try:
                if self.tick() is not None:
                    continue      # a cycle just ended: look at the schedule again at once
            except LockBusy as err:
                log.warning("%s", err)
            wait = upcoming(self.cfg.schedule.cron, self.cfg.zone(), self.clock()) - self.clock()
            self.sleep(max(1.0, min(wait, IDLE_POLL_SECONDS)))


def _when(cfg: DaemonConfig, at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, cfg.zone()).isoformat(timespec="seconds")


def status(cfg: DaemonConfig, conn) -> dict:
    state = records.daemon_state(conn)
    running = records.current_cycle(conn)
    latest = records.cycles(conn, limit=5)
    return {
        "paused": state.paused, "lock": {"pid": state.lock_pid, "host": state.lock_host,
                                         "since": state.lock_started},
        "schedule": {"cron": cfg.schedule.cron, "timezone": cfg.schedule.timezone,
                     "next": _when(cfg, upcoming(cfg.schedule.cron, cfg.zone(), time.time())),
                     "last_scheduled": _when(cfg, state.last_scheduled)},
        "running": asdict(running) if running else None,
        "cycles": [{**asdict(c), "snapshot": {k: v for k, v in c.snapshot.items() if k != "episodes"},
                    "decisions": [asdict(d) for d in records.decisions(conn, c.id)]} for c in latest],
    }


def _print_status(cfg: DaemonConfig, s: dict) -> None:
    lock = s["lock"]
    print(f"daemon: {'paused' if s['paused'] else 'active'}; cycle lock "
          f"{'held by pid ' + str(lock['pid']) + ' on ' + str(lock['host']) if lock['pid'] else 'free'}")
    print(f"schedule: '{s['schedule']['cron']}' {s['schedule']['timezone']}, next {s['schedule']['next']}")
    r = s["running"]
    print(f"running: cycle {r['id']} in state {r['state']}" if r else "running: no cycle")
    for c in s["cycles"]:
        print(f"cycle {c['id']} {_when(cfg, c['created'])}: {c['status']} in {c['state']}"
              f"{' (' + c['reason'] + ')' if c['reason'] else ''}; incumbent {c['incumbent'] or '-'}, "
              f"candidate {c['candidate'] or '-'}")
        for d in c["decisions"]:
            print(f"  {d['kind']}: {'accepted' if d['accepted'] else 'refused'}: {d['reason']}")


def _start_page(cfg: DaemonConfig, parser):
    """The fleet page in a thread of this process, or None when page.serve is off; a page that cannot start
    (an address in use, no token off loopback) stops the daemon with the reason before any cycle runs."""
    if not cfg.page.serve:
        return None
    from robot_runtime.improvement_loop.page.app import PageError, PageServer, read_token

    try:
        page = PageServer(cfg.catalog, cfg.page.host, cfg.page.port, read_token(cfg.page.token_file),
                          store=cfg.store, online_window_s=cfg.page.online_window_s, days=cfg.page.days)
    except PageError as err:
        parser.exit(2, f"robot-runtime-daemon: error: page: {err}\n")
    log.info("fleet page on %s", page.url)
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-daemon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the daemon's YAML file (see config/daemon.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the scheduler, in the foreground")
    commands.add_parser("run-now", help="run (or resume) one cycle now, to its end")
    show = commands.add_parser("status", help="lock, running cycle, last cycles and decisions")
    show.add_argument("--json", action="store_true")
    commands.add_parser("pause", help="start no new cycle; a running one stops at its next state")
    commands.add_parser("resume", help="undo pause")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        conn = records.connect(cfg.catalog)
    except (ConfigError, ValueError, OSError) as err:
        parser.exit(2, f"robot-runtime-daemon: error: {err}\n")
    try:
        if args.command == "run":
            page = _start_page(cfg, parser)
            try:
                Scheduler(cfg, conn).serve()
            finally:
                if page is not None:
                    page.stop()
        elif args.command == "run-now":
            if records.daemon_state(conn).paused:
                parser.exit(1, "robot-runtime-daemon: paused: no cycle starts (robot-runtime-daemon resume)\n")
            c = CycleRunner(cfg, conn).run()
            print(f"cycle {c.id}: {c.status} in state {c.state}{': ' + c.reason if c.reason else ''}")
        elif args.command == "status":
            s = status(cfg, conn)
            print(json.dumps(s, indent=1)) if args.json else _print_status(cfg, s)
        else:
            records.set_paused(conn, args.command == "pause")
            print("paused" if args.command == "pause" else "resumed")
    except LockBusy as err:
        parser.exit(1, f"robot-runtime-daemon: {err}\n")
    except KeyboardInterrupt:
        sys.exit(130)
