"""The fleet page as one HTML document from `status.fleet_status`: no script, no external file, every value
escaped (robot names, reasons and task texts come from outside)."""
from __future__ import annotations

import datetime
import json
from html import escape
from urllib.parse import quote

from robot_runtime.improvement_loop.daemon.records import STATES
from robot_runtime.improvement_loop.page import svg

HISTORY_SHOWN = 20
CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px 24px; color: #212529; max-width: 1200px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 22px 0 6px; border-bottom: 1px solid #dee2e6; }
table { border-collapse: collapse; margin: 4px 0; } td, th { padding: 3px 8px; border-bottom: 1px solid #e9ecef;
text-align: left; vertical-align: top; } th { background: #f1f3f5; font-weight: 600; }
.muted { color: #6c757d; } .ok { color: #2b8a3e; font-weight: 600; } .bad { color: #c92a2a; font-weight: 600; }
.warn { color: #e8590c; font-weight: 600; } .plots { display: flex; flex-wrap: wrap; gap: 8px 20px; }
svg.plot text { font: 11px system-ui, sans-serif; fill: #495057; } svg.plot .title { font-weight: 600; fill: #212529; }
svg.plot .grid { stroke: #e9ecef; } svg.plot .axis { stroke: #adb5bd; }
svg.plot .series { fill: none; stroke-width: 2; }
svg.plot .diagonal { stroke: #adb5bd; stroke-dasharray: 4 3; } .numbers td { font-variant-numeric: tabular-nums; }
.scalars { color: #495057; font-size: 13px; margin: 2px 8px; }
.states span { padding: 2px 6px; margin-right: 2px; border-radius: 3px; background: #f1f3f5; color: #868e96; }
.states span.done { background: #d3f9d8; color: #2b8a3e; } .states span.now { background: #1c7ed6; color: white; }
"""


def when(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    s = max(0.0, now - at)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def number(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "-"}[v]
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(number(x) for x in v) + "]"
    return str(v) if isinstance(v, (int, str)) else json.dumps(v)


def table(headers: list[str], rows: list[list[str]], css: str = "") -> str:
    """Cells are HTML already (escape them first); an empty table says so."""
    if not rows:
        return '<p class="muted">none yet</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def flat(numbers: dict, prefix: str = "", top: dict | None = None) -> dict:
    """Nested dicts as dotted keys ({"per_task": {"push-v3": {"episodes": 20}}} -> "per_task.push-v3.episodes"),
    leaving out a breakdown into one part that repeats the top level's figures (one task's figures are the total)."""
    top = numbers if top is None else top
    out = {}
    for k, v in numbers.items():
        if not (isinstance(v, dict) and v):
            out[f"{prefix}{k}"] = v
            continue
        [only] = v.values() if len(v) == 1 else [None]
        if not (isinstance(only, dict) and only and all(top.get(key) == x for key, x in only.items())):
            out.update(flat(v, f"{prefix}{k}.", top))
    return out


def numbers_table(numbers: dict) -> str:
    """A decision's numbers: the policies it compared (entries with a success rate: candidate, incumbent) side
    by side, then everything else on one line."""
    roles = {k: flat(v) for k, v in numbers.items() if isinstance(v, dict) and "success_rate" in v}
    keys = list(dict.fromkeys(k for v in roles.values() for k in v))
    out = table([""] + list(roles), [[escape(k)] + [escape(number(v.get(k))) for v in roles.values()] for k in keys],
                "numbers") if roles else ""
    rest = " · ".join(f"{escape(k)}: {escape(number(v))}"
                      for k, v in flat({k: v for k, v in numbers.items() if k not in roles}).items())
    return out + (f'<div class="scalars">{rest}</div>' if rest else "")


def _verdict(ok: bool, yes: str = "accepted", no: str = "refused") -> str:
    return f'<span class="{"ok" if ok else "bad"}">{yes if ok else no}</span>'


def _robots(status: dict) -> str:
    now, rows = status["generated_at"], []
    for r in status["robots"]:
        online = '<span class="ok">online</span>' if r["online"] else '<span class="bad">offline</span>'
        target = escape(r["target"] or "-") + (" (rollback)" if r["target_rollback"] else "")
        if r["update_pending"]:
            target += ' <span class="warn">pending</span>'
        last = r["last_install"]
        install = "-" if last is None else (escape(last["release"]) + " " + _verdict(
            last["installed"], "installed", "refused") + (f": {escape(last['cause'])} {escape(last['reason'])}"
                                                          if not last["installed"] else ""))
        rows.append([f'<span class="robot">{escape(r["robot"])}</span>', online, escape(ago(r["last_seen"], now)),
                     f'<span class="installed">{escape(r["installed"] or "-")}</span>', target,
                     escape(r["target_reason"]), install, str(r["episodes"]), escape(ago(r["last_upload"], now))])
    window = status["online_window_s"]
    return (f"<h2>Robots</h2><p class='muted'>online: polled within {window:g} s</p>"
            + table(["robot", "state", "last seen", "installed", "target", "why", "last install", "episodes",
                     "last upload"], rows, "robots"))


def _plots(status: dict) -> str:
    days = status["days"]
    charts = [svg.count_chart("episodes-per-day", "Episodes per day (by robot)", days, status["episodes_per_day"])]
    for group, label in (("rates_by_release", "release"), ("rates_by_robot", "robot")):
        for key, what in (("success_rate", "Success rate"), ("intervention_rate", "Intervention rate")):
            charts.append(svg.rate_chart(f"{key.split('_')[0]}-by-{label}", f"{what} per day by {label}", days,
                                         status[group], key))
    return f'<h2>Over the last {len(days)} days</h2><div class="plots">{"".join(charts)}</div>'


def _rates(status: dict) -> str:
    rows = []
    for version, s in status["fleet_rates"].items():
        o = s["overall"]
        per_robot = ", ".join(f"{escape(r)} {v['success_rate']:.0%} ({v['episodes']})" for r, v in s["robots"].items())
        rows.append([f'<span class="release">{escape(version)}</span>', str(o["episodes"]),
                     f"{o['success_rate']:.0%} [{o['ci95'][0]:.0%}, {o['ci95'][1]:.0%}]",
                     f"{o['intervention_rate']:.1%}", escape(number(o["mean_steps_to_success"])), per_robot,
                     escape(when(s["first_at"])), escape(when(s["last_at"]))])
    released = [[str(r["sequence"]), escape(r["name"]), "rollback" if r["rollback"] else "release",
                 escape(when(r["created"]))] for r in status["releases"]]
    return ("<h2>Releases on the fleet</h2><p class='muted'>labeled episodes per policy version; success with its "
            "95% Wilson interval</p>" + table(["policy version", "episodes", "success", "intervention", "steps to "
                                               "success", "per robot", "first", "last"], rows, "numbers")
            + "<h3>Handed out</h3>" + table(["sequence", "name", "kind", "created"], released))


def _cycle(status: dict) -> str:
    daemon, current = status["daemon"], status["current_cycle"]
    if daemon is None:
        return "<h2>Nightly cycle</h2><p class='muted'>no daemon has run on this catalog yet</p>"
    head = ('<span class="bad">paused</span> since ' + escape(when(daemon["paused_at"]))) if daemon["paused"] else \
        '<span class="ok">scheduled</span>'
    if daemon["lock_pid"]:
        head += f" · held by pid {daemon['lock_pid']} on {escape(daemon['lock_host'] or '?')}"
    out = f"<h2>Nightly cycle</h2><p>daemon: {head}; last scheduled run {escape(when(daemon['last_scheduled']))}</p>"
    if current:
        done = list(current["times"])
        steps = "".join(f'<span class="{"now" if s == current["state"] else "done" if s in done else ""}">'
                        f"{s}</span>" for s in STATES)
        out += (f'<p id="current-cycle">cycle {current["id"]}: <b class="state">{escape(current["state"])}</b> · '
                f'{escape(current["incumbent"] or "no incumbent")} → {escape(current["candidate"] or "(training)")}'
                f' · {current["snapshot"].get("new", "?")} new episodes</p><p class="states">{steps}</p>')
    else:
        out += '<p id="current-cycle" class="muted">no cycle running</p>'
    rows = [[str(c["id"]), escape(when(c["created"])), escape(c["status"]), escape(c["state"]),
             escape(c["incumbent"] or "-"), escape(c["candidate"] or "-"), escape(c["reason"])]
            for c in status["cycles"]]
    return out + table(["cycle", "started", "status", "state", "incumbent", "candidate", "reason"], rows, "cycles")


def _decisions(status: dict, kinds: tuple[str, ...]) -> str:
    rows = [[str(d["cycle_id"]), escape(d["kind"]), _verdict(d["accepted"]), escape(d["reason"]),
             numbers_table(d["numbers"]), escape(when(d["at"]))]
            for d in reversed(status["decisions"]) if d["kind"] in kinds]
    return table(["cycle", "decision", "verdict", "reason", "numbers", "at"], rows, "decisions")


def _canary(status: dict) -> str:
    history = [[escape(when(e["at"])), escape(e["robot"]), escape(e["event"]), escape(e["release"]),
                str(e["sequence"]), escape(e["detail"])] for e in status["deployment_history"][:HISTORY_SHOWN]]
    return ("<h2>Canary, promotion, rollback</h2>" + _decisions(status, ("canary", "promote", "rollback"))
            + f"<h3>Deployment history (latest {HISTORY_SHOWN}; /api/status has more)</h3>"
            + table(["at", "robot", "event", "release", "sequence", "detail"], history))


def _correlation(status: dict) -> str:
    c = status["correlation"]
    if c is None:
        return ""
    r = "needs 3 releases with both a gate result and fleet episodes" if c["r"] is None else f"{c['r']:.2f}"
    return (f'<h2>Does the gate predict the fleet?</h2><p>Pearson r over releases: <b id="gate-fleet-r">{escape(r)}'
            f"</b></p>" + svg.scatter("gate-vs-fleet", "Gate simulated success vs fleet success", c["points"]))


def _episodes(status: dict) -> str:
    rows = [[f'<a class="episode" href="/episodes/{quote(e["episode_id"], safe="")}">{escape(e["episode_id"])}</a>',
             escape(e["robot"]), escape(e["task"]), escape(e["policy_version"]), escape(e["outcome"]),
             str(e["steps"]), f"{e['intervention_steps'] / e['steps']:.0%}" if e["steps"] else "-",
             escape(when(e["received_at"]))] for e in status["recent_episodes"]]
    return "<h2>Latest episodes</h2>" + table(["episode", "robot", "task", "policy", "outcome", "steps",
                                               "intervention", "received"], rows, "episodes")


def page(status: dict) -> str:
    body = (_robots(status) + _cycle(status) + _plots(status) + "<h2>Gate results</h2>"
            + _decisions(status, ("gate",)) + _canary(status) + _rates(status) + _correlation(status)
            + _episodes(status))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Fleet</title><style>{CSS}</style>'
            f'</head><body><h1>Fleet</h1><p class="muted">as of {escape(when(status["generated_at"]))} · '
            f'<a href="/api/status">/api/status</a></p>{body}</body></html>')
