"""The demo's report as Markdown: a table per stage (success, intervention rate, steps to success, episodes,
version), the gate's and canary's simulated and fleet figures, every decision of the cycle with its numbers,
wall time per stage, where things went and the fleet page's address."""
from __future__ import annotations

from robot_runtime.improvement_loop.demo.fleet import Report

HEADER = ["| stage | robot | version | episodes | success | 95% CI | intervention rate | steps to success |",
          "|---|---|---|---|---|---|---|---|"]


def _row(stage: str, robot: str, version: str, s: dict) -> str:
    steps = s.get("mean_steps_to_success")
    ci = s.get("ci95") or (0.0, 1.0)
    return (f"| {stage} | {robot} | {version or '-'} | {s['episodes']} | {s['success_rate']:.0%} | "
            f"{ci[0]:.0%}-{ci[1]:.0%} | {s['intervention_rate']:.1%} | {'-' if steps is None else f'{steps:.0f}'} |")


def _decision_rows(decisions: list[dict]) -> list[str]:
    """The gate's simulated figures and the canary's fleet figures as table rows."""
    rows = []
    for d in decisions:
        n = d["numbers"]
        if d["kind"] == "gate":
            where = f"simulated, layouts {n.get('first_layout')}+"
            for role in ("incumbent", "candidate"):
                if n.get(role) and "episodes" in n[role]:
                    rows.append(_row(f"gate: {role}", where, n[role].get("release", ""), n[role]))
        elif d["kind"] == "canary":
            for role in ("incumbent", "candidate"):
                entry = n.get(role)
                if entry and entry.get("episodes"):
                    robots = ", ".join(n.get("canary_robots", [])) if role == "candidate" else entry.get("basis", "")
                    rows.append(_row(f"canary judged: {role}", robots, entry.get("release", ""), entry))
    return rows


def _figures(d: dict) -> str:
    """A decision's deciding numbers on one line."""
    n = d["numbers"]
    if d["kind"] == "gate":
        off = n.get("offline") or {}
        parts = [f"rule {n.get('rule')}"]
        if n.get("p_value") is not None:
            parts.append(f"p = {n['p_value']:.3g}")
        for role in ("candidate", "incumbent"):
            e = n.get(role) or {}
            if "successes" in e:
                parts.append(f"{role} {e['successes']}/{e['episodes']}")
        parts.append(f"offline {'ok' if off.get('ok') else 'FAILED'} (parity error {off.get('parity_max_abs_error')}, "
                     f"{off.get('observations_checked')} recorded observations, "
                     f"{(off.get('outside_bounds_fraction') or 0):.1%} of actions outside bounds)")
        return "; ".join(parts)
    if d["kind"] == "canary":
        return f"rule {n.get('rule')}, {n.get('episodes_needed')} candidate episodes needed on {n.get('canary_robots')}"
    return ", ".join(f"{k} {v}" for k, v in n.items())


def render(report: Report) -> str:
    lines = [f"# robot_runtime fleet demo: {report.env_name}, robots {', '.join(report.robots)}", ""]
    stages = list(dict.fromkeys(r.stage for r in report.rows))
    body = [_row(r.stage, r.robot, r.policy, r.summary) for stage in stages for r in report.rows if r.stage == stage]
    lines += ["## Stages", "", *HEADER, *body]
    decided = _decision_rows(report.decisions)
    if decided:
        lines += ["", "## What the daemon measured", "", *HEADER, *decided]
    if report.cycle:
        c = report.cycle
        lines += ["", f"## Cycle {c['id']}: {c['status']} in state {c['state']}", "",
                  f"trained {c.get('method', '-')}; incumbent {c['incumbent'] or '-'}, candidate "
                  f"{c['candidate'] or '-'}; {c['reason']}", ""]
        for d in report.decisions:
            lines.append(f"- **{d['kind']}: {'accepted' if d['accepted'] else 'refused'}**: {d['reason']}  ")
            lines.append(f"  {_figures(d)}")
        times = c.get("times") or {}
        spent = [f"{s} {t['finished'] - t['started']:.0f} s" for s, t in times.items()
                 if t.get("started") and t.get("finished")]
        lines += ["", "Daemon states: " + ", ".join(spent)]
    if report.fleet:
        lines += ["", "Fleet at the end: " + "; ".join(f"{robot} runs {current or '-'} (target {target or '-'})"
                                                     for robot, (target, current) in report.fleet.items())]
    lines += ["", "Wall time: " + ", ".join(f"{stage} {s:.0f} s" for stage, s in report.seconds.items())]
    for note in report.notes:
        lines.append(f"Note: {note}")
    for what, path in report.paths.items():
        lines.append(f"{what}: {path}")
    if report.page_url:
        lines.append(f"Fleet page (served while the demo ran): {report.page_url}")
    return "\n".join(lines) + "\n"
