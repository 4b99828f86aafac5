"""Can the progress reward model stand in for the outcomes nobody recorded? The loop on half-hidden outcomes.

    python benchmarks/hidden_outcomes.py --table benchmarks/results/recap_table --work /tmp/recap_table_work \
        --out benchmarks/results/hidden_outcomes --jobs 2

A fleet records more episodes than operators judge. For each finished (task, seed) of a recap_metaworld run
whose episode store is still in --work, the store after the last round; a seeded `--hidden` share of its
robot-run episodes (the rounds' rollouts; demonstrations stay judged) has its outcome hidden. Three stores:

    all            every outcome recorded (the reference)
    labeled_only   the hidden episodes left out, as the loop skips unlabeled episodes today
    model_labels   the hidden episodes labeled by the progress reward model (models/progress.py) trained on
                   the judged ones, where it is at least --min-confidence sure (the rest left out), as the
                   daemon's training.progress_labels does

`--stores` picks which (the reference `all` trains what benchmarks/recipe_study.py trains on the same final
store, so a session short of CPU may skip it). Each store trains the loop's default method (filtered BC) and
RECAP (beta 1) from the pair's pretrained checkpoint with the table's budget, and every policy runs on
--episodes calibration layouts (the demonstration search's, never the table's evaluation layouts). Also
reported: the model's accuracy and coverage on the hidden episodes against their true outcomes. A pair's
store holds one task, so the model trains without counterfactual instructions (prefix negatives only).

Results per pair in --out/pairs/ (a rerun skips finished pairs), pooled in --out/results.json and results.md.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from recap_metaworld import (
    CALIBRATION_SEED_BASE,
    Timer,
    cycle_config,
    load_runner,
    make_robot,
    outcome_summary,
    pooled,
    run_many,
)
from recipe_study import bench_config, pair_home, study_pairs, table_study_parser

from robot_runtime.episode import EpisodeStore
from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.advantage import LabelConfig
from robot_runtime.improvement_loop.cycle.baselines import train_baseline
from robot_runtime.improvement_loop.cycle.progress_labels import MODEL_LABELER, read_trajectories, training_rows
from robot_runtime.improvement_loop.cycle.rounds import CycleResult, round_data, train_round
from robot_runtime.improvement_loop.daemon.cycle import link_entries
from robot_runtime.improvement_loop.data.text import TextEmbedder
from robot_runtime.improvement_loop.models.progress import train_progress

log = logging.getLogger("hidden_outcomes")
STORES = ("all", "labeled_only", "model_labels")
POLICIES = ("filtered_bc", "recap_beta1")


def hidden_ids(store: EpisodeStore, share: float, seed: int) -> list[str]:
    """A seeded `share` of the store's robot-run episodes (a policy version recorded), sorted."""
    robot_run = sorted(e for e in store.episode_ids() if store.open(e).meta.get("policy_version"))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(robot_run, size=int(round(share * len(robot_run))), replace=False).tolist())


def linked_store(root: Path, source: EpisodeStore, episode_ids: list[str]) -> EpisodeStore:
    """A store at `root` holding `episode_ids` of `source` as links (nothing copied)."""
    store = EpisodeStore(root)
    for episode_id in episode_ids:
        (store.episodes_dir / episode_id).symlink_to(source.episodes_dir / episode_id, target_is_directory=True)
    return store


def model_labels(source: EpisodeStore, judged: EpisodeStore, hidden: list[str], root: Path, text_cache: Path,
                 min_confidence: float, seed: int) -> tuple[EpisodeStore, dict]:
    """The judged store plus each hidden episode the model is sure of, with the model's label (written in
    this store's own directory of links, as the daemon's snapshot does); and how the model did."""
    store = linked_store(root, source, judged.episode_ids())
    trajectories, _ = read_trajectories(judged)
    outcomes = {t.outcome for t in trajectories}
    if not {"success", "failure"} <= outcomes:
        return store, {"trained": False, "reason": f"judged outcomes {sorted(outcomes)}: needs both"}
    embedder = TextEmbedder(text_cache)
    rows = training_rows(trajectories)
    scorer, fit = train_progress(rows, embedder, trajectories[0].state_names, model_id=f"hidden-{seed}")
    episodes = [source.open(e) for e in hidden]
    predictions = scorer.predict([e.array("state") for e in episodes], [e.task for e in episodes], embedder)
    truth = np.array([e.outcome == "success" for e in episodes])
    sure = np.array([p.confidence >= min_confidence for p in predictions])
    for episode, prediction, confident in zip(episodes, predictions, sure):
        if confident:
            link_entries(episode.path, store.episodes_dir / episode.episode_id)
            store.label(episode.episode_id, "success" if prediction.success else "failure", prediction.progress,
                        note=f"confidence {prediction.confidence:.3f}", operator=f"{MODEL_LABELER}{scorer.model_id}")
    said = np.array([p.success for p in predictions])
    return store, {"trained": True, "rows": fit["rows"], "seconds": fit["seconds"], "hidden": len(hidden),
                   "labeled": int(sure.sum()), "accuracy_all": float((said == truth).mean()) if len(hidden) else None,
                   "accuracy_labeled": float((said == truth)[sure].mean()) if sure.any() else None,
                   "hidden_successes": int(truth.sum())}


def study_pair(run: dict, args: argparse.Namespace) -> dict:
    task, seed, rounds = run["task"], run["seed"], run["fingerprint"]["rounds"]
    home = pair_home(args.work, run)
    pretrained = CycleResult.load(home / "work" / "pretrain" / "result.json")
    cfg = bench_config(run, args)
    labels = {k: tuple(v) if isinstance(v, list) else v for k, v in run["fingerprint"]["cycle"]["labels"].items()}
    cycle = replace(cycle_config(cfg, seed), labels=LabelConfig(**labels))   # the run's own label recipe
    scratch = args.scratch / f"{task}_seed{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    source = EpisodeStore(home / "episodes", create=False)
    hidden = hidden_ids(source, args.hidden, seed)
    judged = linked_store(scratch / "stores" / "labeled_only", source,
                          sorted(set(source.episode_ids()) - set(hidden)))
    text_cache = (home / "work" / "text_cache").resolve()
    labeled, model = model_labels(source, judged, hidden, scratch / "stores" / "model_labels", text_cache,
                                  args.min_confidence, seed)
    stores = {name: store for name, store in (("all", source), ("labeled_only", judged), ("model_labels", labeled))
              if name in args.stores}
    layouts = range(CALIBRATION_SEED_BASE, CALIBRATION_SEED_BASE + args.episodes)
    result = {"task": task, "seed": seed, "round": rounds, "episodes": args.episodes, "hidden": len(hidden),
              "model": model, "stores": {}}
    robot = make_robot(task, cfg)
    try:
        for name, store in stores.items():
            t = Timer()
            work = scratch / name
            work.mkdir(parents=True)
            (work / "text_cache").symlink_to(text_cache)
            rd = round_data(store.root, work, pretrained, cycle, rounds)
            bundles = {"filtered_bc": train_baseline(rd, work, "filtered_bc", cycle).bundle_path,
                       "recap_beta1": train_round(rd, work, cycle).bundle_path}
            scores = {p: outcome_summary(run_many(robot, layouts, load_runner(
                bundles[p], seed, 1.0 if p.startswith("recap") else None))) for p in POLICIES}
            result["stores"][name] = {"store_episodes": len(rd.data.episodes), "scores": scores}
            log.info("%s seed %d %s (%d episodes): %s (%s)", task, seed, name, len(rd.data.episodes),
                     ", ".join(f"{p} {100 * s['success_rate']:.0f}%" for p, s in scores.items()), t)
    finally:
        robot.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def render(pairs: list[dict], table: dict, args: argparse.Namespace) -> str:
    columns = [f"{s}_{p}" for s in args.stores for p in POLICIES]
    lines = [f"# The loop with {100 * args.hidden:.0f}% of the robot-run outcomes hidden (calibration layouts)", "",
             f"Progress-model labels where it is at least {args.min_confidence:g} sure; successes per policy "
             "pooled with the 95% Wilson interval.", "",
             "| pair | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for p in pairs:
        cells = [p["stores"][s]["scores"][q] for s in args.stores for q in POLICIES]
        lines.append(f"| {p['task']} seed {p['seed']} | " + " | ".join(f"{c['successes']}/{c['episodes']}"
                                                                      for c in cells) + " |")
    lines.append("| **pooled** | " + " | ".join(
        f"**{100 * table[c]['success_rate']:.1f}%** [{100 * table[c]['ci95'][0]:.0f}-{100 * table[c]['ci95'][1]:.0f}]"
        for c in columns) + " |")
    lines += ["", "The model on the hidden episodes (against their true outcomes):", "",
              "| pair | hidden | labeled (sure) | accuracy, all hidden | accuracy, labeled |", "|---|---|---|---|---|"]
    for p in pairs:
        m = p["model"]
        if not m["trained"]:
            lines.append(f"| {p['task']} seed {p['seed']} | {p['hidden']} | not trained: {m['reason']} | | |")
            continue
        acc = [("-" if a is None else f"{100 * a:.0f}%") for a in (m["accuracy_all"], m["accuracy_labeled"])]
        lines.append(f"| {p['task']} seed {p['seed']} | {m['hidden']} | {m['labeled']} | {acc[0]} | {acc[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = table_study_parser(__doc__, Path("/tmp/hidden_outcomes"))
    parser.add_argument("--hidden", type=float, default=0.5, help="share of robot-run episodes whose outcome is hidden")
    parser.add_argument("--min-confidence", type=float, default=0.9)
    parser.add_argument("--stores", default=",".join(STORES),
                        help=f"comma-separated, of {','.join(STORES)} (default all three; 'all' is the reference)")
    args = parser.parse_args(argv)
    args.stores = args.stores.split(",")
    if not set(args.stores) <= set(STORES) or len(set(args.stores)) != len(args.stores):
        parser.error(f"--stores {','.join(args.stores)}: each of {', '.join(STORES)} at most once")
    if not 0 < args.hidden < 1:
        parser.error(f"--hidden {args.hidden}: a share in (0, 1)")
    if not 0.5 <= args.min_confidence <= 1:
        parser.error(f"--min-confidence {args.min_confidence}: in [0.5, 1]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pairs = study_pairs(args, parser, lambda pair: set(args.stores) <= set(pair["stores"]),
                        partial(study_pair, args=args))
    table = {f"{s}_{p}": pooled([pair["stores"][s]["scores"][p] for pair in pairs])
             for s in args.stores for p in POLICIES}
    report = {"hidden": args.hidden, "min_confidence": args.min_confidence, "stores": args.stores,
              "layouts": f"calibration {CALIBRATION_SEED_BASE}+i, {args.episodes} per policy", "pooled": table,
              "pairs": [f"{p['task']} seed {p['seed']}" for p in pairs]}
    write_json_atomic(args.out / "results.json", report)
    (args.out / "results.md").write_text(render(pairs, table, args))
    print((args.out / "results.md").read_text())
    return report


if __name__ == "__main__":
    main()
