"""Did one option change the loop? Two recap_metaworld runs compared on the (task, seed) pairs and rounds they share.

    python benchmarks/compare_runs.py --base benchmarks/results/recap_table --other benchmarks/results/postbc \
        --out benchmarks/results/postbc/comparison

For example PostBC (posterior BC pretraining, `--postbc-alpha 1`) against the BC start of the learning table:
the same tasks, seeds, demonstrations and budgets, so the only difference is the round-0 policy and, through
it, the rollouts that rounds 1 and 2 collect and train on. A pair counts only when both runs used the same
number of demonstrations (same layouts, same operator noise: the same data); the settings that differ
between the runs' fingerprints are listed, so a comparison of more than the intended option shows it.

Per method and round: pooled success of each run with its 95% Wilson interval, the difference with
Newcombe's interval (from the two Wilson intervals), and each run's gain over its own round 0. Writes
--out/results.json and results.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from recap_metaworld import finished_runs, pooled

from robot_runtime.files import write_json_atomic
from robot_runtime.improvement_loop.metrics import newcombe_interval


def runs(out: Path) -> dict[tuple[str, int], dict]:
    """A recap_metaworld --out's finished pairs by (task, seed)."""
    return {(run["task"], run["seed"]): run for run in finished_runs(out).values()}


def differing(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two fingerprints."""
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += differing(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(f"{prefix}{key}")
    return keys


def compare(base: dict, other: dict) -> dict:
    """The comparison on the shared pairs (same demonstrations), methods and rounds."""
    shared, skipped = [], []
    for key in sorted(set(base) & set(other)):
        same = base[key]["demos"]["episodes"] == other[key]["demos"]["episodes"]
        (shared if same else skipped).append(key)
    if not shared:
        raise SystemExit("the runs share no (task, seed) pair with the same demonstrations")
    methods = [m for m in base[shared[0]]["points"] if all(m in other[k]["points"] for k in shared)]
    rounds = min(len(run["points"][methods[0]]) for run in [*(base[k] for k in shared), *(other[k] for k in shared)])
    table = {}
    for method in methods:
        table[method] = []
        for r in range(rounds):
            b = pooled([base[k]["points"][method][r] for k in shared])
            o = pooled([other[k]["points"][method][r] for k in shared])
            table[method].append({"round": r, "base": b, "other": o,
                                  "difference": o["success_rate"] - b["success_rate"],
                                  "difference_ci95": list(newcombe_interval(o["successes"], o["episodes"],
                                                                            b["successes"], b["episodes"]))})
    for rows in table.values():
        for row in rows:
            row["base_gain"] = row["base"]["success_rate"] - rows[0]["base"]["success_rate"]
            row["other_gain"] = row["other"]["success_rate"] - rows[0]["other"]["success_rate"]
    first = shared[0]
    return {"pairs": [f"{t} seed {s}" for t, s in shared],
            "skipped_other_demonstrations": [f"{t} seed {s}" for t, s in skipped],
            "settings_that_differ": differing(base[first]["fingerprint"], other[first]["fingerprint"]),
            "rounds": rounds, "table": table}


def render(report: dict, names: tuple[str, str]) -> str:
    base, other = names
    lines = [f"# {other} vs {base}, on the pairs both ran with the same demonstrations", "",
             f"Pairs ({len(report['pairs'])}): {', '.join(report['pairs'])}.",
             f"Settings that differ: {', '.join(report['settings_that_differ']) or 'none'}."
             + (f" Skipped (other demonstration counts): {', '.join(report['skipped_other_demonstrations'])}."
                if report["skipped_other_demonstrations"] else ""), "",
             f"| method | round | {base} | {other} | difference [95%] | gain over round 0: {base} / {other} |",
             "|---|---|---|---|---|---|"]
    for method, rows in report["table"].items():
        for row in rows:
            cells = []
            for point in (row["base"], row["other"]):
                low, high = point["ci95"]
                cells.append(f"{100 * point['success_rate']:.1f}% [{100 * low:.0f}-{100 * high:.0f}] "
                             f"({point['successes']}/{point['episodes']})")
            low, high = row["difference_ci95"]
            lines.append(f"| {method} | {row['round']} | {cells[0]} | {cells[1]} | {100 * row['difference']:+.1f} "
                         f"[{100 * low:+.0f}, {100 * high:+.0f}] | {100 * row['base_gain']:+.1f} / "
                         f"{100 * row['other_gain']:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="a recap_metaworld --out (the reference)")
    parser.add_argument("--other", type=Path, required=True, help="a recap_metaworld --out with the option")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = {"base": str(args.base), "other": str(args.other), **compare(runs(args.base), runs(args.other))}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", report)
    text = render(report, (args.base.name, args.other.name))
    (args.out / "results.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
