"""RECAP against offline baselines on MetaWorld, in-process, over rounds of deploy -> correct -> retrain.

    python benchmarks/recap_metaworld.py --jobs 2 --out benchmarks/results/recap_table      # the default table
    python benchmarks/recap_metaworld.py --tasks push-v3,hammer-v3 --seeds 1 --demos 6 --out /tmp/two_tasks
    python benchmarks/recap_metaworld.py --obs pixels --tasks push-v3 --seeds 1 --out benchmarks/results/recap_pixels
    python benchmarks/recap_metaworld.py --quick --out /tmp/recap_quick                 # a ~1 min smoke run
    python benchmarks/recap_metaworld.py --obs pixels --rounds 0 --image-codec h264:26 --out /tmp/bc_h264  # round-0 BC

`--tasks` takes any MetaWorld v3 task with a scripted expert (metaworld.policies.ENV_POLICY_MAP).

Per task and seed:
  round 0  the scripted expert demonstrates `--demos` layouts; `pretrain` trains V_pre and the
           behaviour-cloned policy. Its evaluation is every method's round 0 (one shared start).
           `--demos auto` (the default) chooses the count per task and seed: see `choose_demos`.
  round k  the collecting policy (round 0's BC policy for round 1, then the previous round's RECAP
           policy at beta = 1) runs `--rollouts` autonomous episodes on fresh layouts while the
           scripted operator corrects stalls (OperatorConfig mode 'correct'); the episodes join the
           store. `cycle.round_data` loads the whole store and computes the round's cross-fitted values,
           advantages and indicators once (the `--labels` recipe); from the same pretrained checkpoint,
           with the same policy step budget, on the same rows, we train
             recap        `cycle.train_round`: advantage-conditioned policy (evaluated at beta 1 and 2)
             bc           every step
             filtered_bc  steps of successful episodes + operator steps
             awr          rows drawn with weight exp(standardized advantage), clipped at 20
           (the baselines are `improvement_loop.baselines`); with `--guided K` the cycle also trains
           its chunk critic and `recap_guided` is the RECAP bundle (beta 1) executing the best of K
           sampled chunks as the critic ranks them (value-guided execution, runtime/guidance.py).
  `--rounds 0` stops after round 0 (the BC policy's evaluation).
  every policy is evaluated without the operator on the same `--eval-episodes` held-out layouts
  (seeds EVAL_SEED_BASE + i: identical for every method, round and training seed, never used for
  demonstrations, rollouts or the demonstration search).

Figures per point: success rate (95% Wilson interval), mean steps to success, and successes per hour
of robot time (successes / the simulated time of all evaluation episodes, failures running to
`--max-steps`: pi*0.6's throughput). Each round also reports its label quality (cycle.label_quality:
outcome AUC of the advantage and of the indicator on autonomous steps, takeover AUC, out-of-fold EV,
calibration error).

Everything runs through the product's code: `MetaWorldRobot`, `ScriptedOperator`, `run_episode`
(PolicyRunner on ONNX Runtime, executed by the robot's PolicyExecutor in synchronous mode with
policy_node's execution horizon, blending and real-time-chunking prefix; EpisodeWriter into a Zarr
EpisodeStore, its cameras stored with `--image-codec CODEC[:QUALITY]` (default lossless), so that
training reads the frames back through that codec as it would from a robot's recorder), `pretrain` /
`round_data` / `train_round` and the exported bundles. No DDS: the simulator steps as fast as it can.

Observations: `--obs state` gives the policy and value the 21 named state entries (hand, gripper,
object poses, goal) and no cameras; `--obs pixels` adds the product's two 96x96 cameras (corner,
gripperPOV) with the default, camera-sized networks. The recipe does not depend on the observation;
state is what makes the table fit on 2 cores.

Decisions (also printed in results.md):
  - the default table: push-v3, pick-place-v3, coffee-push-v3 (the earlier table) plus window-open-v3
    (an articulated object) and button-press-topdown-v3 (a press), chosen before any of their
    evaluation episodes because their experts succeed 10/10 within 150 steps and they are neither
    pushing nor pick-and-place; `--demos auto` then sets how hard each one starts;
  - `--labels candidate` (the default) is the recipe benchmarks/results/label_quality/analysis.md
    recommends, fixed before any evaluation episode: GAE(lambda 0.95), Youden thresholds, a 3-member
    value ensemble (the shared value needs every task's rounds in step, which parallel (task, seed)
    pairs are not); `--labels today` is N-step N = 1 s with the fraction rule, the earlier table's;
  - the policy that collects round k's data is RECAP(beta=1) of round k-1 (BC for round 1), so
    every method of a round trains on exactly the same store;
  - RECAP in the target means RECAP at beta = 1 (the paper's default); beta = 2 is reported too;
  - seeds vary the demonstration and rollout layouts, the operator noise and the training seeds;
  - training uses one torch thread per (task, seed): on this 2-core machine a second thread gains
    little for these small networks, and whenever another process competes for the cores two
    threads spin and a policy step went from 22 ms to 2.6 s (measured); `--jobs` runs pairs in
    parallel processes instead;
  - state networks: NetConfig(d_model=64, heads=4, trunk_layers=1, head_layers=2), batch 64,
    value 1,500 / policy 2,000 steps (~5 / ~24 ms a step on one core); every method of a round
    gets the same policy budget, from the same pretrained checkpoint;
  - the last round also trains `positive_bc` (BC on the rows RECAP labels positive), a diagnostic
    that separates the labels from the conditioning; it is not a baseline and not in the target.

Resuming: each finished (task, seed) is written to --out/runs/<task>_seed<seed>.json with the
fingerprint of the settings it depends on; a rerun with the same settings skips it (commit --out and
the run resumes on another machine), and results.json / results.md are rewritten from every finished
pair after each one lands (a partial table says which pairs are missing). A pair killed midway leaves
no result file and restarts from scratch (its --work directory is cleared). Episode stores,
checkpoints and bundles go to --work (default under /tmp), never into --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from robot_runtime.capture.codecs import CameraCodec, CodecError, parse_codec_choices
from robot_runtime.episode import EpisodeStore
from robot_runtime.files import UnsafeNameError, check_name, write_json_atomic
from robot_runtime.improvement_loop.cycle.advantage import LabelConfig
from robot_runtime.improvement_loop.cycle.baselines import DIAGNOSTICS, train_baseline
from robot_runtime.improvement_loop.cycle.baselines import METHODS as BASELINES
from robot_runtime.improvement_loop.cycle.rounds import CycleConfig, CycleResult, pretrain, round_data, train_round
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, summarize, wilson_interval
from robot_runtime.improvement_loop.models.layers import NetConfig
from robot_runtime.improvement_loop.recap import POSITIVE
from robot_runtime.improvement_loop.training.posterior import PosteriorConfig
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig
from robot_runtime.runtime.executor import PolicyExecutor
from robot_runtime.runtime.guidance import MAX_CANDIDATES, ValueGuidance
from robot_runtime.runtime.policy import PolicyRunner
from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator
from robot_runtime.sim.rollout import RolloutResult, run_episode

log = logging.getLogger("recap_bench")

DEFAULT_TASKS = ("push-v3", "pick-place-v3", "coffee-push-v3", "window-open-v3", "button-press-topdown-v3")
# Fixed counts measured for the earlier 3-task table (round-0 BC 20-60 % with state observations); with
# `--demos auto` they are where the search starts.
DEFAULT_DEMOS = {"push-v3": 6, "pick-place-v3": 8, "coffee-push-v3": 3}
START_DEMOS = 5                     # where the search starts for other tasks
METHODS = ("bc", "filtered_bc", "awr", "recap_beta1", "recap_beta2")
EVAL_SEED_BASE = 900_000            # held-out layouts; training layouts are below 100_000 * (seeds + 1)
CALIBRATION_SEED_BASE = 950_000     # the demonstration search's layouts: disjoint from training and evaluation
MAX_SEEDS = 8                       # training layouts of seed 8 would start at 900_000
CONTROL_RATE_HZ = 20.0
# How chunks are executed; part of a cached result's fingerprint (results from another executor are not reused).
EXECUTOR = "PolicyExecutor(realtime=False): policy_node's default execution horizon and blend steps"
# CycleConfig fields added after results were committed, at the value that changes nothing: left out of
# the fingerprint, so those results stay valid.
NEUTRAL_CYCLE_FIELDS = {"chunk_critic": False, "positive_share": None, "indicators_from_null": False,
                        "method": "recap", "mixture": {"sources": (), "tasks": ()},
                        "postbc": None}
RECIPES = {
    "today": LabelConfig(),
    "candidate": LabelConfig(estimator="gae", gae_lambda=0.95, threshold="youden", ensemble=3),
    # The filtered rows as the indicator; the value (the candidate's) still makes AWR's advantages.
    "outcome": LabelConfig(estimator="gae", gae_lambda=0.95, threshold="outcome", ensemble=3),
}


class BenchError(ValueError):
    """Settings the benchmark cannot run with; the message says what to change."""


@dataclass(frozen=True)
class DemoSearch:
    """`--demos auto`: the demonstration count whose round-0 BC succeeds in `band` on calibration layouts."""

    band: tuple[float, float] = (0.2, 0.6)
    episodes: int = 20              # calibration layouts (CALIBRATION_SEED_BASE + i)
    tries: int = 4                  # at most this many pretrains per (task, seed): the search's cost cap
    max_demos: int = 48


@dataclass
class BenchConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    rounds: int = 3
    seeds: int = 3
    eval_episodes: int = 50
    demos: dict[str, int] | str = field(default_factory=lambda: dict(DEFAULT_DEMOS))   # or "auto"
    demo_search: DemoSearch = field(default_factory=DemoSearch)
    demo_noise: float = 0.1
    rollouts: int = 40
    obs: str = "state"
    max_steps: int = 150
    out: Path = Path("benchmarks/results/recap_state")
    work: Path = Path("/tmp/recap_metaworld")
    quick: bool = False
    policy_steps: int | None = None
    value_steps: int | None = None
    labels: str = "today"           # a RECIPES key (the cycle's default recipe unless named)
    jobs: int = 1
    guided: int = 0                 # K > 1: also evaluate RECAP with value-guided execution over K candidates
    positive_share: float | None = None     # CycleConfig.positive_share (None: uniform rows, the paper)
    indicators_from_null: bool = False      # CycleConfig.indicators_from_null
    postbc_alpha: float = 0.0               # > 0: the round-0 policy is PostBC's (10 members) at this noise weight
    corrections: bool = True        # False: rounds collect autonomous episodes only (no operator)
    diagnostics: bool = True        # last round only: BC on RECAP's positive rows (labels without conditioning)
    image_codec: CameraCodec = field(default_factory=CameraCodec)   # how the store keeps the cameras' frames

    def demos_for(self, task: str) -> int | dict:
        """The fixed count, or the search's settings and start."""
        if self.demos == "auto":
            return {"auto": asdict(self.demo_search), "start": DEFAULT_DEMOS.get(task, START_DEMOS)}
        return self.demos.get(task, START_DEMOS)

    def fingerprint(self, task: str) -> dict:
        """What a finished (task, seed) result depends on."""
        return json.loads(json.dumps({
            "task": task, "rounds": self.rounds, "eval_episodes": self.eval_episodes,
            "demos": self.demos_for(task), "demo_noise": self.demo_noise, "rollouts": self.rollouts,
            "obs": self.obs, "max_steps": self.max_steps, "diagnostics": self.diagnostics, "executor": EXECUTOR,
            **({} if self.corrections else {"corrections": False}),
            **({"guided": self.guided} if self.guided else {}),
            **({} if self.image_codec.lossless else {"image_codec": self.image_codec.to_json()}),
            "cycle": {k: v for k, v in asdict(cycle_config(self, 0)).items()
                      if not (k in NEUTRAL_CYCLE_FIELDS and v == NEUTRAL_CYCLE_FIELDS[k])}}))


def cycle_config(cfg: BenchConfig, seed: int) -> CycleConfig:
    """Training sizes. Pixels: the product defaults. State: a smaller trunk, more steps (a step is cheap)."""
    if cfg.quick:
        net = NetConfig(d_model=32, heads=2, trunk_layers=1, head_layers=1, cnn_channels=(8, 16), image_pool=4)
        value = TrainConfig(steps=30, batch_size=16, threads=1, net=net)
        policy = PolicyTrainConfig(steps=30, batch_size=16, threads=1, net=net)
    elif cfg.obs == "pixels":
        value, policy = TrainConfig(threads=1), PolicyTrainConfig(threads=1)
    else:
        net = NetConfig(d_model=64, heads=4, trunk_layers=1, head_layers=2)
        value = TrainConfig(steps=1500, batch_size=64, image_shift=0, threads=1, net=net)
        policy = PolicyTrainConfig(steps=2000, batch_size=64, image_shift=0, threads=1, net=net)
    value = replace(value, seed=seed, progress=False, steps=cfg.value_steps or value.steps)
    policy = replace(policy, seed=seed, progress=False, steps=cfg.policy_steps or policy.steps)
    return CycleConfig(model_id=f"mw-{cfg.obs}", value=value, policy=policy, labels=RECIPES[cfg.labels], method="recap",
                       denoising_steps=4 if cfg.quick else CycleConfig.denoising_steps,
                       chunk_critic=cfg.guided > 1, positive_share=cfg.positive_share,
                       indicators_from_null=cfg.indicators_from_null,
                       postbc=PosteriorConfig(alpha=cfg.postbc_alpha, seed=seed) if cfg.postbc_alpha > 0 else None)


def methods(cfg: BenchConfig) -> tuple[str, ...]:
    return (*METHODS, "recap_guided") if cfg.guided > 1 else METHODS


def make_robot(task: str, cfg: BenchConfig) -> MetaWorldRobot:
    return MetaWorldRobot(SimConfig(env_name=task, max_steps=cfg.max_steps, render=cfg.obs == "pixels"))


def load_runner(bundle_path: str, seed: int, beta: float | None = None, candidates: int = 0) -> PolicyRunner:
    """The bundle on ONNX Runtime; `candidates` K > 1 executes the best of K chunks by its critic."""
    return PolicyRunner.load(bundle_path, engine="onnxruntime", threads=1, beta=beta, seed=seed,
                             guidance=ValueGuidance(candidates > 1, max(candidates, 1), "refuse"))


def run_many(robot: MetaWorldRobot, layouts: range, policy: PolicyRunner | None = None,
             operator: ScriptedOperator | None = None, store: EpisodeStore | None = None,
             campaign: str = "", image_codec: CameraCodec | None = None) -> list[RolloutResult]:
    executor = PolicyExecutor(policy, realtime=False) if policy is not None else None
    return [run_episode(robot, seed, executor, operator, store, campaign=campaign, control_rate_hz=CONTROL_RATE_HZ,
                        image_codec=image_codec) for seed in layouts]


def outcome_summary(results: list[RolloutResult]) -> dict:
    s = summarize([EpisodeOutcome(r.success, r.steps, r.intervention_steps) for r in results])
    return {"success_rate": s.success_rate, "ci95": list(s.ci95), "mean_steps_to_success": s.mean_steps_to_success,
            "episodes": s.episodes, "successes": sum(r.success for r in results),
            "success_steps": sum(r.steps for r in results if r.success), "steps": sum(r.steps for r in results),
            "successes_per_hour": successes_per_hour(sum(r.success for r in results), sum(r.steps for r in results)),
            "intervention_rate": s.intervention_rate}


def successes_per_hour(successes: int, steps: int) -> float:
    """Throughput: successes per hour of simulated robot time (every episode's steps at the control rate)."""
    return successes / (steps / CONTROL_RATE_HZ / 3600.0) if steps else 0.0


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"


@dataclass
class Start:
    """Round 0 of a (task, seed): the demonstrations, their store and work directory, and the pretrain."""

    demos: int
    store: EpisodeStore
    work: Path
    pretrained: CycleResult
    demo_results: list[RolloutResult]


def result_file(cfg: BenchConfig, task: str, seed: int) -> Path:
    return cfg.out / "runs" / f"{task}_seed{seed}.json"


def finished_runs(out: Path) -> dict[str, dict]:
    """Every finished pair's result under a run's --out, by its file name (`<task>_seed<seed>.json`)."""
    return {path.name: json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))}


def finished(cfg: BenchConfig, task: str, seed: int) -> dict | None:
    """The committed result of (task, seed) if it was made with the current settings."""
    path = result_file(cfg, task, seed)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("fingerprint") != cfg.fingerprint(task):
        log.info("%s seed %d: %s was made with other settings; recomputing", task, seed, path)
        return None
    return result


def demonstrate_and_pretrain(task: str, seed: int, count: int, cfg: BenchConfig, robot: MetaWorldRobot,
                             root: Path) -> Start:
    """`count` demonstrations (layouts base..base+count-1, the seed's operator noise) and their pretrain,
    in root/demos<count>/; a smaller count's demonstrations are a prefix of a larger one's."""
    home = root / f"demos{count}"
    shutil.rmtree(home, ignore_errors=True)
    work = home / "work"
    work.mkdir(parents=True)
    (cfg.work / "text_cache").mkdir(parents=True, exist_ok=True)
    (work / "text_cache").symlink_to((cfg.work / "text_cache").resolve())   # one sentence-encoder load per run
    store = EpisodeStore(home / "episodes")
    base = 100_000 * (seed + 1)
    demonstrator = ScriptedOperator(task, OperatorConfig(mode="demonstrate", action_noise=cfg.demo_noise, seed=seed))
    demos = run_many(robot, range(base, base + count), operator=demonstrator, store=store, campaign="demonstrations",
                     image_codec=cfg.image_codec)
    return Start(count, store, work, pretrain(store.root, work, cycle_config(cfg, seed)), demos)


def choose_demos(task: str, seed: int, cfg: BenchConfig, robot: MetaWorldRobot, root: Path) -> tuple[Start, list]:
    """The demonstration count for (task, seed) whose BC policy succeeds within `band` on calibration layouts.

    Search: start at DEFAULT_DEMOS (else START_DEMOS); below the band double the count, above it halve
    it; once one count is known too few and another too many, bisect between them. It stops at the
    first count inside the band, when the next count was already tried (or would leave 1..max_demos),
    or after `tries` pretrains (the cost cap: each is one pretrain and `episodes` calibration
    episodes); outside the band it keeps the count closest to the band's middle (fewer on a tie). The
    chosen count's pretrain is round 0, so the search costs only the counts not chosen."""
    search, (low, high) = cfg.demo_search, cfg.demo_search.band
    layouts = range(CALIBRATION_SEED_BASE, CALIBRATION_SEED_BASE + search.episodes)
    tried: dict[int, tuple[float, Start]] = {}
    trace = []
    count = min(DEFAULT_DEMOS.get(task, START_DEMOS), search.max_demos)
    while count not in tried and len(tried) < search.tries:
        t = Timer()
        start = demonstrate_and_pretrain(task, seed, count, cfg, robot, root)
        runner = load_runner(start.pretrained.bundle_path, seed)
        rate = outcome_summary(run_many(robot, layouts, runner))["success_rate"]
        tried[count] = (rate, start)
        trace.append({"demos": count, "calibration_success_rate": rate,
                      "seconds": round(time.perf_counter() - t.start, 1)})
        log.info("%s seed %d: %d demonstrations -> BC %.0f%% on %d calibration layouts (%s)", task, seed, count,
                 100 * rate, search.episodes, t)
        if low <= rate <= high:
            break
        too_few = [n for n, (r, _) in tried.items() if r < low]
        too_many = [n for n, (r, _) in tried.items() if r > high]
        if too_few and too_many:
            count = (max(too_few) + min(too_many)) // 2
        elif too_few:
            count = min(2 * max(too_few), search.max_demos)
        else:
            count = max(min(too_many) // 2, 1)
    chosen = min(tried, key=lambda n: (0 if low <= tried[n][0] <= high else abs(tried[n][0] - (low + high) / 2), n))
    for n in tried:
        if n != chosen:
            shutil.rmtree(root / f"demos{n}", ignore_errors=True)
    return tried[chosen][1], trace


def run_task_seed(task: str, seed: int, cfg: BenchConfig) -> dict:
    """Demos, pretrain, then `cfg.rounds` rounds; returns {'points': {method: [per round]}, 'rounds': [...]}."""
    done = finished(cfg, task, seed)
    if done is not None:
        log.info("%s seed %d: reusing %s", task, seed, result_file(cfg, task, seed))
        return done
    root = cfg.work / task / f"seed{seed}"
    if root.exists():
        shutil.rmtree(root)             # a pair killed midway starts again from scratch
    root.mkdir(parents=True)
    robot = make_robot(task, cfg)
    base = 100_000 * (seed + 1)
    eval_layouts = range(EVAL_SEED_BASE, EVAL_SEED_BASE + cfg.eval_episodes)
    tag = f"{task} seed {seed}"
    started = time.perf_counter()
    stages: dict[str, float] = {}

    def stage_done(name: str, timer: Timer) -> None:
        stages[name] = round(time.perf_counter() - timer.start, 1)

    try:
        t = Timer()
        if cfg.demos == "auto":
            start, search = choose_demos(task, seed, cfg, robot, root)
        else:
            start, search = demonstrate_and_pretrain(task, seed, cfg.demos_for(task), cfg, robot, root), []
        store, work, pretrained, demos = start.store, start.work, start.pretrained, start.demo_results
        log.info("%s: %d demonstrations (%d successful), pretrain (V_pre %.0f s, BC policy %.0f s, export)%s (%s)",
                 tag, len(demos), sum(d.success for d in demos), pretrained.metrics["value"]["seconds"],
                 pretrained.metrics["policy"]["seconds"], f", chosen from {len(search)} tried" if search else "", t)
        stage_done("demos_and_pretrain", t)
        cycle = cycle_config(cfg, seed)

        t = Timer()
        initial = outcome_summary(run_many(robot, eval_layouts, load_runner(pretrained.bundle_path, seed)))
        log.info("%s round 0: BC %.0f%% on %d held-out layouts (%s)", tag, 100 * initial["success_rate"],
                 initial["episodes"], t)
        stage_done("eval_r0", t)
        points = {method: [initial] for method in methods(cfg)}
        diagnostics: dict[str, dict] = {}
        rounds = []
        collector = pretrained
        for k in range(1, cfg.rounds + 1):
            t = Timer()
            corrector = (ScriptedOperator(task, OperatorConfig(mode="correct", seed=seed * 100 + k))
                         if cfg.corrections else None)
            layouts = range(base + 1000 * k, base + 1000 * k + cfg.rollouts)
            collected = run_many(robot, layouts, load_runner(collector.bundle_path, seed, beta=1.0 if k > 1 else None),
                                 corrector, store, campaign=f"round {k} rollouts", image_codec=cfg.image_codec)
            rollouts = outcome_summary(collected)
            autonomous = sum(r.success and r.intervention_steps == 0 for r in collected)
            log.info("%s round %d: %d rollouts by %s, %d successful (%d without help), "
                     "operator on %.0f%% of steps (%s)",
                     tag, k, len(collected), collector.version, rollouts["successes"], autonomous,
                     100 * rollouts["intervention_rate"], t)
            stage_done(f"rollouts_r{k}", t)

            t = Timer()
            rd = round_data(store.root, work, pretrained, cycle, k)
            lm = rd.labels.metrics
            quality = lm["label_quality"]
            log.info("%s round %d: values + labels on %d episodes / %d steps: out-of-fold EV %s, positive %.2f, "
                     "AUC advantage %s / indicator %s / takeover %s (%s)", tag, k, len(rd.data.episodes), len(rd.data),
                     fmt(lm["value_explained_variance_out_of_fold"]), lm["positive_fraction"],
                     fmt(quality["advantage_auc"]), fmt(quality["indicator_auc"]), fmt(quality["takeover_auc"]), t)
            stage_done(f"labels_r{k}", t)

            trained: dict[str, CycleResult] = {}
            t = Timer()
            trained["recap"] = train_round(rd, work, cycle)
            log.info("%s round %d: RECAP policy (%s)", tag, k, t)
            stage_done(f"train_recap_r{k}", t)
            final = k == cfg.rounds and cfg.diagnostics
            for method in BASELINES + (DIAGNOSTICS if final else ()):
                t = Timer()
                trained[method] = train_baseline(rd, work, method, cycle)
                log.info("%s round %d: %s policy (%s)", tag, k, method, t)
                stage_done(f"train_{method}_r{k}", t)

            t = Timer()
            evaluated = {}
            for method in methods(cfg):
                beta = {"recap_beta1": 1.0, "recap_beta2": 2.0, "recap_guided": 1.0}.get(method)
                bundle = trained["recap" if beta else method].bundle_path
                runner = load_runner(bundle, seed, beta, cfg.guided if method == "recap_guided" else 0)
                evaluated[method] = outcome_summary(run_many(robot, eval_layouts, runner))
                points[method].append(evaluated[method])
            if final:
                for method in DIAGNOSTICS:
                    diagnostics[method] = outcome_summary(
                        run_many(robot, eval_layouts, load_runner(trained[method].bundle_path, seed)))
            log.info("%s round %d: %s (%s)", tag, k,
                     ", ".join(f"{m} {100 * e['success_rate']:.0f}%"
                               for m, e in {**evaluated, **diagnostics}.items()), t)
            stage_done(f"eval_r{k}", t)
            rounds.append(round_diagnostics(k, rd, collected, rollouts, trained))
            collector = trained["recap"]
    finally:
        robot.close()
    result = {"fingerprint": cfg.fingerprint(task), "task": task, "seed": seed,
              "demos": {"episodes": len(demos), "successes": sum(d.success for d in demos), "search": search},
              "initial_training": {k: pretrained.metrics[k]
                                   for k in ("steps_used", "value_explained_variance_in_sample")},
              "points": points, "diagnostics": diagnostics, "rounds": rounds, "stage_seconds": stages,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    result_file(cfg, task, seed).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result_file(cfg, task, seed), result)
    log.info("%s: done in %.0f s", tag, result["wall_seconds"])
    return result


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def round_diagnostics(k: int, rd, collected: list[RolloutResult], rollouts: dict, trained: dict) -> dict:
    """What the round added and how RECAP labelled it: the analysis material."""
    lm, data = rd.labels.metrics, rd.data
    new = np.array([e.policy_version != "" for e in data.episodes])
    positive = rd.labels.indicators == POSITIVE
    demo = ~new[data.episode_index]
    autonomous = ~data.intervention & ~demo

    def share(rows: np.ndarray) -> float | None:
        return float(positive[rows].mean()) if rows.any() else None

    return {
        "round": k,
        "rollouts": {key: rollouts[key] for key in ("episodes", "successes", "intervention_rate")},
        "rollouts_autonomous_successes": sum(r.success and r.intervention_steps == 0 for r in collected),
        "store_episodes": len(data.episodes), "store_steps": len(data),
        "store_rollout_episodes": int(new.sum()),
        "store_success_fraction": float(np.mean([e.success for e in data.episodes])),
        "intervention_fraction": lm["intervention_fraction"],
        "value_explained_variance_out_of_fold": lm["value_explained_variance_out_of_fold"],
        "positive_fraction": lm["positive_fraction"],
        "positive_fraction_by_outcome": lm["positive_fraction_by_outcome"],
        "positive_fraction_by_policy_version": lm["positive_fraction_by_policy_version"],
        "intervention_positive": share(data.intervention),
        # The steps the advantage actually decides: the policy's own, by the outcome of their episode.
        "positive_autonomous": {"success": share(autonomous & data.success),
                                "failure": share(autonomous & ~data.success)},
        "thresholds": lm["thresholds"],
        "label_quality": {**{key: lm["label_quality"][key]
                             for key in ("advantage_auc", "indicator_auc", "takeover_auc", "takeover_window")},
                          "value_ece": lm["label_quality"]["value_calibration"]["ece"]},
        "filtered_bc_rows": trained["filtered_bc"].metrics["selection"],
        "awr_selection": trained["awr"].metrics["selection"],
        "labels_seconds": round(rd.seconds, 1),
        "policy_seconds": {m: r.metrics["policy"]["seconds"] for m, r in trained.items()},
    }


def pooled(points: list[dict]) -> dict:
    """One point from several seeds' evaluations: successes and episodes summed (Wilson CI on the pool)."""
    episodes = sum(p["episodes"] for p in points)
    successes = sum(p["successes"] for p in points)
    steps = sum(p["success_steps"] for p in points)
    all_steps = sum(p["steps"] for p in points)
    rates = [p["success_rate"] for p in points]
    return {"success_rate": successes / episodes if episodes else 0.0,
            "ci95": list(wilson_interval(successes, episodes)),
            "mean_steps_to_success": steps / successes if successes else None, "episodes": episodes,
            "successes_per_hour": successes_per_hour(successes, all_steps),
            "successes": successes, "success_steps": steps, "steps": all_steps,
            "seed_success_rates": rates, "seed_std": float(np.std(rates)) if len(rates) > 1 else 0.0}


def aggregate(runs: dict[str, list[dict]], cfg: BenchConfig) -> dict:
    """Per task (its finished seeds pooled) and on average (the tasks pooled), per method and round."""
    table = {}
    for task, seeds in runs.items():
        table[task] = {method: [pooled([run["points"][method][k] for run in seeds]) for k in range(cfg.rounds + 1)]
                       for method in methods(cfg)}
    table["average"] = {method: [pooled([table[task][method][k] for task in runs]) for k in range(cfg.rounds + 1)]
                        for method in methods(cfg)}
    for method_rounds in table["average"].values():
        for point in method_rounds:
            point.pop("seed_success_rates"), point.pop("seed_std")
    return table


def aggregate_diagnostics(runs: dict[str, list[dict]]) -> dict:
    """Last round, pooled over seeds: each diagnostic next to RECAP (beta 1) and filtered BC."""
    out = {}
    for task, seeds in runs.items():
        if not all(run["diagnostics"] for run in seeds):
            continue
        out[task] = {m: pooled([run["diagnostics"][m] for run in seeds]) for m in DIAGNOSTICS}
        for m in ("recap_beta1", "filtered_bc"):
            out[task][m] = pooled([run["points"][m][-1] for run in seeds])
    return out


def target_check(table: dict, tasks: list[str], final: int) -> dict:
    """Issue 13's target after `final` rounds, for RECAP at beta 1 (the default) and at beta 2: it beats BC,
    filtered BC and AWR on average success, halves the round-0 failure rate on all but one task in five
    (4 of 5), and has a higher throughput (successes per hour) than filtered BC on average."""
    out = {}
    needed = len(tasks) - len(tasks) // 5
    for recap in [m for m in table["average"] if m.startswith("recap")]:
        per_task = {}
        for task in tasks:
            initial_failure = 1 - table[task][recap][0]["success_rate"]
            final_failure = 1 - table[task][recap][final]["success_rate"]
            per_task[task] = {"initial_failure": initial_failure, "final_failure": final_failure,
                              "halved": final_failure <= initial_failure / 2}
        average = {m: table["average"][m][final]["success_rate"] for m in (*BASELINES, recap)}
        throughput = {m: table["average"][m][final]["successes_per_hour"] for m in ("filtered_bc", recap)}
        beats = all(average[recap] > average[m] for m in BASELINES)
        halved = sum(v["halved"] for v in per_task.values())
        faster = throughput[recap] > throughput["filtered_bc"]
        out[recap] = {"round": final, "per_task": per_task, "average_success": average, "beats_baselines": beats,
                      "halved_tasks": halved, "halved_needed": needed, "successes_per_hour": throughput,
                      "higher_throughput_than_filtered_bc": faster,
                      "met": beats and halved >= needed and faster}
    return out


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_point(p: dict) -> str:
    return f"{pct(p['success_rate'])} [{pct(p['ci95'][0])}-{pct(p['ci95'][1])}]"


def render(report: dict, cfg: BenchConfig) -> str:
    table, rounds, tasks = report["table"], cfg.rounds, list(report["runs"])
    head = ("| task | method | " + " | ".join(f"round {k}" for k in range(rounds + 1))
            + " | steps to success (last round) | successes per robot hour (round 0 -> last) |")
    rule = "|---|---|" + "---|" * (rounds + 3)
    missing = report["settings"]["pending_pairs"]
    lines = [f"# RECAP vs baselines on MetaWorld (`--obs {cfg.obs}`, labels `{cfg.labels}`)", "",
             f"{len(cfg.tasks)} task(s) x {cfg.seeds} seed(s) x {rounds} round(s); {cfg.eval_episodes} held-out "
             f"evaluation episodes per seed and point, pooled over seeds (95% Wilson interval on the pool); "
             f"round 0 is the shared behaviour-cloned start. Wall time {report['compute_seconds'] / 60:.1f} min "
             f"summed over the finished (task, seed) runs ({report['wall_seconds'] / 60:.1f} min in the invocation "
             "that wrote this; finished runs are reused from --out/runs).", ""]
    if missing:
        lines += [f"**Partial table**: {len(report['settings']['finished_pairs'])} of "
                  f"{len(cfg.tasks) * cfg.seeds} (task, seed) pairs finished; missing: "
                  + ", ".join(f"{t} seed {s}" for t, s in missing)
                  + ". The average pools the finished pairs only.", ""]
    lines += [head, rule]
    for task in [*tasks, "average"]:
        for method in methods(cfg):
            points = table[task][method]
            steps = points[-1]["mean_steps_to_success"]
            lines.append(f"| {task} | {method} | " + " | ".join(render_point(p) for p in points)
                         + f" | {'-' if steps is None else f'{steps:.0f}'} | "
                         f"{points[0]['successes_per_hour']:.0f} -> {points[-1]['successes_per_hour']:.0f} |")
    lines += ["", "## Per seed (success rate, round 0 -> last round)", "",
              "| task | seed | demos | " + " | ".join(methods(cfg)) + " |",
              "|---|---|---|" + "---|" * len(methods(cfg))]
    for task, seeds in report["runs"].items():
        for run in seeds:
            cells = [f"{pct(run['points'][m][0]['success_rate'])} -> {pct(run['points'][m][-1]['success_rate'])}"
                     for m in methods(cfg)]
            lines.append(f"| {task} | {run['seed']} | {run['demos']['successes']}/{run['demos']['episodes']} | "
                         + " | ".join(cells) + " |")
    searched = [(task, run) for task, seeds in report["runs"].items() for run in seeds if run["demos"]["search"]]
    if searched:
        lines += ["", "## Demonstration search (`--demos auto`: round-0 BC on calibration layouts)", "",
                  "| task | seed | demos tried -> calibration success | chosen |", "|---|---|---|---|"]
        for task, run in searched:
            tried = ", ".join(f"{s['demos']} -> {pct(s['calibration_success_rate'])}" for s in run["demos"]["search"])
            lines.append(f"| {task} | {run['seed']} | {tried} | {run['demos']['episodes']} |")
    lines += ["", "## Rounds: data and labels (mean over seeds)", "",
              "| task | round | rollouts ok (no help) | operator steps | store episodes | value EV (out of fold) | "
              "positive, autonomous steps: success eps / failure eps | AWR effective sample |",
              "|---|---|---|---|---|---|---|---|"]
    for task, seeds in report["runs"].items():
        for k in range(rounds):
            rs = [run["rounds"][k] for run in seeds]

            def mean(f, rs=rs):
                values = [f(r) for r in rs if f(r) is not None]
                return float(np.mean(values)) if values else float("nan")

            lines.append(
                f"| {task} | {k + 1} | {mean(lambda r: r['rollouts']['successes']):.1f} "
                f"({mean(lambda r: r['rollouts_autonomous_successes']):.1f}) / {cfg.rollouts} | "
                f"{pct(mean(lambda r: r['rollouts']['intervention_rate']))} | "
                f"{mean(lambda r: r['store_episodes']):.0f} | "
                f"{mean(lambda r: r['value_explained_variance_out_of_fold']):.2f} | "
                f"{mean(lambda r: r['positive_autonomous']['success']):.2f} / "
                f"{mean(lambda r: r['positive_autonomous']['failure']):.2f} | "
                f"{mean(lambda r: r['awr_selection']['effective_sample_fraction']):.2f} |")
    lines += ["", "## Label quality per round (mean over seeds; autonomous steps; cycle.label_quality)", "",
              "outcome AUC: telling autonomous steps of successful episodes from those of failed ones, by the "
              "advantage and by the binary indicator; takeover AUC: the other autonomous steps against those in "
              "the 1 s before an operator takeover; EV: out-of-fold explained variance of the value; ECE: its "
              "calibration error.", "",
              "| task | round | advantage AUC | indicator AUC | takeover AUC | value EV | value ECE |",
              "|---|---|---|---|---|---|---|"]
    for task, seeds in report["runs"].items():
        for k in range(rounds):
            figures = [run["rounds"][k]["label_quality"] for run in seeds]

            def mean_of(key, figures=figures):
                values = [f[key] for f in figures if f.get(key) is not None]
                return fmt(float(np.mean(values))) if values else "-"

            ev = [run["rounds"][k]["value_explained_variance_out_of_fold"] for run in seeds]
            lines.append(f"| {task} | {k + 1} | {mean_of('advantage_auc')} | {mean_of('indicator_auc')} | "
                         f"{mean_of('takeover_auc')} | {fmt(float(np.mean(ev)))} | {mean_of('value_ece')} |")
    if report["diagnostics"]:
        lines += ["", "## Diagnostic: RECAP's labels without the conditioning (last round, pooled over seeds)", "",
                  "positive_bc = behaviour cloning on exactly the rows RECAP labels positive "
                  "(same start, same steps).", "",
                  "| task | recap_beta1 | positive_bc | filtered_bc |", "|---|---|---|---|"]
        for task, d in report["diagnostics"].items():
            lines.append(f"| {task} | {render_point(d['recap_beta1'])} | {render_point(d['positive_bc'])} | "
                         f"{render_point(d['filtered_bc'])} |")
    lines += ["", "## Target", ""]
    for recap, check in report["target"].items():
        halved = ", ".join(f"{t} {pct(v['initial_failure'])} -> {pct(v['final_failure'])}"
                           f"{' (halved)' if v['halved'] else ' (NOT halved)'}" for t, v in check["per_task"].items())
        avg = ", ".join(f"{m} {pct(v)}" for m, v in check["average_success"].items())
        rate = check["successes_per_hour"]
        lines.append(f"- **{recap}** after round {check['round']}: {'MET' if check['met'] else 'NOT MET'}. "
                     f"Failure rate halved on {check['halved_tasks']} of {len(check['per_task'])} tasks "
                     f"({check['halved_needed']} needed): {halved}. Average success {avg}"
                     f"{' (beats every baseline)' if check['beats_baselines'] else ' (does not beat every baseline)'}"
                     f". Successes per robot hour {rate[recap]:.0f} vs filtered_bc {rate['filtered_bc']:.0f}"
                     f"{' (higher)' if check['higher_throughput_than_filtered_bc'] else ' (not higher)'}.")
    lines += ["", "## Settings and decisions", "", "```", json.dumps(report["settings"], indent=1), "```", "",
              "Stage wall times (s, mean over seeds): " + ", ".join(
                  f"{name} {np.mean([run['stage_seconds'][name] for s in report['runs'].values() for run in s]):.0f}"
                  for name in next(iter(report["runs"].values()))[0]["stage_seconds"]), ""]
    return "\n".join(lines)


def plot(report: dict, cfg: BenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*report["runs"], "average"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True, squeeze=False)
    rounds = np.arange(cfg.rounds + 1)
    for ax, task in zip(axes[0], panels):
        for i, method in enumerate(methods(cfg)):
            points = report["table"][task][method]
            rate = np.array([p["success_rate"] for p in points])
            low = rate - np.array([p["ci95"][0] for p in points])
            high = np.array([p["ci95"][1] for p in points]) - rate
            ax.errorbar(rounds + (i - 2) * 0.05, rate, yerr=[low, high], marker="o", capsize=3, label=method,
                        linewidth=2 if method.startswith("recap") else 1)
        ax.set_title(task)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("success rate (95% CI)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"RECAP vs baselines, MetaWorld --obs {cfg.obs}, {cfg.seeds} seed(s) x {cfg.eval_episodes} episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def code_version() -> str:
    """The repository's commit (and whether the tree differed from it) when the run started."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pairs_of(cfg: BenchConfig) -> list[tuple[str, int]]:
    """Seed-major, so a partial table has every task's first seed before any task's second."""
    return [(task, seed) for seed in range(cfg.seeds) for task in cfg.tasks]


def run_pair(task: str, seed: int, cfg: BenchConfig) -> dict | None:
    """One (task, seed), its failure logged rather than raised (the other pairs go on)."""
    try:
        return run_task_seed(task, seed, cfg)
    except Exception:
        log.error("%s seed %d failed:\n%s", task, seed, traceback.format_exc())
        return None


def run(cfg: BenchConfig) -> dict:
    """Every (task, seed) not finished yet, `cfg.jobs` at a time; the report is rewritten as each one lands."""
    started = time.perf_counter()
    code = code_version()
    results: dict[tuple[str, int], dict] = {}
    todo = []
    for task, seed in pairs_of(cfg):
        done = finished(cfg, task, seed)
        if done is not None:
            log.info("%s seed %d: reusing %s", task, seed, result_file(cfg, task, seed))
            results[task, seed] = done
        else:
            todo.append((task, seed))
    report = write_report(cfg, results, started, code) if results else None
    failed = []
    if cfg.jobs == 1 or len(todo) <= 1:
        for pair in todo:
            result = run_pair(*pair, cfg)
            if result is None:
                failed.append(pair)
                continue
            results[pair] = result
            report = write_report(cfg, results, started, code)
    else:
        # fork: the workers inherit the loaded modules and the log handlers; the parent runs no torch.
        with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(run_pair, *pair, cfg): pair for pair in todo}
            for future in as_completed(futures):
                result = future.result()
                if result is None:
                    failed.append(futures[future])
                    continue
                results[futures[future]] = result
                report = write_report(cfg, results, started, code)
    if failed:
        raise BenchError("failed: " + ", ".join(f"{t} seed {s}" for t, s in failed)
                         + f"; see {cfg.out / 'run.log'} (rerun to retry them; finished pairs are kept)")
    return report


def write_report(cfg: BenchConfig, results: dict[tuple[str, int], dict], started: float, code: str) -> dict:
    """results.json, results.md and success.png from every finished pair."""
    runs: dict[str, list[dict]] = {}
    for task, seed in pairs_of(cfg):
        if (task, seed) in results:
            runs.setdefault(task, []).append(results[task, seed])
    runs = {task: runs[task] for task in cfg.tasks if task in runs}
    table = aggregate(runs, cfg)
    report = {
        "settings": {
            "obs": cfg.obs, "tasks": list(cfg.tasks), "seeds": cfg.seeds, "rounds": cfg.rounds,
            "eval_episodes": cfg.eval_episodes,
            "eval_layouts": f"seeds {EVAL_SEED_BASE}..{EVAL_SEED_BASE + cfg.eval_episodes - 1}",
            "demos": {t: cfg.demos_for(t) for t in cfg.tasks}, "demo_noise": cfg.demo_noise,
            **({"calibration_layouts": f"seeds {CALIBRATION_SEED_BASE}..."
                                       f"{CALIBRATION_SEED_BASE + cfg.demo_search.episodes - 1}"}
               if cfg.demos == "auto" else {}),
            "labels": cfg.labels, "labels_decided": "before any evaluation episode, from "
                                                    "benchmarks/results/label_quality/analysis.md",
            "image_codec": cfg.image_codec.to_json(),
            "rollouts_per_round": cfg.rollouts, "max_steps": cfg.max_steps, "control_rate_hz": CONTROL_RATE_HZ,
            "executor": EXECUTOR,
            "collector": "round 1: the round-0 BC policy; round k > 1: RECAP (beta 1) of round k-1",
            "operator": asdict(OperatorConfig(mode="correct" if cfg.corrections else "off")),
            "cycle": asdict(cycle_config(cfg, 0)), "quick": cfg.quick, "code": code, "jobs": cfg.jobs,
            "finished_pairs": [[t, s] for t, s in pairs_of(cfg) if (t, s) in results],
            "pending_pairs": [[t, s] for t, s in pairs_of(cfg) if (t, s) not in results],
        },
        "table": table,
        "diagnostics": aggregate_diagnostics(runs),
        "target": target_check(table, list(runs), cfg.rounds) if cfg.rounds else {},   # round 0 only: no target
        "runs": {task: [{k: v for k, v in run.items() if k != "fingerprint"} for run in seeds]
                 for task, seeds in runs.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
        # Reused (task, seed) runs cost nothing now; this is what the finished pairs cost to compute.
        "compute_seconds": round(sum(run["wall_seconds"] for seeds in runs.values() for run in seeds), 1),
    }
    # The table's pooling counters are bookkeeping; results.json keeps the figures plus the seeds.
    point_figures = ("success_rate", "ci95", "mean_steps_to_success", "successes_per_hour", "episodes")
    results_json = {"settings": report["settings"], "wall_seconds": report["wall_seconds"],
                    "compute_seconds": report["compute_seconds"], "target": report["target"],
                    "results": {task: {method: [{k: p[k] for k in (*point_figures, "seed_success_rates", "seed_std")
                                                 if k in p} for p in points] for method, points in methods.items()}
                                for task, methods in table.items()},
                    "diagnostics": {task: {m: {k: p[k] for k in point_figures} for m, p in methods.items()}
                                    for task, methods in report["diagnostics"].items()},
                    "runs": report["runs"]}
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg.out / "results.json", results_json)
    (cfg.out / "results.md").write_text(render(report, cfg))
    plot(report, cfg, cfg.out / "success.png")
    log.info("wrote %s (%d of %d pairs)", cfg.out, len(results), len(cfg.tasks) * cfg.seeds)
    return report


def setup_logging(path: Path) -> None:
    """The benchmark's own stage lines to stderr and `path` (appended: a resumed run keeps the first
    part's lines); the libraries' INFO chatter stays out."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(path, mode="a")):
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def parse_demos(text: str | None, tasks: tuple[str, ...]) -> dict[str, int]:
    """'10' for every task, or 'push-v3=8,pick-place-v3=12'; unnamed tasks keep DEFAULT_DEMOS (else START_DEMOS)."""
    demos = {t: DEFAULT_DEMOS.get(t, START_DEMOS) for t in tasks}
    if text:
        try:
            if "=" not in text:
                return {t: positive_int(text, "--demos") for t in tasks}
            for item in text.split(","):
                name, count = item.split("=")
                if name.strip() not in tasks:
                    raise BenchError(f"--demos names '{name.strip()}', which is not in --tasks {list(tasks)}")
                demos[name.strip()] = positive_int(count, f"--demos {name.strip()}")
        except ValueError as err:
            raise BenchError(f"--demos '{text}': {err}; use N, auto, or task=N,task=N") from None
    return demos


def positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BenchError(f"{what} must be a whole number, got '{text}'") from None
    if value < 1:
        raise BenchError(f"{what} must be >= 1, got {value}")
    return value


def check_tasks(text: str) -> tuple[str, ...]:
    """Comma-separated MetaWorld v3 tasks, each with a scripted expert; anything else is refused by name."""
    from metaworld.policies import ENV_POLICY_MAP

    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    if not tasks:
        raise BenchError("--tasks is empty")
    for task in tasks:
        try:
            check_name(task, "task")        # it names a directory under --work and a file under --out
        except UnsafeNameError as err:
            raise BenchError(str(err)) from None
        if task not in ENV_POLICY_MAP:
            raise BenchError(f"task '{task}' has no scripted expert in metaworld.policies.ENV_POLICY_MAP, so it "
                             "cannot be demonstrated or corrected; tasks with one: "
                             + ", ".join(sorted(ENV_POLICY_MAP)))
    if len(set(tasks)) != len(tasks):
        raise BenchError(f"--tasks lists a task twice: {list(tasks)}")
    return tasks


def parse_image_codec(text: str) -> CameraCodec:
    """`CODEC[:QUALITY]`, one codec for every camera; anything else is refused with what is offered."""
    try:
        choices = parse_codec_choices([text])
    except CodecError as err:
        raise BenchError(f"--image-codec: {err}") from None
    if None not in choices:
        raise BenchError(f"--image-codec {text!r}: one codec for every camera (CODEC[:QUALITY]), not per camera")
    return choices[None]


def config_from(args: argparse.Namespace) -> BenchConfig:
    q = args.quick
    tasks = check_tasks(args.tasks) if args.tasks else (("push-v3",) if q else DEFAULT_TASKS)
    demos_text = args.demos or ("3" if q else "auto")
    search = DemoSearch(episodes=4, tries=2) if q else DemoSearch()
    if args.calibration_episodes is not None:
        search = replace(search, episodes=args.calibration_episodes)
    if args.demo_tries is not None:
        search = replace(search, tries=args.demo_tries)
    cfg = BenchConfig(
        tasks=tasks, rounds=(1 if q else 3) if args.rounds is None else args.rounds,
        seeds=args.seeds or (1 if q else 3),
        eval_episodes=args.eval_episodes or (4 if q else 50),
        demos="auto" if demos_text == "auto" else parse_demos(demos_text, tasks), demo_search=search,
        demo_noise=args.demo_noise, rollouts=args.rollouts or (4 if q else BenchConfig.rollouts), obs=args.obs,
        max_steps=args.max_steps if not q else min(args.max_steps, 80), out=args.out,
        work=args.work or Path(f"/tmp/recap_metaworld_{args.obs}{'_quick' if q else ''}"), quick=q,
        policy_steps=args.policy_steps, value_steps=args.value_steps, labels=args.labels, jobs=args.jobs,
        guided=args.guided, positive_share=args.positive_share, indicators_from_null=args.indicators_from_null,
        postbc_alpha=args.postbc_alpha,
        diagnostics=not args.no_diagnostics, corrections=not args.no_corrections,
        image_codec=parse_image_codec(args.image_codec))
    problems = [(cfg.seeds > MAX_SEEDS, f"--seeds {cfg.seeds}: at most {MAX_SEEDS} (training layouts would reach "
                                        "the evaluation layouts)"),
                (cfg.eval_episodes > CALIBRATION_SEED_BASE - EVAL_SEED_BASE,
                 "--eval-episodes would reach the calibration layouts"),
                (cfg.jobs < 1, f"--jobs must be >= 1, got {cfg.jobs}"),
                (cfg.rounds < 0, f"--rounds must be >= 0, got {cfg.rounds}"),
                (not cfg.image_codec.lossless and cfg.obs != "pixels",
                 f"--image-codec {args.image_codec}: --obs state records no cameras; use --obs pixels"),
                (cfg.guided != 0 and not 2 <= cfg.guided <= MAX_CANDIDATES,
                 f"--guided must be 0 (off) or from 2 to {MAX_CANDIDATES}, got {cfg.guided}"),
                (search.episodes < 1 or search.tries < 1, "--calibration-episodes and --demo-tries must be >= 1"),
                (cfg.positive_share is not None and not 0 < cfg.positive_share < 1,
                 f"--positive-share must be in (0, 1), got {cfg.positive_share}")]
    for bad, problem in problems:
        if bad:
            raise BenchError(problem)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=None, help="comma-separated MetaWorld v3 tasks with a scripted expert "
                                                      f"(default {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--rounds", type=int, default=None,
                        help="improvement rounds (default 3; 0: round-0 BC only, no rollouts)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (default 3)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="held-out episodes per point (default 50)")
    parser.add_argument("--demos", default=None,
                        help="demonstrations: auto (default: searched per task and seed), N, or task=N,task=N")
    parser.add_argument("--calibration-episodes", type=int, default=None,
                        help=f"--demos auto: calibration layouts per tried count (default {DemoSearch.episodes})")
    parser.add_argument("--demo-tries", type=int, default=None,
                        help=f"--demos auto: at most this many pretrains per (task, seed) (default {DemoSearch.tries})")
    parser.add_argument("--demo-noise", type=float, default=BenchConfig.demo_noise,
                        help="operator action noise in demos")
    parser.add_argument("--rollouts", type=int, default=None, help="autonomous episodes with corrections per round")
    parser.add_argument("--obs", choices=("state", "pixels"), default="state")
    parser.add_argument("--image-codec", default="lossless", metavar="CODEC[:QUALITY]",
                        help="--obs pixels: how the store keeps the cameras (lossless, jpeg, h264, av1; e.g. h264:26; "
                             "default lossless); training decodes them as it would a robot's episodes")
    parser.add_argument("--max-steps", type=int, default=BenchConfig.max_steps)
    parser.add_argument("--labels", choices=sorted(RECIPES), default="candidate",
                        help="RECAP's label recipe (default candidate: GAE 0.95, Youden, 3-member value ensemble)")
    parser.add_argument("--jobs", type=int, default=1, help="(task, seed) pairs run in parallel processes")
    parser.add_argument("--guided", type=int, default=0, metavar="K",
                        help="also train the chunk critic and evaluate recap_guided: RECAP (beta 1) executing the "
                             "best of K sampled chunks as the critic ranks them (K 2..64; default off)")
    parser.add_argument("--positive-share", type=float, default=None,
                        help="RECAP's batches draw this share from positive rows (default: rows uniformly)")
    parser.add_argument("--indicators-from-null", action="store_true",
                        help="RECAP's positive/negative embeddings start at the pretrained (BC) null one")
    parser.add_argument("--postbc-alpha", type=float, default=0.0,
                        help="> 0: every method starts from a PostBC policy (posterior noise weight; 10 members)")
    parser.add_argument("--policy-steps", type=int, default=None, help="override the policy step budget (all methods)")
    parser.add_argument("--value-steps", type=int, default=None, help="override the value step budget")
    parser.add_argument("--out", type=Path, required=True,
                        help="results directory (results.json, results.md, success.png, runs/)")
    parser.add_argument("--work", type=Path, default=None,
                        help="episode stores, checkpoints, bundles (default /tmp/...)")
    parser.add_argument("--no-corrections", action="store_true",
                        help="rounds collect autonomous episodes only (the operator never takes over)")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the last round's positive_bc diagnostic")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 1 task, 1 seed, 1 round, few episodes")
    args = parser.parse_args(argv)
    try:
        cfg = config_from(args)
    except BenchError as err:
        parser.error(str(err))
    cfg.out.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.out / "run.log")
    log.info("settings: %s (torch threads: %d; load: %s)", {k: str(v) for k, v in asdict(cfg).items()},
             cycle_config(cfg, 0).policy.threads, " ".join(f"{x:.2f}" for x in os.getloadavg()))
    try:
        report = run(cfg)
    except BenchError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
    print(render(report, cfg))
    return report


if __name__ == "__main__":
    main()
