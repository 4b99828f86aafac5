"""How well does the progress reward model judge episodes it never saw? Offline, on recorded stores.

    python benchmarks/progress_reward.py                      # the learning benchmark's stores (below)
    python benchmarks/progress_reward.py --stores S1 S2 ... --out /tmp/progress_reward

The stores' labeled episodes (recorded outcome or an operator's label) are pooled across tasks and split by
episode, per task, `--train-fraction` to train (seeded). The model (models/progress.py) is trained on the
training episodes with RoboReward's generated negatives (counterfactual instructions, prefixes of
successes) and, as the ablation, on the training episodes alone. On the held-out episodes: success
accuracy (95% Wilson interval), AUC of the success probability, MAE of the 1-5 progress against the outcome
(5 / 1, or an operator's failure progress) and the accuracy of "progress >= 4" as success; on the held-out
successes' prefixes, MAE against their generated progress and the share called a success; on the held-out
successes under another task's instruction, the share called a success. Against MetaWorld's own progress
(its shaped reward after an episode's last step, 0-10 with 10 at the goal; replayed from the episode's
recorded layout and actions, which MuJoCo reproduces exactly, as the stores do not keep it): the rank
correlation with the model's progress over all held-out episodes and over the failures alone (where the
outcome says nothing), and the MAE against it on the 1-5 scale (1 + 4 * reward / 10); the outcome alone
(5 or 1) is the reference.

Default stores: the learning benchmark's (benchmarks/recap_metaworld.py --work /tmp/recap_table_work), one
per (task, seed): demonstrations plus the rollouts of its rounds. Writes --out/results.json and results.md.
"""
from __future__ import annotations

import argparse
import glob
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from robot_runtime.episode import EpisodeError, EpisodeStore
from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.cycle.progress_labels import NegativesConfig, read_trajectories, training_rows
from robot_runtime.improvement_loop.data.text import TextEmbedder
from robot_runtime.improvement_loop.metrics import rank_auc, spearman, wilson_interval
from robot_runtime.improvement_loop.models.progress import ProgressConfig, ProgressRow, ProgressScorer, train_progress
from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig

DEFAULT_STORES = "/tmp/recap_table_work/*/seed*/demos*/episodes"
SETTINGS = {"with_negatives": True, "labeled_only": False}  # name -> generated negatives in training
MAX_REWARD = 10.0   # MetaWorld v3's shaped reward at the goal


def split(trajectories: list, fraction: float, seed: int) -> tuple[list, list]:
    """Per task, a seeded `fraction` of the episodes to train (at least one, and one held out when there are
    two or more), the rest held out."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for task in sorted({t.task for t in trajectories}):
        mine = [t for t in trajectories if t.task == task]
        order = rng.permutation(len(mine))
        n = min(max(1, round(fraction * len(mine))), max(1, len(mine) - 1))
        train += [mine[i] for i in order[:n]]
        held_out += [mine[i] for i in order[n:]]
    return train, held_out


def evaluate(scorer: ProgressScorer, rows: list[ProgressRow], embedder: TextEmbedder) -> dict:
    """The held-out figures (module docstring) of `scorer` on `rows`, overall and per task."""
    predictions = scorer.predict([r.states for r in rows], [r.instruction for r in rows], embedder)
    figures = {}
    for kind in ("episode", "prefix", "counterfactual"):
        picked = [(r, p) for r, p in zip(rows, predictions) if r.kind == kind]
        figures[kind] = _figures(picked)
        if kind == "episode":
            figures[kind]["by_task"] = {task: _figures([(r, p) for r, p in picked if r.instruction == task])
                                        for task in sorted({r.instruction for r, _ in picked})}
    return figures


def _figures(picked: list) -> dict:
    if not picked:
        return {"n": 0}
    truth = np.array([r.success for r, _ in picked])
    probability = np.array([p.success_probability for _, p in picked])
    called = probability >= 0.5
    progress = np.array([p.progress for _, p in picked])
    correct = int(np.sum(called == truth))
    return {"n": len(picked), "successes": int(truth.sum()),
            "success_accuracy": correct / len(picked), "success_accuracy_ci95": wilson_interval(correct, len(picked)),
            "called_success": float(called.mean()), "auc": rank_auc(probability, truth),
            "progress_mae": float(np.mean(np.abs(progress - np.array([r.progress for r, _ in picked])))),
            "progress_ge4_accuracy": float(np.mean((progress >= 4) == truth))}


def metaworld_progress(trajectories: list, homes: dict[str, EpisodeStore]) -> tuple[dict[str, float], dict]:
    """MetaWorld's shaped reward after each episode's last step (episode id -> 0-10), replayed from its
    recorded layout seed and actions; and counts of the episodes left out (no MetaWorld layout recorded, or
    a replay whose states left the recorded ones)."""
    rewards, left_out, robots = {}, {"not_metaworld": 0, "replay_diverged": 0}, {}
    try:
        for t in trajectories:
            episode = homes[t.episode_id].open(t.episode_id)
            extra = episode.meta.get("extra", {})
            if "env_name" not in extra or "seed" not in extra:
                left_out["not_metaworld"] += 1
                continue
            name = extra["env_name"]
            if name not in robots:
                robots[name] = MetaWorldRobot(SimConfig(env_name=name, render=False, max_steps=10 ** 6))
            robot, actions = robots[name], episode.array("action")
            state = robot.reset(int(extra["seed"])).state
            for recorded, action in zip(t.states, actions):
                if not np.allclose(state, recorded, atol=1e-4):
                    left_out["replay_diverged"] += 1
                    break
                state = robot.step(action).state
            else:
                rewards[t.episode_id] = robot.reward
    finally:
        for robot in robots.values():
            robot.close()
    return rewards, left_out


def agreement(scorer: ProgressScorer | None, held_out: list, rewards: dict[str, float],
              embedder: TextEmbedder) -> dict:
    """The model's progress (or, with no scorer, the outcome alone: 5 or 1) against MetaWorld's on the
    held-out episodes that replayed: rank correlation and MAE on the 1-5 scale, all and failures only."""
    picked = [t for t in held_out if t.episode_id in rewards]
    if not picked:
        return {"n": 0}
    if scorer is None:
        progress = np.array([5.0 if t.outcome == "success" else 1.0 for t in picked])
    else:
        progress = np.array([p.progress for p in scorer.predict([t.states for t in picked],
                                                                [t.task for t in picked], embedder)], dtype=float)
    theirs = np.array([rewards[t.episode_id] for t in picked])
    scaled = 1 + 4 * np.clip(theirs / MAX_REWARD, 0, 1)
    failed = np.array([t.outcome != "success" for t in picked])
    return {"n": len(picked), "failures": int(failed.sum()), "spearman": spearman(progress, theirs),
            "spearman_failures": spearman(progress[failed], theirs[failed]),
            "mae": float(np.mean(np.abs(progress - scaled))),
            "mae_failures": float(np.mean(np.abs(progress - scaled)[failed])) if failed.any() else None}


def read_stores(paths: list[Path]) -> tuple[list, dict, dict, dict]:
    """The usable episodes of every store (one state layout: the first store's), skip counts, per store
    its episode count (None: not a store), and each episode's store."""
    trajectories, skipped, stores, names, homes = [], {}, {}, None, {}
    for path in paths:
        try:
            store = EpisodeStore(path, create=False)
            found, skips = read_trajectories(store, names)
        except EpisodeError as err:
            logging.warning("%s", err)
            stores[str(path)] = None
            continue
        names = names or (found[0].state_names if found else None)
        trajectories += found
        homes.update((t.episode_id, store) for t in found)
        stores[str(path)] = len(found)
        for reason, n in skips.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return trajectories, skipped, stores, homes


def report(results: dict) -> str:
    counts = results["episodes"]
    lines = ["# Progress reward model: held-out agreement with the recorded outcome", "",
             f"{counts['train']} training / {counts['held_out']} held-out labeled episodes of "
             f"{len(counts['by_task'])} tasks from {len(results['stores'])} stores; skipped {results['skipped']}.",
             "",
             "| setting | train rows | train s | success acc [95%] | AUC | progress MAE | >=4 acc | "
             "prefix MAE | prefix called success | counterfactual called success |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in results["settings"].items():
        e, p, c = run["held_out"]["episode"], run["held_out"]["prefix"], run["held_out"]["counterfactual"]
        low, high = e["success_accuracy_ci95"]
        cells = [name, sum(run["fit"]["rows"].values()), f"{run['fit']['seconds']:.1f}",
                 f"{_pct(e['success_accuracy'])} [{100 * low:.0f}-{100 * high:.0f}]", _num(e["auc"], 3),
                 _num(e["progress_mae"]), _pct(e["progress_ge4_accuracy"]), _num(p.get("progress_mae")),
                 _pct(p.get("called_success")), _pct(c.get("called_success"))]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", f"Majority-outcome baseline accuracy on the held-out episodes: "
                  f"{100 * results['majority_baseline_accuracy']:.1f}%.", "",
              "Against MetaWorld's own progress (its shaped reward after the last step, replayed; "
              f"left out: {results['metaworld_left_out']}): rank correlation and MAE on the 1-5 scale.", "",
              "| progress from | episodes | Spearman | Spearman, failures only | MAE | MAE, failures only |",
              "|---|---|---|---|---|---|"]
    sources = {**{name: run["metaworld"] for name, run in results["settings"].items()},
               "outcome alone (5 / 1)": results["metaworld_outcome_only"]}
    for name, a in sources.items():
        if a["n"]:
            lines.append(f"| {name} | {a['n']} ({a['failures']} failed) | {_num(a['spearman'])} | "
                         f"{_num(a['spearman_failures'])} | {_num(a['mae'])} | {_num(a['mae_failures'])} |")
    lines += ["", f"Total {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", type=Path, default=None,
                        help=f"episode store directories (default: {DEFAULT_STORES})")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/progress_reward"))
    parser.add_argument("--train-fraction", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=ProgressConfig.epochs)
    parser.add_argument("--samples", type=int, default=ProgressConfig.samples, help="steps read per trajectory")
    parser.add_argument("--text-cache", type=Path, default=Path("/tmp/progress_reward/text_cache"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.train_fraction < 1:
        parser.error("--train-fraction must be between 0 and 1")
    stores = args.stores or [Path(p) for p in sorted(glob.glob(DEFAULT_STORES))]
    if not stores:
        parser.error(f"no stores given and none at {DEFAULT_STORES}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    trajectories, skipped, per_store, homes = read_stores(stores)
    labeled = [t for t in trajectories if t.trusted]
    if len(labeled) < 2:
        parser.error(f"{len(labeled)} labeled episodes in the stores; the benchmark needs at least 2")
    train, held_out = split(labeled, args.train_fraction, args.seed)
    if not held_out:
        parser.error("no task has two labeled episodes: nothing to hold out")
    embedder = TextEmbedder(args.text_cache)
    rewards, left_out = metaworld_progress(held_out, homes)
    evaluation_rows = training_rows(held_out, NegativesConfig(seed=args.seed + 1))
    model_cfg = ProgressConfig(samples=args.samples, epochs=args.epochs, seed=args.seed)
    settings = {}
    for name, negatives in SETTINGS.items():
        negatives_cfg = NegativesConfig(seed=args.seed) if negatives else NegativesConfig(False, ())
        scorer, fit = train_progress(training_rows(train, negatives_cfg), embedder, labeled[0].state_names,
                                    model_cfg)
        settings[name] = {"fit": fit, "held_out": evaluate(scorer, evaluation_rows, embedder),
                          "metaworld": agreement(scorer, held_out, rewards, embedder)}
    majority = np.mean([t.outcome == "success" for t in train]) >= 0.5
    results = {
        "stores": per_store, "skipped": skipped, "metaworld_left_out": left_out,
        "metaworld_outcome_only": agreement(None, held_out, rewards, embedder),
        "episodes": {"train": len(train), "held_out": len(held_out), "by_task": {
            task: {"train": sum(t.task == task for t in train), "held_out": sum(t.task == task for t in held_out),
                   "successes": sum(t.task == task and t.outcome == "success" for t in labeled)}
            for task in sorted({t.task for t in labeled})}},
        "config": {"train_fraction": args.train_fraction, "seed": args.seed, "model": asdict(model_cfg),
                   "negatives": asdict(NegativesConfig(seed=args.seed)), "threads": args.threads},
        "settings": settings,
        "majority_baseline_accuracy": float(np.mean([(t.outcome == "success") == majority for t in held_out])),
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    (args.out / "results.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
