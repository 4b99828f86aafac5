"""The evaluation gate: a candidate bundle leaves the workstation only if it is better than the incumbent.

Offline checks first (cheap, and a bundle that fails them must not reach the simulator either):
- parity: the export's recorded ONNX-Runtime-vs-torch error (manifest.training.parity_max_abs_error; the
  export keeps no reference outputs, it checks them on random inputs) is at most gate.parity_tolerance;
- recorded observations: on `gate.observations` states from the cycle's snapshot (cameras too where the
  bundle reads them) the bundle runs, gives finite actions, and at most `gate.max_outside_bounds` of them
  fall outside the manifest's bounds (the robot clips them; a policy that mostly pushes past its bounds
  has not learned the robot's units).
Then a simulated evaluation: candidate and incumbent each run `gate.episodes` episodes per task on the same
layout seeds through the robot's executor (robot_runtime/sim/rollout.py), no operator. Success decides by
`gate.rule`:
- one_sided_test: a one-sided pooled two-proportion z-test, candidate > incumbent at level `alpha`;
- wilson: the candidate's 95% Wilson interval lies wholly above the incumbent's;
- not_worse: the candidate's success is at least the incumbent's minus `margin` (a rule for when "as good,
  on newer data" is enough; the strict rules are the default).
and in every rule the candidate must not be worse on intervention rate (+ intervention_margin) and on mean
steps to success (x (1 + steps_margin)) where both have successes. Interventions in simulation, by
`gate.operator` (the fleet's operators correct a robot that stalls or strays; the scripted one does the same):
- watch (default): the scripted operator in `correct` mode watches each episode but never acts; the steps
  it would have taken over are the interventions, and success stays the policy's own;
- correct: it takes over as a fleet operator would (success then counts corrected episodes, as the fleet's
  does);
- off: no operator, so the intervention check never decides.
First release (no incumbent): the candidate's simulated success must reach `first_release_min_success`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from robot_runtime.bundle import BundleError, load_bundle
from robot_runtime.episode import EpisodeError, EpisodeStore
from robot_runtime.improvement_loop.daemon.config import Gate
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, summarize
from robot_runtime.runtime.executor import PolicyExecutor
from robot_runtime.runtime.policy import PolicyInputError, PolicyOutputError, PolicyRunner
from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig, instruction_for
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator
from robot_runtime.sim.rollout import run_episode


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    numbers: dict


def offline_checks(bundle_path: str, cfg: Gate, store: EpisodeStore, episode_ids: list[str]) -> dict:
    """{"ok": bool, "problems": [...], ...figures}; never raises for a bad bundle."""
    problems, figures = [], {}
    try:
        bundle = load_bundle(bundle_path)
    except BundleError as err:
        return {"ok": False, "problems": [f"not a valid bundle: {err}"]}
    parity = bundle.manifest.training.get("parity_max_abs_error")
    figures.update(release=bundle.label, parity_max_abs_error=parity)
    if parity is None:
        figures["parity"] = "not recorded by the export (a hand-built bundle): not checked"
    elif not parity <= cfg.parity_tolerance:
        problems.append(f"ONNX parity error {parity:.3g} above the tolerance {cfg.parity_tolerance:g}")
    runner = PolicyRunner.load(bundle, engine="onnxruntime", threads=1, seed=0, warmup=False)
    runner.select_task(runner.manifest.tasks[0])
    low, high = np.asarray(runner.manifest.action_low), np.asarray(runner.manifest.action_high)
    checked = outside = values = 0
    for images, state, task in _recorded(store, episode_ids, runner, cfg.observations):
        if task in runner.manifest.tasks:
            runner.select_task(task)
        try:
            raw = runner.infer(images, state, clip=False)
        except (PolicyInputError, PolicyOutputError) as err:
            problems.append(f"on a recorded observation: {err}")
            break
        checked += 1
        outside += int(np.sum((raw < low - 1e-6) | (raw > high + 1e-6)))
        values += raw.size
    figures.update(observations_checked=checked, outside_bounds_fraction=outside / values if values else 0.0)
    if values and outside / values > cfg.max_outside_bounds:
        problems.append(f"{outside / values:.0%} of its actions on recorded observations fall outside the "
                        f"manifest's bounds (more than {cfg.max_outside_bounds:.0%})")
    return {"ok": not problems, "problems": problems, **figures}


def _recorded(store: EpisodeStore, episode_ids: list[str], runner: PolicyRunner, count: int):
    """Up to `count` (images, state, task) spread evenly over the snapshot's episodes."""
    if not episode_ids or count < 1:
        return
    rng = np.random.default_rng(0)
    per = max(1, math.ceil(count / len(episode_ids)))
    yielded = 0
    for episode_id in episode_ids:
        try:
            episode = store.open(episode_id)
            states = episode.array("state")
            if states.shape[1:] != (len(runner.manifest.state_names),):
                continue
            cams = {c.name: episode.images(c.name) for c in runner.manifest.cameras}
        except (EpisodeError, KeyError):
            continue
        for t in rng.choice(len(states), size=min(per, len(states)), replace=False):
            yield {name: np.asarray(frames[t]) for name, frames in cams.items()}, states[t], episode.task
            yielded += 1
            if yielded >= count:
                return


def simulate(bundle_path: str, cfg: Gate, robots: dict | None = None) -> dict:
    """Success, intervention rate and steps to success of a bundle on the gate's tasks and layouts.
    `robots` caches a simulated robot per (task, cameras) across calls (building one takes seconds)."""
    robots = {} if robots is None else robots
    bundle = load_bundle(bundle_path)
    m = bundle.manifest
    cameras = tuple(c.name for c in m.cameras)
    size = m.cameras[0].height if m.cameras else 96
    per_task, outcomes = {}, []
    for task in cfg.tasks:
        if instruction_for(task) not in m.tasks:
            raise ValueError(f"gate task {task} ('{instruction_for(task)}') is not among bundle {bundle.label}'s "
                             f"tasks {m.tasks}: choose gate.tasks the policy was trained on")
        sim = SimConfig(env_name=task, cameras=cameras or ("corner",), image_size=size, max_steps=cfg.max_steps,
                        render=bool(cameras) or cfg.render)
        key = (sim.env_name, sim.cameras, sim.image_size, sim.max_steps, sim.render)
        robot = robots[key] = robots.get(key) or MetaWorldRobot(sim)
        executor = PolicyExecutor(PolicyRunner.load(bundle, engine="onnxruntime", threads=1, seed=0), realtime=False)
        person = None if cfg.operator == "off" else ScriptedOperator(task, OperatorConfig(mode="correct"))
        acting = cfg.operator == "correct"
        results = [run_episode(robot, cfg.first_layout + i, executor, control_rate_hz=cfg.control_rate_hz,
                               operator=person if acting else None, watcher=None if acting else person)
                   for i in range(cfg.episodes)]
        task_outcomes = [EpisodeOutcome(r.success, r.steps, r.intervention_steps + r.wanted_steps)
                         for r in results]
        per_task[task] = _figures(task_outcomes)
        outcomes += task_outcomes
    return {"release": bundle.label, **_figures(outcomes), "per_task": per_task, "operator": cfg.operator}


def _figures(outcomes: list[EpisodeOutcome]) -> dict:
    s = summarize(outcomes)
    return {**asdict(s), "ci95": list(s.ci95), "successes": sum(o.success for o in outcomes)}


def one_sided_p(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """P(Z >= z) of the pooled two-proportion z statistic for H1: p_a > p_b (1.0 when nothing varies)."""
    pooled = (successes_a + successes_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = (successes_a / n_a - successes_b / n_b) / spread
    return 0.5 * math.erfc(z / math.sqrt(2))


def decide(candidate: dict, incumbent: dict | None, offline: dict, cfg: Gate) -> Verdict:
    """The gate's verdict on the simulated figures (simulate) and the offline checks."""
    numbers = {"rule": cfg.rule, "candidate": candidate, "incumbent": incumbent, "offline": offline,
               "episodes_per_task": cfg.episodes, "tasks": cfg.tasks, "first_layout": cfg.first_layout}
    if not offline["ok"]:
        return Verdict(False, "offline checks failed: " + "; ".join(offline["problems"]), numbers)
    c = candidate
    if incumbent is None:
        ok = c["success_rate"] >= cfg.first_release_min_success
        return Verdict(ok, f"first release: simulated success {c['success_rate']:.0%} "
                           f"{'reaches' if ok else 'is below'} the minimum {cfg.first_release_min_success:.0%}",
                       numbers)
    i = incumbent
    if cfg.rule == "one_sided_test":
        p = one_sided_p(c["successes"], c["episodes"], i["successes"], i["episodes"])
        numbers["p_value"] = p
        better, why = p < cfg.alpha, f"one-sided test p = {p:.3g} {'<' if p < cfg.alpha else '>='} {cfg.alpha:g}"
    elif cfg.rule == "wilson":
        better = c["ci95"][0] > i["ci95"][1]
        why = (f"Wilson intervals {c['ci95'][0]:.0%}-{c['ci95'][1]:.0%} vs {i['ci95'][0]:.0%}-{i['ci95'][1]:.0%} "
               f"{'do not overlap' if better else 'overlap or are lower'}")
    else:
        better = c["success_rate"] >= i["success_rate"] - cfg.margin
        why = f"not worse by more than {cfg.margin:.0%}: {'yes' if better else 'no'}"
    worse = []
    if c["intervention_rate"] > i["intervention_rate"] + cfg.intervention_margin:
        worse.append(f"intervention rate {c['intervention_rate']:.1%} vs {i['intervention_rate']:.1%}")
    cs, is_ = c["mean_steps_to_success"], i["mean_steps_to_success"]
    if cs is not None and is_ is not None and cs > is_ * (1 + cfg.steps_margin):
        worse.append(f"steps to success {cs:.0f} vs {is_:.0f}")
    head = f"success {c['success_rate']:.0%} vs {i['success_rate']:.0%}: {why}"
    passed, failed = ("not worse", "worse") if cfg.rule == "not_worse" else ("better", "not better")
    if not better:
        return Verdict(False, f"{failed}: {head}", numbers)
    if worse:
        return Verdict(False, f"{head}, but worse on " + " and ".join(worse), numbers)
    return Verdict(True, f"{passed}: {head}", numbers)


def evaluate(candidate_path: str, incumbent_path: str | None, cfg: Gate, store: EpisodeStore,
             episode_ids: list[str], robots: dict | None = None) -> Verdict:
    """Offline checks on the candidate, then both in simulation on the same layouts, then `decide`."""
    offline = offline_checks(candidate_path, cfg, store, episode_ids)
    if not offline["ok"]:
        return decide({"release": offline.get("release", "")}, None, offline, cfg)
    robots = {} if robots is None else robots
    return decide(simulate(candidate_path, cfg, robots),
                  simulate(incumbent_path, cfg, robots) if incumbent_path else None, offline, cfg)
