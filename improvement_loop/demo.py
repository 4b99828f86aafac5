"""`make demo`: the whole improvement loop on the simulated robot, end to end.

Starts the on-robot graph (sim_robot, scripted_operator, teleop_mux,
policy_node, recorder) as separate processes talking DDS, then:
  1. the operator demonstrates the task (teleop, every step an intervention);
  2. pretrain: value function + behaviour-cloned VLA, exported as an ONNX bundle;
  3. deploy it; autonomous episodes, the operator corrects when the robot stalls;
  4. one RECAP round: value -> advantages -> advantage-conditioned VLA, exported;
  5. redeploy; autonomous episodes with corrections again;
  6. evaluate both bundles without the operator on the same held-out layouts;
and prints success and intervention rates per stage, and where data and models went.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.episode import EpisodeStore
from robot_runtime.files import write_json_atomic, write_text_atomic
from robot_runtime.improvement_loop.cycle.rounds import CycleConfig, improve, pretrain
from robot_runtime.improvement_loop.metrics import EpisodeOutcome, RateSummary, summarize
from robot_runtime.nodes.graph_client import SIM_NODES, SIM_TOPICS, GraphClient

log = logging.getLogger("demo")


@dataclass
class DemoConfig:
    env_name: str = "push-v3"
    demos: int = 6
    rollouts: int = 20
    eval_episodes: int = 20
    control_rate_hz: float = 20.0
    max_steps: int = 120
    out: Path = Path("demo_output")
    cycle: CycleConfig = CycleConfig()


@dataclass
class StageResult:
    stage: str
    policy: str
    operator: str
    summary: RateSummary
    seconds: float


class Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.store_path = cfg.out / "episodes"
        self.work = cfg.out / "work"
        self.results: list[StageResult] = []

    def run_stage(self, client: GraphClient, stage: str, episodes: int, seed: int, operator: str,
                  bundle: str = "", policy: str = "") -> StageResult:
        """Run `episodes` episodes from layout seed `seed` with the given operator mode and bundle."""
        started = time.monotonic()
        if bundle:
            client.set_parameters("policy_node", {"bundle_path": bundle})
        client.set_parameters("scripted_operator", {"mode": operator})
        client.set_parameters("recorder", {"campaign": stage})
        client.set_parameters("sim_robot", {"seed": seed})
        store = EpisodeStore(self.store_path)
        outcomes = []
        timeout = 2 * self.cfg.max_steps / self.cfg.control_rate_hz + 30
        for i in range(episodes):
            end, commit = client.run_episode(timeout)
            ep = store.open(commit["episode_id"])
            outcomes.append(EpisodeOutcome(end["success"], ep.steps, int(ep.array("intervention").sum())))
            log.info("%s %d/%d: %s in %d steps, %d operator steps", stage, i + 1, episodes,
                     "success" if end["success"] else end["reason"], ep.steps, outcomes[-1].intervention_steps)
        result = StageResult(stage, policy or "-", operator, summarize(outcomes), time.monotonic() - started)
        self.results.append(result)
        return result

    def run(self) -> dict:
        cfg = self.cfg
        started = time.monotonic()
        if cfg.out.exists():
            shutil.rmtree(cfg.out)
        cfg.out.mkdir(parents=True)
        overrides = {
            "sim_robot": {"env_name": cfg.env_name, "control_rate_hz": cfg.control_rate_hz,
                          "max_steps": cfg.max_steps},
            "scripted_operator": {"env_name": cfg.env_name},
            "recorder": {"store_path": str(self.store_path.resolve())},
        }
        graph = GraphProcesses("sim", overrides, log_dir=cfg.out / "logs").start()
        client = GraphClient("demo")
        training = {}
        try:
            client.wait_for_graph(SIM_NODES, SIM_TOPICS)
            self.run_stage(client, "demonstrations", cfg.demos, 0, "demonstrate", policy="operator")
            t = time.monotonic()
            bc = pretrain(self.store_path, self.work, cfg.cycle)
            training["pretrain"] = {"seconds": time.monotonic() - t, "bundle": bc.bundle_path}
            bc_label = f"{cfg.cycle.model_id}@{bc.version}"
            self.run_stage(client, "bc rollouts + corrections", cfg.rollouts, 1000, "correct", bc.bundle_path, bc_label)
            t = time.monotonic()
            recap = improve(self.store_path, self.work, bc, cfg.cycle, round_index=1)
            training["round 1"] = {"seconds": time.monotonic() - t, "bundle": recap.bundle_path}
            recap_label = f"{cfg.cycle.model_id}@{recap.version}"
            self.run_stage(client, "recap rollouts + corrections", cfg.rollouts, 2000, "correct",
                           recap.bundle_path, recap_label)
            self.run_stage(client, "evaluation: bc", cfg.eval_episodes, 10_000, "off", bc.bundle_path, bc_label)
            self.run_stage(client, "evaluation: recap", cfg.eval_episodes, 10_000, "off", recap.bundle_path,
                           recap_label)
        finally:
            client.close()
            graph.stop()
        report = {
            "env_name": cfg.env_name,
            "wall_seconds": time.monotonic() - started,
            "stages": [{"stage": r.stage, "policy": r.policy, "operator": r.operator, "seconds": r.seconds,
                        **r.summary.to_json()} for r in self.results],
            "training": training,
            "episodes": str(self.store_path),
            "work": str(self.work),
        }
        write_json_atomic(cfg.out / "summary.json", report)
        write_text_atomic(cfg.out / "summary.md", render(report))
        return report


def render(report: dict) -> str:
    lines = [f"# robot_runtime demo: {report['env_name']} on the simulated robot", "",
             "| stage | policy | operator | episodes | success | 95% CI | intervention rate | steps to success |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report["stages"]:
        steps = f"{s['mean_steps_to_success']:.0f}" if s["mean_steps_to_success"] is not None else "-"
        lines.append(f"| {s['stage']} | {s['policy']} | {s['operator']} | {s['episodes']} | "
                     f"{s['success_rate']:.0%} | {s['ci95'][0]:.0%}-{s['ci95'][1]:.0%} | "
                     f"{s['intervention_rate']:.0%} | {steps} |")
    training = ", ".join(f"{stage} {t['seconds']:.0f} s" for stage, t in report["training"].items())
    lines += ["", f"Wall time: {report['wall_seconds'] / 60:.1f} min (training: {training})",
              f"Episodes (Zarr): {report['episodes']}",
              f"Bundles: {', '.join(v['bundle'] for v in report['training'].values())}",
              f"Checkpoints and TensorBoard logs: {report['work']}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DemoConfig.out)
    parser.add_argument("--task", default=DemoConfig.env_name, help="MetaWorld task, e.g. push-v3")
    parser.add_argument("--demos", type=int, default=DemoConfig.demos)
    parser.add_argument("--rollouts", type=int, default=DemoConfig.rollouts)
    parser.add_argument("--eval-episodes", type=int, default=DemoConfig.eval_episodes)
    parser.add_argument("--max-steps", type=int, default=DemoConfig.max_steps)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    cfg = DemoConfig(env_name=args.task, demos=args.demos, rollouts=args.rollouts, eval_episodes=args.eval_episodes,
                     max_steps=args.max_steps, out=args.out)
    report = Demo(cfg).run()
    print()
    print(render(report))


if __name__ == "__main__":
    main()
