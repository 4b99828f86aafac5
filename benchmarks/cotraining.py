"""Does training on the other tasks' episodes help a task? Round-0 BC alone vs co-trained, same demonstrations.

    python benchmarks/cotraining.py --jobs 2 --out benchmarks/results/cotraining
    python benchmarks/cotraining.py --quick --out /tmp/cotraining          # a ~2 min smoke run

For each (task, seed): the scripted expert demonstrates the task's fixed count of layouts (recap_metaworld's
DEFAULT_DEMOS, else START_DEMOS; the same layouts and noise as that benchmark's seed) into one store, and
the same demonstrations plus every other task's (each its own count, the same seed) into a second. The
behaviour-cloned policy is pretrained on each (same budget: recap_metaworld's state networks, V_pre 50
steps since round 0 does not use it), the co-trained one for each `--other-weights` W with the other tasks'
episodes drawn at weight W (the cycle's data mixture, `robot-runtime-train --task-weight`), and every
policy runs on the task's 50 held-out evaluation layouts. One shared network tells the tasks apart by the
instruction embedding, as the product's multi-task policy does.

Results: --out/runs/<task>_seed<seed>.json per finished pair (a rerun skips them), results.json (pooled
success per setting with 95% Wilson intervals, per task) and results.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from recap_metaworld import (
    DEFAULT_DEMOS,
    DEFAULT_TASKS,
    EVAL_SEED_BASE,
    START_DEMOS,
    BenchConfig,
    Timer,
    check_tasks,
    cycle_config,
    load_runner,
    make_robot,
    outcome_summary,
    pooled,
    run_many,
)

from robot_runtime.episode import EpisodeStore
from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.rounds import pretrain
from robot_runtime.improvement_loop.data.sources import MixtureConfig
from robot_runtime.sim.metaworld_robot import instruction_for
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator

log = logging.getLogger("cotraining")


def demonstrate(task: str, seed: int, cfg: BenchConfig, store: EpisodeStore) -> None:
    """The task's fixed count of demonstrations (recap_metaworld's layouts and operator noise for `seed`)."""
    count = DEFAULT_DEMOS.get(task, START_DEMOS) if not cfg.quick else 2
    robot = make_robot(task, cfg)
    try:
        base = 100_000 * (seed + 1)
        operator = ScriptedOperator(task, OperatorConfig(mode="demonstrate", action_noise=cfg.demo_noise, seed=seed))
        run_many(robot, range(base, base + count), operator=operator, store=store, campaign="demonstrations")
    finally:
        robot.close()


def run_pair(task: str, seed: int, cfg: BenchConfig, weights: list[float], work: Path) -> dict:
    root = work / f"{task}_seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    t = Timer()
    alone, mixed = EpisodeStore(root / "alone"), EpisodeStore(root / "mixed")
    demonstrate(task, seed, cfg, alone)
    for other in cfg.tasks:
        demonstrate(other, seed, cfg, mixed)
    cycle = replace(cycle_config(cfg, seed), value=replace(cycle_config(cfg, seed).value, steps=50))
    others = tuple(instruction_for(other) for other in cfg.tasks if other != task)
    settings = {"alone": (alone.root, cycle)}
    for w in weights:
        settings[f"cotrained_w{w:g}"] = (mixed.root, replace(cycle, mixture=MixtureConfig(
            tasks=tuple((instruction, w) for instruction in others))))
    robot = make_robot(task, cfg)
    layouts = range(EVAL_SEED_BASE, EVAL_SEED_BASE + cfg.eval_episodes)
    scores = {}
    try:
        for name, (store_root, settings_cycle) in settings.items():
            train_dir = root / f"train_{name}"
            train_dir.mkdir(parents=True)
            result = pretrain(store_root, train_dir, settings_cycle)
            scores[name] = outcome_summary(run_many(robot, layouts, load_runner(result.bundle_path, seed)))
            log.info("%s seed %d %s: %.0f%% (%d rows)", task, seed, name, 100 * scores[name]["success_rate"],
                     result.metrics["steps_used"])
    finally:
        robot.close()
    shutil.rmtree(root, ignore_errors=True)
    return {"task": task, "seed": seed, "scores": scores, "other_tasks": [t for t in cfg.tasks if t != task],
            "seconds": round(time.perf_counter() - t.start, 1)}


def report(runs: list[dict], names: list[str], cfg: BenchConfig) -> tuple[dict, str]:
    table = {"all": {n: pooled([r["scores"][n] for r in runs]) for n in names}}
    for task in cfg.tasks:
        mine = [r for r in runs if r["task"] == task]
        if mine:
            table[task] = {n: pooled([r["scores"][n] for r in mine]) for n in names}
    lines = ["# Round-0 BC: each task alone vs co-trained with the other tasks' demonstrations", "",
             f"{len(runs)} (task, seed) pairs; successes on {cfg.eval_episodes} held-out layouts per pair, pooled, "
             "with the 95% Wilson interval. `cotrained_wW`: the other tasks' episodes drawn at weight W.", "",
             "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task, row in table.items():
        lines.append(f"| {task} | " + " | ".join(
            f"{100 * p['success_rate']:.1f}% [{100 * p['ci95'][0]:.0f}-{100 * p['ci95'][1]:.0f}]" for p in row.values())
            + " |")
    return table, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=None, help=f"comma-separated (default {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (default 3)")
    parser.add_argument("--other-weights", default="1", help="comma-separated weights of the other tasks' rows")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 tasks, 1 seed, 2 demos each, 3 episodes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cotraining"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        weights = [float(w) for w in args.other_weights.split(",")]
    except ValueError:
        parser.error(f"--other-weights {args.other_weights!r}: comma-separated numbers")
    if any(not w > 0 for w in weights):
        parser.error("--other-weights must be > 0 (0 is the 'alone' setting)")
    tasks = check_tasks(args.tasks) if args.tasks else (("push-v3", "reach-v3") if args.quick else DEFAULT_TASKS)
    if len(tasks) < 2:
        parser.error("--tasks: co-training needs at least two tasks")
    cfg = BenchConfig(tasks=tasks, seeds=args.seeds or (1 if args.quick else 3), quick=args.quick,
                      eval_episodes=3 if args.quick else 50, max_steps=80 if args.quick else BenchConfig.max_steps)
    names = ["alone"] + [f"cotrained_w{w:g}" for w in weights]
    runs, todo = [], []
    for seed in range(cfg.seeds):
        for task in tasks:
            path = args.out / "runs" / f"{task}_seed{seed}.json"
            done = json.loads(path.read_text()) if path.is_file() else None
            if done and set(names) <= set(done["scores"]) and done["other_tasks"] == [t for t in tasks if t != task]:
                runs.append(done)
            else:
                todo.append((task, seed, path))
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [(path, pool.submit(run_pair, task, seed, cfg, weights, args.work)) for task, seed, path in todo]
        for path, future in futures:
            write_json_atomic(path, future.result())
            runs.append(future.result())
    table, text = report(runs, names, cfg)
    write_json_atomic(args.out / "results.json", {"tasks": list(tasks), "seeds": cfg.seeds, "other_weights": weights,
                                                  "demos": {t: DEFAULT_DEMOS.get(t, START_DEMOS) for t in tasks},
                                                  "table": table, "runs": runs})
    (args.out / "results.md").write_text(text)
    print(text)
    return table


if __name__ == "__main__":
    main()
