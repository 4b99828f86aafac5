"""Attention entropy of the TQL critic at two widths, with and without entropy control, on MetaWorld episodes.

    python benchmarks/tql_entropy.py --out benchmarks/results/tql_entropy     # default: ~6-10 min on 2 cores
    python benchmarks/tql_entropy.py --steps 100 --out /tmp/tql_quick         # smoke run

TQL (RESEARCH_NOTES section 2) reports that transformer critics collapse their
attention entropy as they grow and that per-layer temperatures steering entropy
to a target prevent it. This trains RECAP's value function (201-bin
cross-entropy on Monte Carlo returns, `train.train_value`) with NetConfig
critic 'tql' at d_model `--widths` (default 64 and 256; 2 layers, 4 heads),
each with and without control, on the same episodes, and records attention
entropy per (layer, {VALUE row, other rows}), the temperatures, the value loss
and explained variance, in-sample and on held-out episodes.

Episodes are generated in-process with the product's `run_episode` and the
scripted MetaWorld expert (`ScriptedOperator`, mode 'demonstrate') under action
noise from NOISE_LEVELS: low noise succeeds at varying speed, high noise mostly
times out, so returns spread over both outcomes. State observations only
(21 tokens + instruction + [VALUE] = 23 tokens; target 0.8 ln 23 = 2.51 nats).
Every fifth cycle through the noise levels (one episode per level) is held out from training.

The four runs go two at a time into worker processes with one torch thread each
(two cores); a busy machine slows them, and `uptime` is recorded in results.json.
Outputs in --out: results.json (settings, per run: final figures and curves),
results.md, entropy.png. Episodes and TensorBoard logs go to --work.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from robot_runtime.episode import EpisodeStore
from robot_runtime.improvement_loop.cycle.advantage import explained_variance
from robot_runtime.improvement_loop.data.batches import Tensors, model_inputs, prepare
from robot_runtime.improvement_loop.data.dataset import DatasetConfig, load_dataset
from robot_runtime.improvement_loop.data.text import TextEmbedder
from robot_runtime.improvement_loop.models.layers import EntropyConfig, NetConfig
from robot_runtime.improvement_loop.models.value import GROUPS
from robot_runtime.improvement_loop.recap import normalized_returns, to_bins
from robot_runtime.improvement_loop.training.train import TrainConfig, input_spec, predict_values, train_value
from robot_runtime.sim.metaworld_robot import MetaWorldRobot, SimConfig
from robot_runtime.sim.operator import OperatorConfig, ScriptedOperator
from robot_runtime.sim.rollout import run_episode

log = logging.getLogger("tql_entropy")

NOISE_LEVELS = (0.1, 0.3, 0.6, 1.0, 1.5)    # operator action noise, cycled over episodes
HELD_OUT_EVERY = 5                          # held out: episodes of every fifth cycle through NOISE_LEVELS


@dataclass(frozen=True)
class Settings:
    env_name: str = "push-v3"
    episodes: int = 60
    max_steps: int = 150
    widths: tuple[int, ...] = (64, 256)
    layers: int = 2
    heads: int = 4
    steps: int = 800
    batch_size: int = 64
    temperature_lr: float = EntropyConfig.temperature_lr
    seed: int = 0


def generate(store_root: Path, s: Settings) -> tuple[list[str], dict]:
    """Record `s.episodes` noisy demonstrations into a fresh store.

    Returns the episode ids in the order generated (the store sorts ids by start
    second, then at random) and the success counts per noise level.
    """
    robot = MetaWorldRobot(SimConfig(env_name=s.env_name, render=False, max_steps=s.max_steps))
    store = EpisodeStore(store_root)
    outcomes: dict[str, list[bool]] = {}
    ids = []
    for i in range(s.episodes):
        noise = NOISE_LEVELS[i % len(NOISE_LEVELS)]
        operator = ScriptedOperator(s.env_name, OperatorConfig(mode="demonstrate", action_noise=noise,
                                                               seed=s.seed * 100_000 + i))
        result = run_episode(robot, seed=s.seed * 100_000 + i, operator=operator, store=store,
                             campaign=f"noise_{noise}")
        outcomes.setdefault(str(noise), []).append(result.success)
        ids.append(result.episode_id)
    robot.close()
    return ids, {noise: f"{sum(ok)}/{len(ok)}" for noise, ok in outcomes.items()}


def train_one(run: str, width: int, control: bool, s: Settings, t: Tensors, returns: np.ndarray,
              held_out: np.ndarray, spec, log_dir: str) -> dict:
    """One critic (in a worker process): train on the kept rows, score kept and held-out rows."""
    net = NetConfig(d_model=width, heads=s.heads, trunk_layers=s.layers, critic="tql",
                    entropy=EntropyConfig(control=control, temperature_lr=s.temperature_lr))
    cfg = TrainConfig(steps=s.steps, batch_size=s.batch_size, seed=s.seed, threads=1, progress=False, net=net)
    kept = ~held_out
    critic, metrics = train_value(t.subset(kept), returns[kept], spec, cfg, log_dir=log_dir)
    values = predict_values(critic, t)
    with torch.no_grad():
        rows = np.flatnonzero(held_out)
        logits = critic.logits(*model_inputs(t, rows))
        held_out_ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(to_bins(returns[rows]))).item()
    return {"run": run, "d_model": width, "control": control, "tokens": critic.tokens,
            "parameters": sum(p.numel() for p in critic.parameters()),
            "target_entropy": critic.target_entropy.tolist(), "seconds": metrics["seconds"],
            "final": metrics["scalars"],
            "explained_variance_in_sample": explained_variance(returns[kept], values[kept]),
            "explained_variance_held_out": explained_variance(returns[held_out], values[held_out]),
            "cross_entropy_held_out": round(held_out_ce, 4), "curves": curves(Path(log_dir))}


def curves(log_dir: Path) -> dict[str, list[list[float]]]:
    """Every logged scalar of a run as [step, value] pairs (TensorBoard logs every 10 steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(log_dir.glob("events.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if not tag.endswith("/lr"):
                out[tag.removeprefix("value/")] = [[e.step, round(e.value, 4)] for e in acc.Scalars(tag)]
    return out


def plot(results: list[dict], layers: int, path: Path) -> None:
    """Per layer: entropy of the VALUE row and of the other rows, the temperatures; and the value loss."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(layers, 4, figsize=(18, 3.6 * layers), squeeze=False)
    colors = dict(zip(sorted({r["d_model"] for r in results}), ("C0", "C3", "C2", "C1")))

    def draw(ax, r, tag, **style):
        points = np.array(r["curves"][tag])
        ax.plot(points[:, 0], points[:, 1], color=colors[r["d_model"]], **style)

    for r in results:
        label = f"d={r['d_model']} {'control' if r['control'] else 'no control'}"
        line = "-" if r["control"] else "--"
        for layer in range(layers):
            for column, group in enumerate(GROUPS):
                draw(axes[layer, column], r, f"attention_entropy/layer{layer}_{group}", linestyle=line, label=label)
            if r["control"]:
                for group, dash in zip(GROUPS, ("-", ":")):
                    draw(axes[layer, 2], r, f"temperature/layer{layer}_{group}", linestyle=dash,
                         label=f"d={r['d_model']}, {group} rows")
        draw(axes[0, 3], r, "cross_entropy", linestyle=line, label=label)
    for layer in range(layers):
        for column, group in enumerate(GROUPS):
            ax = axes[layer, column]
            ax.axhline(results[0]["target_entropy"][layer][column], color="grey", linewidth=0.8, label="target")
            ax.axhline(math.log(results[0]["tokens"]), color="grey", linestyle=":", linewidth=0.8,
                       label="ln(tokens)")
            ax.set_title(f"layer {layer}: attention entropy, {group} rows (nats)", fontsize=10)
        axes[layer, 2].set_title(f"layer {layer}: temperature tau (controlled runs)", fontsize=10)
        axes[layer, 2].set_yscale("log")
        for ax in axes[layer, :3]:
            ax.set_xlabel("step")
        if layer:
            axes[layer, 3].axis("off")
    axes[0, 3].set_title("value cross-entropy (training batches)", fontsize=10)
    axes[0, 3].set_xlabel("step")
    axes[0, 0].legend(fontsize=7)
    axes[0, 2].legend(fontsize=7)
    axes[0, 3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def markdown(summary: dict) -> str:
    s, results = summary["settings"], summary["runs"]
    lines = [
        "# TQL critic: attention entropy with and without control",
        "",
        f"`python benchmarks/tql_entropy.py` — {s['env_name']}, {summary['episodes']} episodes "
        f"({summary['steps_of_data']} steps; successes by operator noise {summary['successes_by_noise']}), "
        f"{summary['held_out_episodes']} episodes held out (every {HELD_OUT_EVERY}th cycle through the noise "
        f"levels {list(NOISE_LEVELS)}). RECAP value objective (201-bin CE on MC returns), "
        f"{s['layers']} layers, {s['heads']} heads, {s['steps']} steps of batch {s['batch_size']}, "
        f"temperature learning rate {s['temperature_lr']:g}, "
        f"{results[0]['tokens']} tokens, target {results[0]['target_entropy'][0][0]:.2f} nats "
        f"(0.8 ln {results[0]['tokens']}; max ln {results[0]['tokens']} = {math.log(results[0]['tokens']):.2f}). "
        f"Load average at start / end: {summary['load_start']} / {summary['load_end']}; "
        f"wall time {summary['wall_seconds']:.0f} s.",
        "",
        "Final entropies are means over the last 10 % of steps (nats; V = [VALUE] row, O = other rows).",
        "",
        "| run | params | " + " | ".join(f"H L{n} {g[0].upper()}" for n in range(s["layers"]) for g in GROUPS)
        + " | tau " + " / ".join(f"L{n} V" for n in range(s["layers"]))
        + " | train CE | held-out CE | EV in-sample | EV held-out | s |",
        "|---|---|" + "---|" * (2 * s["layers"]) + "---|---|---|---|---|---|",
    ]
    for r in results:
        f, layers = r["final"], range(s["layers"])
        entropies = " | ".join(f"{f[f'attention_entropy/layer{n}_{g}']:.2f}" for n in layers for g in GROUPS)
        taus = " / ".join(f"{f[f'temperature/layer{n}_value']:.3g}" for n in layers) if r["control"] else "-"
        lines.append(f"| {r['run']} | {r['parameters']:,} | {entropies} | {taus} | {f['cross_entropy']:.3f} | "
                     f"{r['cross_entropy_held_out']:.3f} | {r['explained_variance_in_sample']} | "
                     f"{r['explained_variance_held_out']} | {r['seconds']:.0f} |")
    lines += ["", "![entropy per layer over training](entropy.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="results.json, results.md, entropy.png")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tql_entropy_work"), help="episodes, TensorBoard")
    parser.add_argument("--env", default=Settings.env_name)
    parser.add_argument("--episodes", type=int, default=Settings.episodes)
    parser.add_argument("--widths", type=int, nargs="+", default=list(Settings.widths))
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--temperature-lr", type=float, default=Settings.temperature_lr)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one torch thread each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Settings(env_name=args.env, episodes=args.episodes, widths=tuple(args.widths), steps=args.steps,
                 batch_size=args.batch_size, temperature_lr=args.temperature_lr, seed=args.seed)
    started, load_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    shutil.rmtree(args.work, ignore_errors=True)
    generated, successes = generate(args.work / "episodes", s)
    data = load_dataset(args.work / "episodes", DatasetConfig())
    t = prepare(data, data.stats(DatasetConfig()), TextEmbedder(args.work / "text_cache").embed(data.tasks))
    returns, _ = normalized_returns([e.length for e in data.episodes], [e.task_index for e in data.episodes],
                                    [e.success for e in data.episodes])
    order = {episode_id: i for i, episode_id in enumerate(generated)}
    cycle = {episode_id: i // len(NOISE_LEVELS) for episode_id, i in order.items()}
    held_out = np.array([cycle[e.episode_id] % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
                         for e in data.episodes])[data.episode_index]
    spec = input_spec(data.layout, DatasetConfig().chunk_length)
    log.info("%d episodes, %d steps (%d held out); successes by noise %s; training %d critics",
             len(data.episodes), len(data), held_out.sum(), successes, 2 * len(s.widths))
    jobs = [(f"d{width}_{'control' if control else 'plain'}", width, control)
            for width in sorted(s.widths, reverse=True) for control in (True, False)]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_one, run, width, control, s, t, returns, held_out, spec,
                               str(args.work / "tb" / run)) for run, width, control in jobs]
        results = [future.result() for future in futures]
    summary = {"settings": asdict(s), "noise_levels": NOISE_LEVELS, "episodes": len(data.episodes),
               "steps_of_data": len(data), "held_out_steps": int(held_out.sum()),
               "held_out_episodes": len(np.unique(data.episode_index[held_out])), "successes_by_noise": successes,
               "load_start": load_start, "load_end": round(os.getloadavg()[0], 2),
               "wall_seconds": round(time.perf_counter() - started, 1), "runs": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary))
    (args.out / "results.md").write_text(markdown(summary))
    plot(results, s.layers, args.out / "entropy.png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
