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
successes under another task's instruction, the share called a success. MetaWorld's own dense progress is
not recorded in the stores, so the agreement with it is not measured.

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
from robot_runtime.improvement_loop.metrics import rank_auc, wilson_interval
from robot_runtime.improvement_loop.models.progress import ProgressConfig, ProgressRow, ProgressScorer, train_progress

DEFAULT_STORES = "/tmp/recap_table_work/*/seed*/demos*/episodes"
SETTINGS = {"with_negatives": True, "labeled_only": False}  # name -> generated negatives in training
NOT_MEASURED = ("MetaWorld's dense progress is not recorded in the episode stores, so agreement with it is "
                "not measured; only the recorded outcomes and the generated prefixes are.")


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


def read_stores(paths: list[Path]) -> tuple[list, dict, dict]:
    """The usable episodes of every store (one state layout: the first store's), skip counts, and per store
    its episode count (None: not a store)."""
    trajectories, skipped, stores, names = [], {}, {}, None
    for path in paths:
        try:
            found, skips = read_trajectories(EpisodeStore(path, create=False), names)
        except EpisodeError as err:
            logging.warning("%s", err)
            stores[str(path)] = None
            continue
        names = names or (found[0].state_names if found else None)
        trajectories += found
        stores[str(path)] = len(found)
        for reason, n in skips.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return trajectories, skipped, stores


def report(results: dict) -> str:
    counts = results["episodes"]
    lines = ["# Progress reward model: held-out agreement with the recorded outcome", "",
             f"{counts['train']} training / {counts['held_out']} held-out labeled episodes of "
             f"{len(counts['by_task'])} tasks from {len(results['stores'])} stores; skipped {results['skipped']}.",
             NOT_MEASURED, "",
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
                  f"{100 * results['majority_baseline_accuracy']:.1f}%. Total {results['seconds']:.0f} s."]
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
    trajectories, skipped, per_store = read_stores(stores)
    labeled = [t for t in trajectories if t.trusted]
    if len(labeled) < 2:
        parser.error(f"{len(labeled)} labeled episodes in the stores; the benchmark needs at least 2")
    train, held_out = split(labeled, args.train_fraction, args.seed)
    if not held_out:
        parser.error("no task has two labeled episodes: nothing to hold out")
    embedder = TextEmbedder(args.text_cache)
    evaluation_rows = training_rows(held_out, NegativesConfig(seed=args.seed + 1))
    model_cfg = ProgressConfig(samples=args.samples, epochs=args.epochs, seed=args.seed)
    settings = {}
    for name, negatives in SETTINGS.items():
        negatives_cfg = NegativesConfig(seed=args.seed) if negatives else NegativesConfig(False, ())
        scorer, fit = train_progress(training_rows(train, negatives_cfg), embedder, labeled[0].state_names,
                                    model_cfg)
        settings[name] = {"fit": fit, "held_out": evaluate(scorer, evaluation_rows, embedder)}
    majority = np.mean([t.outcome == "success" for t in train]) >= 0.5
    results = {
        "stores": per_store, "skipped": skipped, "not_measured": NOT_MEASURED,
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
