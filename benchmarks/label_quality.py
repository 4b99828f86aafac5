"""Label quality of each advantage estimator, threshold rule and value option on the same episodes,
measured before any evaluation episode is spent (issue 13: the labels decide).

    python benchmarks/label_quality.py --out benchmarks/results/label_quality      # 3 tasks, ~25 min on 2 cores
    python benchmarks/label_quality.py --quick --out /tmp/label_quality_quick       # a ~2 min smoke run

Per MetaWorld task, with the data path and training sizes of benchmarks/recap_metaworld.py (imported,
state observations, its seed-0 layouts, operator and cycle config):
  data   the scripted expert demonstrates `--demos` layouts; `pretrain` (V_pre + the BC policy) once,
         and a second V_pre with the TQL critic (that pretrain's policy trains 1 step: only its value
         is used); batch 1: `--rollouts` episodes of the BC bundle with the correcting operator (the
         benchmark's round 1); the store is copied (the round-1 store, for the warm start); batch 2:
         as many again by the same BC bundle (the benchmark's round 2 collects with RECAP's round-1
         policy: no policy is trained here).
  values on the full store (demos + both batches), for each of `--value-seeds` training seeds:
           default     context critic from V_pre, 2 folds (today)
           tql         TQL critic from its own V_pre
           ensemble3   3 members, own seeds and folds, mean
           warm_start  from the round-1 values (trained on the round-1 store, folds by episode hash)
           shared      also trained on the other tasks' stores (`--tasks`), in this task's units
  labels for every value, every estimator (N-step N = 1..80, N auto, MC, GAE lambda) and both threshold
         rules: `cycle.advantage.label_steps`, scored by `cycle.label_quality` on the autonomous steps.

Every option sees the same episodes, the same pretrained checkpoints and the same value step budget
per member. Outputs in --out: tasks/<task>.json per finished task (a rerun with the same settings
skips it: resumable per task), results.json (all tasks), results.md (tables), run.log. Stores and
checkpoints go to --work.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import recap_metaworld as bench  # the RECAP benchmark's data path (run from benchmarks/, as a script)

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.advantage import LabelConfig, cross_fitted_values, label_steps
from robot_runtime.improvement_loop.cycle.rounds import (
    CycleConfig,
    CycleResult,
    load_round,
    pretrain,
    result_path,
    shared_value_rows,
)
from robot_runtime.improvement_loop.metrics import calibration, explained_variance
from robot_runtime.improvement_loop.models.checkpoint import save_checkpoint
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator

log = bench.log
DEFAULT_TASKS = ("push-v3", "reach-v3", "pick-place-v3")
# reach-v3 is not in the RECAP benchmark. Measured (seed 0, 20 corrected BC rollouts, twice): 1-2 demonstrations
# 2-5/20 successful, 5 demonstrations 7/20 and 10/20, 10 demonstrations 9/20 and 12/20; 5 gives both outcomes.
DEFAULT_DEMOS = {**bench.DEFAULT_DEMOS, "reach-v3": 5}
VALUES = ("default", "tql", "ensemble3", "warm_start", "shared")
THRESHOLDS = ("fraction", "youden")
DEFAULT_ESTIMATE = "n_step=20"          # today's: one second at the benchmark's 20 Hz
ESTIMATES = {**{f"n_step={n}": LabelConfig(n_step=n) for n in (1, 5, 10, 20, 40, 80)},
             "n_step=auto": LabelConfig(n_step="auto"), "mc": LabelConfig(estimator="mc"),
             **{f"gae={lam}": LabelConfig(estimator="gae", gae_lambda=lam) for lam in (0.9, 0.95, 0.99)}}


@dataclass
class Settings:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seed: int = 0
    demos: dict | None = None
    demo_noise: float = 0.1
    rollouts: int = 40
    value_seeds: int = 2
    max_steps: int = 150
    out: Path = Path("benchmarks/results/label_quality")
    work: Path = Path("/tmp/label_quality")
    quick: bool = False

    def bench(self) -> bench.BenchConfig:
        return bench.BenchConfig(tasks=self.tasks, seeds=1, demos=self.demos, demo_noise=self.demo_noise,
                                 rollouts=self.rollouts, obs="state", max_steps=self.max_steps, quick=self.quick)

    def cycle(self) -> CycleConfig:
        return bench.cycle_config(self.bench(), self.seed)

    def data_fingerprint(self, task: str) -> dict:
        return json.loads(json.dumps({"task": task, "seed": self.seed, "demos": self.demos[task],
                                      "demo_noise": self.demo_noise, "rollouts": self.rollouts,
                                      "max_steps": self.max_steps, "executor": bench.EXECUTOR,
                                      "cycle": asdict(self.cycle())}))

    def fingerprint(self, task: str) -> dict:
        """What a task's figures depend on: its data, the other stores (shared value) and the options."""
        return {**self.data_fingerprint(task), "tasks": list(self.tasks), "value_seeds": self.value_seeds,
                "values": list(VALUES), "estimates": {k: asdict(v) for k, v in ESTIMATES.items()}}


def task_dirs(cfg: Settings, task: str) -> dict[str, Path]:
    root = cfg.work / task
    return {"root": root, "store": root / "episodes", "round1": root / "episodes_round1", "work": root / "work",
            "tql": root / "work_tql", "warm": root / "warm_start"}


def work_dir(path: Path, cfg: Settings) -> Path:
    """A cycle work directory sharing one instruction-embedding cache (one sentence-encoder load per run)."""
    path.mkdir(parents=True)
    (cfg.work / "text_cache").mkdir(parents=True, exist_ok=True)
    (path / "text_cache").symlink_to((cfg.work / "text_cache").resolve())
    return path


def build_data(task: str, cfg: Settings) -> dict:
    """Demonstrations, both pretrains, two batches of corrected BC rollouts; cached in --work."""
    dirs = task_dirs(cfg, task)
    marker = dirs["root"] / "data.json"
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] == cfg.data_fingerprint(task):
        log.info("%s: reusing the data in %s", task, dirs["root"])
        return json.loads(marker.read_text())["summary"]
    if dirs["root"].exists():
        shutil.rmtree(dirs["root"])
    dirs["root"].mkdir(parents=True)
    started, bcfg, cycle, seed = time.perf_counter(), cfg.bench(), cfg.cycle(), cfg.seed
    store, robot = EpisodeStore(dirs["store"]), bench.make_robot(task, bcfg)
    base = 100_000 * (seed + 1)
    try:
        demonstrator = ScriptedOperator(task, OperatorConfig(mode="demonstrate", action_noise=cfg.demo_noise,
                                                             seed=seed))
        demos = bench.run_many(robot, range(base, base + cfg.demos[task]), operator=demonstrator, store=store,
                               campaign="demonstrations")
        pretrained = pretrain(store.root, work_dir(dirs["work"], cfg), cycle)
        tql = replace(cycle, model_id=f"{cycle.model_id}-tql", policy=replace(cycle.policy, steps=1),
                      value=replace(cycle.value, net=replace(cycle.value.net, critic="tql")))
        pretrain(store.root, work_dir(dirs["tql"], cfg), tql)
        batches = []
        for k in (1, 2):
            corrector = ScriptedOperator(task, OperatorConfig(mode="correct", seed=seed * 100 + k))
            layouts = range(base + 1000 * k, base + 1000 * k + cfg.rollouts)
            batch = bench.run_many(robot, layouts, bench.load_runner(pretrained.bundle_path, seed), corrector, store,
                                   campaign=f"batch {k} rollouts")
            batches.append({"episodes": len(batch), "successes": sum(r.success for r in batch),
                            "without_help": sum(r.success and r.intervention_steps == 0 for r in batch),
                            "operator_steps": sum(r.intervention_steps for r in batch) / sum(r.steps for r in batch)})
            if k == 1:
                shutil.copytree(dirs["store"], dirs["round1"])
            log.info("%s batch %d: %d/%d successful (%d without help)", task, k, batches[-1]["successes"],
                     len(batch), batches[-1]["without_help"])
    finally:
        robot.close()
    summary = {"demos": {"episodes": len(demos), "successes": sum(d.success for d in demos)}, "batches": batches,
               "pretrain_value_explained_variance_in_sample": pretrained.metrics["value_explained_variance_in_sample"],
               "seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps({"fingerprint": cfg.data_fingerprint(task), "summary": summary}, indent=1))
    log.info("%s: data in %.0f s", task, summary["seconds"])
    return summary


def value_figures(returns: np.ndarray, values: np.ndarray, members: np.ndarray, seconds: float) -> dict:
    cal = calibration(values, returns)
    return {"explained_variance": explained_variance(returns, values), "ece": cal["ece"], "calibration": cal["bins"],
            "member_explained_variance": [explained_variance(returns, m) for m in members],
            "seconds": round(seconds, 1)}


def label_figures(metrics: dict) -> dict:
    q = metrics["label_quality"]
    task = next(iter(q["by_task"].values()))          # one task per store
    return {"advantage_auc": q["advantage_auc"], "indicator_auc": q["indicator_auc"], "takeover_auc": q["takeover_auc"],
            "positive_autonomous": task["positive_autonomous"], "positive_fraction": metrics["positive_fraction"],
            **({"n_step": metrics["n_step_by_task"]} if "n_step_by_task" in metrics else {}),
            **({"threshold_rule": metrics["threshold_by_task"]} if "threshold_by_task" in metrics else {})}


def evaluate_task(task: str, cfg: Settings) -> dict:
    """Every value option x estimator x threshold on the task's full store (see the module docstring)."""
    started, dirs, cycle = time.perf_counter(), task_dirs(cfg, task), cfg.cycle()
    pretrained = CycleResult.load(result_path(dirs["work"], 0))
    v_pre = pretrained.value_checkpoints[0]
    tql_v_pre = CycleResult.load(result_path(dirs["tql"], 0)).value_checkpoints[0]
    data, _, t, returns = load_round(dirs["store"], dirs["work"], pretrained, cycle)
    data1, _, t1, returns1 = load_round(dirs["round1"], dirs["work"], pretrained, cycle)
    others = tuple(str(task_dirs(cfg, other)["store"]) for other in cfg.tasks if other != task)
    shared = shared_value_rows(dirs["store"], dirs["work"], pretrained,
                               replace(cycle, labels=LabelConfig(value_stores=others))) if others else None
    warm = LabelConfig(value_init="previous")
    steps = {}
    figures = {"values": {v: [] for v in VALUES},
               "labels": {v: {e: {th: [] for th in THRESHOLDS} for e in ESTIMATES} for v in VALUES}}
    for value_seed in range(cfg.value_seeds):
        value_cfg = replace(cycle.value, seed=value_seed)
        _, _, round1_models, _ = cross_fitted_values(t1, data1, returns1, [v_pre] * warm.folds, value_cfg, warm)
        round1 = [str(save_checkpoint(dirs["warm"] / f"seed{value_seed}" / f"value_fold{k}.safetensors", model, {}))
                  for k, model in enumerate(round1_models)]
        options = {"default": (LabelConfig(), [v_pre] * 2, None), "tql": (LabelConfig(), [tql_v_pre] * 2, None),
                   "ensemble3": (LabelConfig(ensemble=3), [v_pre] * 6, None), "warm_start": (warm, round1, None),
                   "shared": (LabelConfig(), [v_pre] * 2, shared)}
        for name, (value_options, inits, extra) in options.items():
            if name == "shared" and extra is None:
                continue
            clock = time.perf_counter()
            values, members, _, _ = cross_fitted_values(t, data, returns, inits, value_cfg, value_options, extra)
            figures["values"][name].append(value_figures(returns, values, members, time.perf_counter() - clock))
            for estimate, label_options in ESTIMATES.items():
                for threshold in THRESHOLDS:
                    _, _, metrics = label_steps(data, returns, values, replace(label_options, threshold=threshold))
                    steps = next(iter(metrics["label_quality"]["by_task"].values()))["autonomous_steps"]
                    figures["labels"][name][estimate][threshold].append(label_figures(metrics))
            log.info("%s value seed %d, %s: EV %s, advantage AUC (%s) %.3f, (mc) %.3f", task, value_seed, name,
                     figures["values"][name][-1]["explained_variance"], DEFAULT_ESTIMATE,
                     figures["labels"][name][DEFAULT_ESTIMATE]["fraction"][-1]["advantage_auc"] or float("nan"),
                     figures["labels"][name]["mc"]["fraction"][-1]["advantage_auc"] or float("nan"))
    return {"fingerprint": cfg.fingerprint(task), "task": task,
            "data": {"episodes": len(data.episodes), "steps": len(data),
                     "shared_rows": 0 if shared is None else len(shared[1]), "autonomous_steps": steps},
            **figures, "seconds": round(time.perf_counter() - started, 1)}


def mean_std(xs: list) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    return (float(np.mean(xs)), float(np.std(xs))) if xs else (float("nan"), float("nan"))


def cell(xs: list) -> str:
    m, s = mean_std(xs)
    return "-" if np.isnan(m) else f"{m:.3f} ± {s:.3f}"


def summary_table(results: dict) -> dict:
    """Per (value, estimate, threshold): each figure's mean over value seeds, then over tasks."""
    out = {}
    for value in VALUES:
        for estimate in ESTIMATES:
            for threshold in THRESHOLDS:
                per_task = {key: [mean_std([r[key] for r in res["labels"][value][estimate][threshold]])[0]
                                  for res in results.values() if res["labels"][value][estimate][threshold]]
                            for key in ("advantage_auc", "indicator_auc", "takeover_auc")}
                if per_task["advantage_auc"]:
                    out[f"{value} | {estimate} | {threshold}"] = {k: float(np.nanmean(v)) for k, v in per_task.items()}
    return out


def render(results: dict, data: dict, cfg: Settings, wall: float) -> str:
    compute = sum(r["seconds"] for r in results.values()) + sum(d["seconds"] for d in data.values())
    lines = ["# Label quality per estimator, threshold and value (MetaWorld, state observations)", "",
             f"{len(results)} task(s), benchmark seed {cfg.seed}, {cfg.value_seeds} value training seed(s) "
             f"(mean ± std over them); {cfg.rollouts} + {cfg.rollouts} corrected rollouts of the BC policy per task. "
             f"Figures on the policy's own (autonomous) steps of the full store, every step valued out of fold. "
             f"Compute {compute / 60:.1f} min summed over tasks ({wall / 60:.1f} min in the invocation that "
             "wrote this).", "",
             "- advantage AUC: P(A of a step of a successful episode > A of a step of a failed one)",
             "- indicator AUC: the same for the binary label, = (TPR + TNR) / 2",
             "- takeover AUC: P(A of another step > A of a step in the 1 s before an operator takeover); "
             "needs no outcome, so it is not maximized by copying the outcome", "",
             "## Data", "", "| task | demos ok | batch 1 ok (no help) | batch 2 ok (no help) | episodes | steps | "
             "autonomous steps: success / failure / before takeover |", "|---|---|---|---|---|---|---|"]
    for task, res in results.items():
        d, steps = data[task], res["data"]["autonomous_steps"]
        b1, b2 = d["batches"]
        lines.append(f"| {task} | {d['demos']['successes']}/{d['demos']['episodes']} | {b1['successes']} "
                     f"({b1['without_help']}) / {b1['episodes']} | {b2['successes']} ({b2['without_help']}) / "
                     f"{b2['episodes']} | {res['data']['episodes']} | {res['data']['steps']} | {steps['success']} / "
                     f"{steps['failure']} / {steps['before_takeover']} |")
    lines += ["", "## Values (advantage AUC and indicator AUC with today's estimator, n_step=20, fraction 0.4)", "",
              "| task | value | EV out of fold | ECE | advantage AUC | indicator AUC | takeover AUC | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for task, res in results.items():
        for value in VALUES:
            vs, ls = res["values"][value], res["labels"][value][DEFAULT_ESTIMATE]["fraction"]
            if vs:
                lines.append(f"| {task} | {value} | {cell([v['explained_variance'] for v in vs])} | "
                             f"{cell([v['ece'] for v in vs])} | {cell([r['advantage_auc'] for r in ls])} | "
                             f"{cell([r['indicator_auc'] for r in ls])} | {cell([r['takeover_auc'] for r in ls])} | "
                             f"{np.mean([v['seconds'] for v in vs]):.0f} |")
    lines += ["", "## Estimators and thresholds (value: default)", "",
              "| task | estimator | advantage AUC | indicator AUC, fraction | indicator AUC, youden | takeover AUC | "
              "positive success / failure, fraction | positive success / failure, youden |",
              "|---|---|---|---|---|---|---|---|"]

    def share(rows: list, outcome: str) -> float:
        return mean_std([r["positive_autonomous"].get(outcome) for r in rows])[0]

    for task, res in results.items():
        for estimate in ESTIMATES:
            f, y = (res["labels"]["default"][estimate][th] for th in THRESHOLDS)
            lines.append(f"| {task} | {estimate} | {cell([r['advantage_auc'] for r in f])} | "
                         f"{cell([r['indicator_auc'] for r in f])} | {cell([r['indicator_auc'] for r in y])} | "
                         f"{cell([r['takeover_auc'] for r in f])} | "
                         f"{share(f, 'success'):.2f} / {share(f, 'failure'):.2f} | "
                         f"{share(y, 'success'):.2f} / {share(y, 'failure'):.2f} |")
    table = summary_table(results)
    lines += ["", "## Every option, averaged over tasks (best indicator AUC first)", "",
              "| value | estimator | threshold | advantage AUC | indicator AUC | takeover AUC |",
              "|---|---|---|---|---|---|"]
    for key, row in sorted(table.items(), key=lambda kv: -kv[1]["indicator_auc"]):
        lines.append(f"| {key} | {row['advantage_auc']:.3f} | {row['indicator_auc']:.3f} | {row['takeover_auc']:.3f} |")
    lines += ["", "## Settings", "", "```", json.dumps({k: str(v) if isinstance(v, Path) else v
                                                        for k, v in asdict(cfg).items()}, indent=1, default=str),
              json.dumps({"cycle": asdict(cfg.cycle()), "code": bench.code_version()}, indent=1), "```", ""]
    return "\n".join(lines)


def run(cfg: Settings) -> dict:
    started = time.perf_counter()
    (cfg.out / "tasks").mkdir(parents=True, exist_ok=True)
    done = {}
    for task in cfg.tasks:
        path = cfg.out / "tasks" / f"{task}.json"
        fingerprint = json.loads(json.dumps(cfg.fingerprint(task)))
        if path.is_file() and json.loads(path.read_text())["fingerprint"] == fingerprint:
            log.info("%s: reusing %s", task, path)
            done[task] = json.loads(path.read_text())
    # Every store is needed while any task is left: the shared value of one task trains on the others'.
    data = {task: build_data(task, cfg) for task in cfg.tasks} if len(done) < len(cfg.tasks) else \
        {task: done[task]["data_summary"] for task in cfg.tasks}
    results = {}
    for task in cfg.tasks:
        if task not in done:
            done[task] = {**evaluate_task(task, cfg), "data_summary": data[task]}
            (cfg.out / "tasks" / f"{task}.json").write_text(json.dumps(done[task], indent=1))
        results[task] = done[task]
    wall = time.perf_counter() - started
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              "cycle": asdict(cfg.cycle()), "code": bench.code_version(), "summary": summary_table(results),
              "tasks": {task: {k: v for k, v in res.items() if k != "fingerprint"} for task, res in results.items()},
              "wall_seconds": round(wall, 1)}
    (cfg.out / "results.json").write_text(json.dumps(report, indent=1))
    (cfg.out / "results.md").write_text(render(results, data, cfg, wall))
    log.info("wrote %s (%.1f min)", cfg.out, wall / 60)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated MetaWorld tasks (default {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--seed", type=int, default=0, help="the benchmark seed: layouts, operator noise, V_pre")
    parser.add_argument("--demos", default=None, help="demonstrations: N, or task=N,task=N (default per task)")
    parser.add_argument("--rollouts", type=int, default=None, help="corrected BC rollouts per batch (2 batches)")
    parser.add_argument("--value-seeds", type=int, default=None, help="value training seeds per option (default 2)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="stores and checkpoints (default /tmp/label_quality)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: push-v3, 3 demos, 4 rollouts, 1 seed")
    args = parser.parse_args(argv)
    q = args.quick
    tasks = tuple(args.tasks.split(",")) if args.tasks else (("push-v3", "reach-v3") if q else DEFAULT_TASKS)
    text = args.demos or ("3" if q else None)
    demos = bench.parse_demos(text, tasks)            # the benchmark's syntax and defaults, then ours for reach-v3
    named = tasks if text and "=" not in text else [item.split("=")[0].strip() for item in (text or "").split(",")]
    demos.update({t: DEFAULT_DEMOS[t] for t in tasks if t in DEFAULT_DEMOS and t not in named})
    cfg = Settings(tasks=tasks, seed=args.seed, demos=demos, rollouts=args.rollouts or (4 if q else 40),
                   value_seeds=args.value_seeds or (1 if q else Settings.value_seeds),
                   max_steps=80 if q else Settings.max_steps, out=args.out,
                   work=args.work or Path(f"/tmp/label_quality{'_quick' if q else ''}"), quick=q)
    cfg.out.mkdir(parents=True, exist_ok=True)
    bench.setup_logging(cfg.out / "run.log")
    log.info("settings: %s", {k: str(v) for k, v in asdict(cfg).items()})
    report = run(cfg)
    print((cfg.out / "results.md").read_text())
    return report


if __name__ == "__main__":
    main()
