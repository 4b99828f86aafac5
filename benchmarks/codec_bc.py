"""Does a lossy camera store cost learning? Round-0 BC success with pixels, per camera codec, same seeds.

    python benchmarks/codec_bc.py --out benchmarks/results/codec_bc

For each codec setting, `recap_metaworld.py --obs pixels --rounds 0` (same tasks, seeds, demonstration
counts, held-out layouts and training budget) writes its demonstrations through that codec, trains the
behaviour-cloned policy from the frames read back, and evaluates it on 50 held-out layouts per
(task, seed); each setting's run lives in DIR/<setting>/ and resumes from its finished pairs.

The rule (issue 15): the default is the smallest setting, by MB per 1,000 steps in
`--sizes` (benchmarks/episode_codecs.py's results), whose pooled success lies within the 95% Wilson
interval of lossless. Try the settings smallest first: once one is inside, larger ones cannot be chosen
(av1-44, the smallest measured, was inside, so the default run tries only it). DIR/results.json: per
setting its pooled success, interval, per task and seed figures, and `default`; results.md the table.

Decisions: V_pre, which round 0 does not use, trains for 50 steps only (`--value-steps 50`, the same
for every setting); demonstrations are the benchmark's fixed starting counts per task (no search, so
every setting trains on the same layouts); tasks are the RECAP table's five.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recap_metaworld import DEFAULT_DEMOS, DEFAULT_TASKS, START_DEMOS

from robot_runtime.improvement_loop.metrics import wilson_interval

HERE = Path(__file__).resolve().parent
SETTINGS = ("lossless", "av1-44")   # av1-44: the smallest setting benchmarks/episode_codecs.py measures
SIZES = HERE / "results" / "episode_codecs" / "results.json"


def run_setting(setting: str, args: argparse.Namespace) -> Path:
    """recap_metaworld's round-0 run for one codec setting (resumes from its finished pairs)."""
    demos = ",".join(f"{t}={DEFAULT_DEMOS.get(t, START_DEMOS)}" for t in args.tasks)
    out = args.out / setting
    command = [sys.executable, str(HERE / "recap_metaworld.py"), "--obs", "pixels", "--rounds", "0",
               "--seeds", str(args.seeds), "--eval-episodes", str(args.eval_episodes), "--value-steps", "50",
               "--jobs", str(args.jobs), "--tasks", ",".join(args.tasks), "--demos", demos,
               "--image-codec", setting.replace("-", ":"), "--out", str(out), "--work", str(args.work / setting)]
    subprocess.run(command, check=True)
    return out


def pooled(out: Path, tasks, seeds: int) -> dict:
    """Round-0 success pooled over the finished (task, seed) pairs of one setting."""
    per_pair, successes, episodes = {}, 0, 0
    for task in tasks:
        for seed in range(seeds):
            path = out / "runs" / f"{task}_seed{seed}.json"
            if not path.is_file():
                continue
            [point] = json.loads(path.read_text())["points"]["bc"]
            per_pair[f"{task}_seed{seed}"] = {"successes": point["successes"], "episodes": point["episodes"]}
            successes += point["successes"]
            episodes += point["episodes"]
    low, high = wilson_interval(successes, episodes) if episodes else (None, None)
    return {"pairs": per_pair, "successes": successes, "episodes": episodes,
            "success_rate": round(successes / episodes, 4) if episodes else None, "ci95": [low, high]}


def choose_default(results: dict, sizes: dict) -> str | None:
    """The smallest lossy setting whose pooled success is inside lossless's interval."""
    low, high = results["lossless"]["ci95"]
    inside = [s for s, r in results.items() if s != "lossless" and r["success_rate"] is not None
              and low <= r["success_rate"] <= high]
    return min(inside, key=lambda s: sizes[s]) if inside else None


def render(report: dict) -> str:
    lines = [f"# Round-0 BC with pixels per camera codec ({report['seeds']} seeds x {len(report['tasks'])} tasks x "
             f"{report['eval_episodes']} held-out episodes)", "",
             "| setting | MB / 1,000 steps | success (pooled) | 95% interval | "
             + " | ".join(report["tasks"]) + " |", "|---|---|---|---|" + "---|" * len(report["tasks"])]
    for setting, r in report["settings"].items():
        size = report["mb_per_1000_steps"][setting]
        if not r["episodes"]:
            lines.append(f"| {setting} | {size} | not run | |" + " |" * len(report["tasks"]))
            continue
        per_task = []
        for task in report["tasks"]:
            pairs = [p for k, p in r["pairs"].items() if k.startswith(task + "_seed")]
            per_task.append(" / ".join(str(p["successes"]) for p in pairs) + f" of {pairs[0]['episodes']}"
                            if pairs else "-")
        low, high = r["ci95"]
        lines.append(f"| {setting} | {size} | {100 * r['success_rate']:.1f}% | {100 * low:.1f}-{100 * high:.1f}% | "
                     + " | ".join(per_task) + " |")
    lines += ["", f"Per task: successes of each seed. Default (smallest setting inside lossless's interval): "
              f"**{report['default']}**."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/codec_bc"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="codec-quality names, e.g. av1-44")
    parser.add_argument("--tasks", type=lambda text: tuple(text.split(",")), default=DEFAULT_TASKS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sizes", type=Path, default=SIZES, help="episode_codecs results.json (MB per setting)")
    parser.add_argument("--report-only", action="store_true", help="tabulate the finished pairs, run nothing")
    args = parser.parse_args(argv)
    if "lossless" not in args.settings:
        parser.error("--settings must include lossless (the reference)")
    sizes = {name: c["mb_per_1000_steps"] for name, c in json.loads(args.sizes.read_text())["codecs"].items()}
    unknown = [s for s in args.settings if s not in sizes]
    if unknown:
        parser.error(f"no size for {unknown} in {args.sizes}; settings there: {sorted(sizes)}")
    results = {s: pooled(args.out / s if args.report_only else run_setting(s, args), args.tasks, args.seeds)
               for s in args.settings}
    report = {"tasks": list(args.tasks), "seeds": args.seeds, "eval_episodes": args.eval_episodes,
              "mb_per_1000_steps": {s: sizes[s] for s in args.settings}, "settings": results,
              "default": choose_default(results, sizes) if results["lossless"]["episodes"] else None}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(render(report))
    print(render(report))
    return report


if __name__ == "__main__":
    main()
