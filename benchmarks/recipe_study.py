"""Which label recipe should the loop default to? Every recipe trained on the same final-round data, scored on
calibration layouts, before the table spends evaluation episodes on it.

    python benchmarks/recipe_study.py --table benchmarks/results/recap_table --work /tmp/recap_table_work \
        --out benchmarks/results/recipe_study

For each finished (task, seed) of a recap_metaworld run (its runs/*.json) whose episode store is still in
--work, the store after the last round (demonstrations plus every round's rollouts and corrections) is
relabelled by each `--recipes` entry (recap_metaworld.RECIPES) and RECAP is trained on it from the pair's
pretrained checkpoint with the table's budget; filtered BC is trained once on the same rows as the
reference. Each policy runs on `--episodes` calibration layouts (CALIBRATION_SEED_BASE + i: the demonstration
search's layouts, disjoint from the table's evaluation layouts, which this study never touches), RECAP at
beta 1 and 2. Every policy sees the same store, start, step budget and layouts, so only the labels differ.

What it cannot show: a recipe changes the data later rounds collect (the collector is the previous round's
RECAP), so the table still has to run the winner round by round. Results per pair in --out/pairs/ (a rerun
skips finished pairs), pooled figures in --out/results.json and results.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from recap_metaworld import (
    CALIBRATION_SEED_BASE,
    NEUTRAL_CYCLE_FIELDS,
    RECIPES,
    BenchConfig,
    Timer,
    cycle_config,
    finished_runs,
    load_runner,
    make_robot,
    outcome_summary,
    pooled,
    run_many,
)

from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.baselines import train_baseline
from robot_runtime.improvement_loop.cycle.rounds import CycleResult, round_data, train_round

log = logging.getLogger("recipe_study")
BETAS = (1.0, 2.0)


def pair_home(work: Path, run: dict) -> Path:
    """Where recap_metaworld left the pair's chosen demonstrations, store and work directory."""
    return work / run["task"] / f"seed{run['seed']}" / f"demos{run['demos']['episodes']}"


def bench_config(run: dict, args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(tasks=(run["task"],), rounds=run["fingerprint"]["rounds"],
                       max_steps=run["fingerprint"]["max_steps"], quick=args.quick)


def same_budget(cfg: BenchConfig, run: dict) -> None:
    """Refuse a run whose training settings (all but the labels) differ from the ones this study would use."""
    def settings(cycle: dict) -> dict:
        return {k: v for k, v in cycle.items() if k != "labels" and k not in NEUTRAL_CYCLE_FIELDS}
    mine = json.loads(json.dumps(asdict(cycle_config(cfg, 0))))
    if settings(mine) != settings(run["fingerprint"]["cycle"]):
        raise ValueError(f"{run['task']} seed {run['seed']}: the run was trained with other settings than this "
                         "study's (pass --quick for a --quick run)")


def study_pair(run: dict, recipes: list[str], args: argparse.Namespace) -> dict:
    """Relabel the pair's final store with each recipe, train and score RECAP (and filtered BC once)."""
    task, seed, rounds = run["task"], run["seed"], run["fingerprint"]["rounds"]
    home = pair_home(args.work, run)
    pretrained = CycleResult.load(home / "work" / "pretrain" / "result.json")
    cfg = bench_config(run, args)
    layouts = range(CALIBRATION_SEED_BASE, CALIBRATION_SEED_BASE + args.episodes)
    robot = make_robot(task, cfg)
    scratch = args.scratch / f"{task}_seed{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    result: dict = {"task": task, "seed": seed, "round": rounds, "episodes": args.episodes, "recipes": {}}
    try:
        for i, recipe in enumerate(recipes):
            t = Timer()
            work = scratch / recipe
            work.mkdir(parents=True)
            (work / "text_cache").symlink_to((home / "work" / "text_cache").resolve())
            cycle = replace(cycle_config(cfg, seed), labels=RECIPES[recipe], chunk_critic=args.guided > 1,
                            positive_share=args.positive_share, indicators_from_null=args.indicators_from_null)
            rd = round_data(home / "episodes", work, pretrained, cycle, rounds)
            expected = run["rounds"][-1]["store_episodes"]
            if len(rd.data.episodes) != expected:
                raise RuntimeError(f"{home}: {len(rd.data.episodes)} episodes, the run's last round had {expected}")
            policy = train_round(rd, work, cycle)
            lm = rd.labels.metrics
            scores = {f"beta{beta:g}": outcome_summary(run_many(robot, layouts, load_runner(policy.bundle_path, seed,
                                                                                               beta)))
                      for beta in BETAS}
            if args.guided > 1:         # value-guided execution: beta 1, the best of K chunks by the chunk critic
                runner = load_runner(policy.bundle_path, seed, 1.0, args.guided)
                scores[f"guided{args.guided}"] = outcome_summary(run_many(robot, layouts, runner))
            result["recipes"][recipe] = {"scores": scores, "positive_fraction": lm["positive_fraction"],
                                         "positive_fraction_by_outcome": lm["positive_fraction_by_outcome"],
                                         "label_quality": lm["label_quality"]}
            if i == 0:
                reference = train_baseline(rd, work, "filtered_bc", cycle)
                result["filtered_bc"] = outcome_summary(run_many(robot, layouts, load_runner(reference.bundle_path,
                                                                                             seed)))
            log.info("%s seed %d %s: %s, filtered_bc %.0f%% (%s)", task, seed, recipe,
                     ", ".join(f"{b} {100 * s['success_rate']:.0f}%" for b, s in scores.items()),
                     100 * result["filtered_bc"]["success_rate"], t)
    finally:
        robot.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def score_names(guided: int) -> list[str]:
    return [f"beta{b:g}" for b in BETAS] + ([f"guided{guided}"] if guided > 1 else [])


def summarize(pairs: list[dict], recipes: list[str], guided: int) -> dict:
    table = {"filtered_bc": pooled([p["filtered_bc"] for p in pairs])}
    for recipe in recipes:
        for name in score_names(guided):
            table[f"{recipe}_{name}"] = pooled([p["recipes"][recipe]["scores"][name] for p in pairs])
    return table


def render(pairs: list[dict], table: dict, recipes: list[str], guided: int, settings: dict) -> str:
    names = score_names(guided)
    columns = ["filtered_bc"] + [f"{r}_{n}" for r in recipes for n in names]
    lines = ["# Label recipes on the same final-round data (calibration layouts)", "",
             f"RECAP trained with positive_share {settings['positive_share']}, indicators_from_null "
             f"{settings['indicators_from_null']}; successes of the calibration episodes per policy, pooled with "
             "the 95% Wilson interval.", "",
             "| pair | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for p in pairs:
        cells = [p["filtered_bc"]] + [p["recipes"][r]["scores"][n] for r in recipes for n in names]
        lines.append(f"| {p['task']} seed {p['seed']} | " + " | ".join(f"{c['successes']}/{c['episodes']}"
                                                                      for c in cells) + " |")
    lines.append("| **pooled** | " + " | ".join(
        f"**{100 * table[c]['success_rate']:.1f}%** [{100 * table[c]['ci95'][0]:.0f}-{100 * table[c]['ci95'][1]:.0f}]"
        for c in columns) + " |")
    lines += ["", "Label quality per recipe (autonomous steps; indicator AUC is 1 by construction under 'outcome'):",
              "", "| pair | recipe | positive | positive in successes / failures | advantage AUC | indicator AUC |",
              "|---|---|---|---|---|---|"]
    for p in pairs:
        for r in recipes:
            m = p["recipes"][r]
            q, by = m["label_quality"], m["positive_fraction_by_outcome"]
            lines.append(f"| {p['task']} seed {p['seed']} | {r} | {m['positive_fraction']:.2f} | "
                         f"{by.get('success', float('nan')):.2f} / {by.get('failure', float('nan')):.2f} | "
                         f"{q['advantage_auc'] if q['advantage_auc'] is None else round(q['advantage_auc'], 2)} | "
                         f"{q['indicator_auc'] if q['indicator_auc'] is None else round(q['indicator_auc'], 2)} |")
    return "\n".join(lines) + "\n"


def covers(pair: dict, recipes: list[str], guided: int) -> bool:
    """Whether a finished pair already holds every score this run asks for."""
    return all(set(score_names(guided)) <= set(pair.get("recipes", {}).get(r, {}).get("scores", {})) for r in recipes)


def table_study_parser(doc: str, scratch: Path) -> argparse.ArgumentParser:
    """The arguments every study of a finished table takes (this one, hidden_outcomes.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True, help="a recap_metaworld --out with finished runs/")
    parser.add_argument("--work", type=Path, required=True, help="that run's --work (its stores and pretrains)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=None,
                        help="only the pairs of the first N seeds (default every finished pair)")
    parser.add_argument("--episodes", type=int, default=50, help="calibration layouts per policy")
    parser.add_argument("--quick", action="store_true", help="the runs are recap_metaworld --quick runs (smoke)")
    parser.add_argument("--jobs", type=int, default=1, help="pairs studied in parallel processes")
    parser.add_argument("--scratch", type=Path, default=scratch)
    return parser


def study_pairs(args: argparse.Namespace, parser: argparse.ArgumentParser, finished, study) -> list[dict]:
    """Every finished pair of `args.table` (of its first `args.seeds` seeds) studied: reused from --out/pairs/
    when `finished(pair)`, else `study(run)` on its store in --work (`args.jobs` at a time; a run trained with
    other settings is refused), sorted by (task, seed). Shared by the studies of a finished table."""
    pairs, todo = [], {}
    for name, run in finished_runs(args.table).items():
        if args.seeds is not None and run["seed"] >= args.seeds:
            continue
        done = args.out / "pairs" / name
        studied = json.loads(done.read_text()) if done.is_file() else None
        if studied is not None and finished(studied):
            pairs.append(studied)
        elif (pair_home(args.work, run) / "episodes").is_dir():
            try:
                same_budget(bench_config(run, args), run)
            except ValueError as err:
                parser.error(str(err))
            todo[done] = run
        else:
            log.warning("%s: no store under %s; skipped", name, pair_home(args.work, run))
    (args.out / "pairs").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {done: pool.submit(study, run) for done, run in todo.items()}
        for done, future in futures.items():
            write_json_atomic(done, future.result())
            pairs.append(future.result())
    if not pairs:
        sys.exit("no pair could be studied")
    return sorted(pairs, key=lambda p: (p["task"], p["seed"]))


def main(argv: list[str] | None = None) -> dict:
    parser = table_study_parser(__doc__, Path("/tmp/recipe_study"))
    parser.add_argument("--recipes", default="candidate,outcome", help="comma-separated recap_metaworld.RECIPES keys")
    parser.add_argument("--guided", type=int, default=0, metavar="K",
                        help="also train each recipe's chunk critic and score RECAP (beta 1) executing the best of "
                             "K sampled chunks")
    parser.add_argument("--positive-share", type=float, default=None,
                        help="RECAP's batches draw this share from positive rows (CycleConfig.positive_share; "
                             "default uniform rows); filtered BC is unchanged")
    parser.add_argument("--indicators-from-null", action="store_true",
                        help="RECAP's positive/negative embeddings start at the pretrained null one "
                             "(CycleConfig.indicators_from_null)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {sorted(RECIPES)}")
    pairs = study_pairs(args, parser, lambda pair: covers(pair, recipes, args.guided),
                        partial(study_pair, recipes=recipes, args=args))
    table = summarize(pairs, recipes, args.guided)
    report = {"recipes": {r: json.loads(json.dumps(asdict(RECIPES[r]))) for r in recipes},
              "guided": args.guided, "positive_share": args.positive_share,
              "indicators_from_null": args.indicators_from_null,
              "layouts": f"calibration {CALIBRATION_SEED_BASE}+i, {args.episodes} per policy",
              "pooled": table,
              "pairs": [f"{p['task']} seed {p['seed']}" for p in pairs]}
    write_json_atomic(args.out / "results.json", report)
    (args.out / "results.md").write_text(render(pairs, table, recipes, args.guided, report))
    print((args.out / "results.md").read_text())
    return report


if __name__ == "__main__":
    main()
