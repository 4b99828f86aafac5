"""`robot-runtime-demo --out demo_output`: the fleet demo (see fleet.py for its stages); writes
OUT/summary.json and OUT/summary.md and prints the summary."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from robot_runtime.files import write_json_atomic, write_text_atomic
from robot_runtime.improvement_loop.cycle.methods import ROUND_METHODS
from robot_runtime.improvement_loop.daemon.config import GATE_RULES
from robot_runtime.improvement_loop.demo.fleet import STAGES, DemoConfig, FleetDemo
from robot_runtime.improvement_loop.demo.report import render

DEFAULTS = DemoConfig()
OPTIONS = {  # option -> (field, help)
    "--task": ("env_name", "MetaWorld task, e.g. push-v3"),
    "--domain-id": ("domain_id", "ROS_DOMAIN_ID of the robots' graphs (each robot has its own namespace)"),
    "--demos": ("demos", "demonstrations per robot"),
    "--rollouts": ("rollouts", "autonomous episodes with corrections per robot before the cycle"),
    "--eval-episodes": ("eval_episodes", "held-out evaluation episodes per policy"),
    "--max-steps": ("max_steps", "episode step limit"),
    "--pretrain-value-steps": ("pretrain_value_steps", None),
    "--pretrain-policy-steps": ("pretrain_policy_steps", None),
    "--round-value-steps": ("round_value_steps", "per cross-fitting fold (two folds)"),
    "--round-policy-steps": ("round_policy_steps", None),
    "--threads": ("threads", "torch threads of each training command"),
    "--gate-episodes": ("gate_episodes", "simulated gate episodes per policy"),
    "--canary-episodes": ("canary_episodes", "candidate episodes on the canary robot before the daemon decides"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULTS.out, help="output directory (replaced)")
    for option, (name, text) in OPTIONS.items():
        default = getattr(DEFAULTS, name)
        parser.add_argument(option, dest=name, type=type(default), default=default,
                            help=f"{text + '; ' if text else ''}default {default}")
    parser.add_argument("--gate-rule", choices=GATE_RULES, default=DEFAULTS.gate_rule,
                        help=f"the gate's rule on simulated success (daemon/gate.py); default {DEFAULTS.gate_rule}")
    parser.add_argument("--method", choices=ROUND_METHODS, default=DEFAULTS.method,
                        help=f"what the daemon's cycle trains (robot-runtime-train --method); "
                             f"default {DEFAULTS.method}")
    parser.add_argument("--stop-after", choices=STAGES, default=DEFAULTS.stop_after, help="end after this stage")
    args = parser.parse_args(argv)
    if not 0 <= args.domain_id <= 232:
        parser.error(f"--domain-id {args.domain_id}: a ROS_DOMAIN_ID is 0-232")
    for option, (name, _) in OPTIONS.items():
        if isinstance(getattr(args, name), int) and name != "domain_id" and getattr(args, name) < 1:
            parser.error(f"{option} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    cfg = dataclasses.replace(DEFAULTS, out=args.out, gate_rule=args.gate_rule, stop_after=args.stop_after,
                              method=args.method,
                              **{name: getattr(args, name) for name, _ in OPTIONS.values()})
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM stops the robots and servers as Ctrl-C does
    try:
        report = FleetDemo(cfg).run()
    except (RuntimeError, TimeoutError, OSError) as err:
        sys.exit(f"robot-runtime-demo: {err}")
    except KeyboardInterrupt:
        sys.exit(f"robot-runtime-demo: stopped; what finished is in {cfg.out / 'summary.json'}")
    write_json_atomic(cfg.out / "summary.json", report.to_json())
    text = render(report)
    write_text_atomic(cfg.out / "summary.md", text)
    print()
    print(text)
