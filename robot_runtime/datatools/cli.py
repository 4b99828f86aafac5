"""robot-runtime-episodes: list, inspect, validate, export and view episodes; import rosbag2 bags.

    robot-runtime-episodes list STORE [--outcome success] [--campaign NAME] [--task TEXT]
    robot-runtime-episodes inspect STORE ID [--json]
    robot-runtime-episodes validate STORE [--strict] [--quarantine]
    robot-runtime-episodes export STORE ID --format npz|mp4|html --out PATH
    robot-runtime-episodes export STORE [ID...] --format store --codec h264:26 [--codec CAMERA=jpeg:90] --out STORE2
    robot-runtime-episodes view STORE ID --out episode.html
    robot-runtime-episodes import-bag BAG --mapping MAPPING.yaml --store STORE [--dry-run]

`validate` checks every file of every committed episode against its commit.json, then the
attributes, labels and rows; it exits 1 and prints one line per problem,
`<episode>/<file, array or attribute>: what is wrong`; `--quarantine` moves those episodes
into the store's quarantine/. `export --format store` transcodes episodes (default: all) into
another store with other camera codecs (`CODEC[:QUALITY]` for every camera, `CAMERA=CODEC[:QUALITY]`
for one; a camera not named keeps its codec), keeping ids, rows, metadata and labels.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from robot_runtime.datatools.viewer import spans, write_html, write_mp4
from robot_runtime.episode import OUTCOMES, REQUIRED_ATTRS, CommitRecord, Episode, EpisodeError, EpisodeStore


def _open_store(root: str) -> EpisodeStore:
    return EpisodeStore(root, create=False)


def _open_episode(root: str, episode_id: str) -> Episode:
    store = _open_store(root)
    if not (store.episodes_dir / episode_id).is_dir():
        raise EpisodeError(f"{store.root}: no episode '{episode_id}' in episodes/ (see `list`)")
    return store.open(episode_id)


def _time(seconds) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(seconds))) if seconds else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- list -------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    store = _open_store(args.store)
    rows = []
    for episode_id in store.episode_ids():
        try:
            ep = store.open(episode_id)
            intervention = ep.array("intervention")
        except EpisodeError as err:
            rows.append([episode_id, f"(unreadable: {err})", "", "", "", "", "", ""])
            continue
        meta = ep.meta
        campaign = (meta.get("extra") or {}).get("campaign", "")
        if args.outcome and meta.get("outcome") != args.outcome:
            continue
        if args.campaign is not None and campaign != args.campaign:
            continue
        if args.task and args.task.lower() not in meta.get("task", "").lower():
            continue
        share = f"{intervention.mean() * 100:.1f}" if ep.steps else "-"
        rows.append([episode_id, meta.get("task", ""), str(ep.steps), meta.get("outcome", ""),
                     "yes" if meta.get("truncated") else "no", share, meta.get("policy_version") or "-",
                     _time(meta.get("start_time"))])
    if args.json:
        keys = ["id", "task", "steps", "outcome", "truncated", "interventions_pct", "policy_version", "start"]
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=1))
    else:
        print(_table(rows, ["id", "task", "steps", "outcome", "truncated", "interv %", "policy", "start (UTC)"]))
        print(f"{len(rows)} episode(s)")
    return 0


# -- inspect ----------------------------------------------------------------------------------
def describe(ep: Episode) -> dict:
    """Metadata, arrays, spans and summary statistics of one episode, JSON-ready."""
    # Episode() has checked that every array has exactly these shapes and dtypes.
    arrays = {name: {"shape": [ep.steps, *shape], "dtype": str(dtype)}
              for name, (shape, dtype) in ep.layout.arrays().items()}
    t = ep.array("timestamp")
    intervention, held = ep.array("intervention"), ep.array("held")
    action, proposed, state = ep.array("action"), ep.array("policy_action"), ep.array("state")

    def stats(values, names):
        if not len(values):
            return {}
        return {n: {"min": float(np.nanmin(values[:, i])), "mean": float(np.nanmean(values[:, i])),
                    "max": float(np.nanmax(values[:, i]))} for i, n in enumerate(names)}

    def span_list(mask):
        return [{"steps": [a, b], "seconds": [round(float(t[a] - t[0]), 3), round(float(t[b - 1] - t[0]), 3)]}
                for a, b in spans(mask)]

    proposed_rows = np.all(np.isfinite(proposed), axis=1) if len(proposed) else np.zeros(0, bool)
    both = proposed_rows & ~intervention
    periods = np.diff(t)
    return {
        "metadata": ep.meta,
        "arrays": arrays,
        "steps": ep.steps,
        "duration_s": float(t[-1] - t[0]) if ep.steps else 0.0,
        "period_s": {"mean": float(periods.mean()), "max": float(periods.max())} if len(periods) else {},
        "intervention_steps": int(intervention.sum()),
        "intervention_spans": span_list(intervention),
        "held_steps": int(held.sum()),
        "held_spans": span_list(held),
        "policy_coverage": float(proposed_rows.mean()) if ep.steps else 0.0,
        "policy_vs_executed_mean_abs": (float(np.abs(action[both] - proposed[both]).mean())
                                        if both.any() else None),
        "state": stats(state, ep.layout.state_names),
        "action": stats(action, ep.layout.action_names),
    }


def cmd_inspect(args) -> int:
    info = describe(_open_episode(args.store, args.episode_id))
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    meta = info["metadata"]
    print(f"episode {meta['episode_id']}")
    for key in REQUIRED_ATTRS:
        if key not in ("layout", "episode_id"):
            value = _time(meta.get(key)) + " UTC" if key in ("start_time", "end_time") else meta.get(key)
            print(f"  {key:16} {value}")
    print(f"  {'cameras':16} {meta['layout']['cameras']}")
    print(f"  {'state_names':16} {meta['layout']['state_names']}")
    print(f"  {'action_names':16} {meta['layout']['action_names']}")
    print("arrays")
    for name, spec in info["arrays"].items():
        print(f"  {name:24} {str(tuple(spec['shape'])):22} {spec['dtype']}")
    print(f"steps {info['steps']}, {info['duration_s']:.3f} s"
          + (f", period mean {info['period_s']['mean'] * 1e3:.1f} ms max {info['period_s']['max'] * 1e3:.1f} ms"
             if info["period_s"] else ""))
    for kind in ("intervention", "held"):
        listed = ", ".join(f"{s['steps'][0]}-{s['steps'][1] - 1} ({s['seconds'][0]:.2f}-{s['seconds'][1]:.2f} s)"
                           for s in info[f"{kind}_spans"]) or "none"
        print(f"{kind}: {info[f'{kind}_steps']} step(s); spans {listed}")
    print(f"policy proposals on {info['policy_coverage'] * 100:.1f}% of steps"
          + (f"; mean |executed - proposed| off-intervention {info['policy_vs_executed_mean_abs']:.4g}"
             if info["policy_vs_executed_mean_abs"] is not None else ""))
    for kind in ("state", "action"):
        print(kind)
        for name, s in info[kind].items():
            print(f"  {name:20} min {s['min']:10.4g}  mean {s['mean']:10.4g}  max {s['max']:10.4g}")
    return 0


# -- validate ---------------------------------------------------------------------------------
def validate_episode(path: Path) -> tuple[list[str], list[str]]:
    """(problems, notes) of one committed episode directory, each `<id>/<file, array or attribute>: what`.

    Every file is checked against commit.json and every damaged one listed, not only the
    first; the rows are checked only when the files are sound (damaged rows mean nothing).
    """
    name = path.name
    try:
        ep = Episode(path)  # checks the metadata files, attributes, labels and array shapes
    except EpisodeError as err:
        problems = list(err.problems)
        try:  # what kept it from opening, and every other damaged file
            record = CommitRecord.read(path)
            problems += [p for p in (record.problem(path, file) for file in record.files or ())
                         if p and p not in problems]
        except EpisodeError:
            pass
        return [f"{name}/{problem}" for problem in problems], []
    notes = [] if ep.record.files is not None else [
        f"{name}: schema {ep.record.schema_version}, carries no checksums; its files cannot be verified"]
    problems = ep.verify()
    if ep.meta["episode_id"] != name:
        problems.append(f"attrs.episode_id: {ep.meta['episode_id']!r} differs from the directory name")
    if not problems:
        problems = row_problems(ep)
    return [f"{name}/{problem}" for problem in problems], notes


def row_problems(ep: Episode) -> list[str]:
    """What is wrong with the rows of a readable episode, each `<array>: what`."""
    try:
        arrays = {a: ep.array(a) for a in ep.layout.arrays()}  # decodes every chunk, images included
    except EpisodeError as err:
        return err.problems
    problems = []
    t = arrays["timestamp"]
    if not np.all(np.isfinite(t)):
        problems.append(f"timestamp: {int((~np.isfinite(t)).sum())} non-finite value(s)")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if len(bad):
        problems.append(f"timestamp: not strictly increasing at step(s) {(bad + 1)[:10].tolist()}")
    for array in ("state", "action"):
        rows = np.flatnonzero(~np.all(np.isfinite(arrays[array]), axis=1))
        if len(rows):
            problems.append(f"{array}: NaN or inf at {len(rows)} step(s), first {rows[:10].tolist()}")
    proposed = arrays["policy_action"]
    mixed = np.flatnonzero(np.any(np.isnan(proposed), axis=1) & ~np.all(np.isnan(proposed), axis=1))
    if len(mixed):
        problems.append(f"policy_action: partly NaN rows (NaN must mean the whole row: no policy) "
                        f"at step(s) {mixed[:10].tolist()}")
    if np.isinf(proposed).any():
        problems.append("policy_action: inf values")
    both = np.flatnonzero(arrays["intervention"] & arrays["held"])
    if len(both):
        problems.append(f"intervention,held: both true at step(s) {both[:10].tolist()}")
    return problems


def validate_store(store: EpisodeStore) -> tuple[dict[str, list[str]], list[str]]:
    """(problems by episode id, notes): problems of committed episodes; notes on schema 1 episodes,
    staging/ and quarantine/."""
    problems, notes = {}, []
    for path in sorted(p for p in store.episodes_dir.iterdir() if p.is_dir()):
        found, more_notes = validate_episode(path)
        notes += more_notes
        if found:
            problems[path.name] = found
    for directory, what in ((store.staging_dir, "in progress, or left by a crash (EpisodeStore.recover() salvages "
                                                "it)"),
                            (store.quarantine_dir, "quarantined; needs a human")):
        if directory.is_dir():
            notes += [f"{directory.name}/{p.name}: {what}" for p in sorted(directory.iterdir())]
    return problems, notes


def cmd_validate(args) -> int:
    store = _open_store(args.store)
    checked = sum(1 for p in store.episodes_dir.iterdir() if p.is_dir())
    problems, notes = validate_store(store)
    for line in (line for found in problems.values() for line in found):
        print(line)
    for line in notes:
        print(line, file=sys.stderr)
    if args.quarantine:
        for episode_id in problems:
            try:
                store.quarantine(episode_id)
            except EpisodeError as err:
                print(f"error: {err}", file=sys.stderr)
            else:
                print(f"quarantine/{episode_id}: moved there from episodes/ (readers no longer see it)",
                      file=sys.stderr)
    print(f"{checked} episode(s) checked, {len(problems)} with problems ({sum(map(len, problems.values()))}); "
          f"{len(notes)} note(s) (schema 1, staging, quarantine)", file=sys.stderr)
    return 1 if problems or (args.strict and notes) else 0


# -- export / view ----------------------------------------------------------------------------
def export_npz(ep: Episode, out: Path) -> Path:
    arrays = {name.replace("/", "_"): ep.array(name) for name in ep.layout.arrays()}
    np.savez_compressed(out, meta=np.array(json.dumps(ep.meta, default=str)), **arrays)
    return out


def cmd_export(args) -> int:
    if args.format == "store":
        return _export_store(args)
    if len(args.episode_id) != 1:
        raise _Failure(f"--format {args.format} writes one episode: give exactly one id")
    if args.codec:
        raise _Failure("--codec is for --format store")
    ep = _open_episode(args.store, args.episode_id[0])
    out = Path(args.out)
    if args.format == "npz":
        export_npz(ep, out)
    elif args.format == "mp4":
        write_mp4(ep, out)
    else:
        write_html(ep, out, max_frames=args.max_frames)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def _export_store(args) -> int:
    from robot_runtime.capture.codecs import CodecError, parse_codec_choices
    from robot_runtime.datatools.transcode import transcode_store

    if not args.codec:
        raise _Failure("--format store needs --codec (e.g. --codec h264:26)")
    try:
        choices = parse_codec_choices(args.codec)
    except CodecError as err:
        raise _Failure(str(err)) from None
    started = time.monotonic()
    report = transcode_store(_open_store(args.store), EpisodeStore(args.out), choices,
                             args.episode_id or None, args.skip_existing)
    for episode_id, why in report.failed.items():
        print(f"{episode_id}: not transcoded: {why}", file=sys.stderr)
    print(f"{len(report.written)} episode(s) written to {args.out}, {len(report.skipped)} already there, "
          f"{len(report.failed)} failed, in {time.monotonic() - started:.1f} s")
    return 1 if report.failed else 0


def cmd_view(args) -> int:
    args.format = "html"
    args.episode_id, args.codec = [args.episode_id], []
    return cmd_export(args)


# -- import-bag -------------------------------------------------------------------------------
def _mapping_from_args(args) -> dict:
    import yaml

    data = {}
    if args.mapping:
        try:
            data = yaml.safe_load(Path(args.mapping).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SystemExit(f"error: {args.mapping}: cannot read mapping ({err})") from None
        if not isinstance(data, dict):
            raise SystemExit(f"error: {args.mapping}: the mapping must be a YAML mapping of keys")
    for key, value in (("task", args.task), ("outcome", args.outcome), ("robot_id", args.robot_id),
                       ("campaign", args.campaign), ("policy_version", args.policy_version),
                       ("operator", args.operator), ("control_rate_hz", args.rate), ("time", args.time),
                       ("action_alignment", args.alignment), ("intervention", args.intervention),
                       ("episode_events", args.events)):
        if value is not None:
            data[key] = value

    def joint(key, topic=None, names=None):
        current = data.get(key) or {}
        current = {"topic": current} if isinstance(current, str) else dict(current)
        if topic:
            current["topic"] = topic
        if names:
            current["names"] = [n.strip() for n in names.split(",") if n.strip()]
        data[key] = current

    if args.state or args.state_names:
        joint("state", args.state, args.state_names)
    if args.action or args.action_names or args.action_from_state:
        joint("action", args.action, args.action_names)
        if args.action_from_state:
            data["action"].pop("topic", None)
            data["action"]["from_state"] = True
    if args.policy_action:
        joint("policy_action", args.policy_action)
    for spec in args.camera or []:
        name, _, topic = spec.partition("=")
        topic, _, size = topic.partition("@")
        if not name or not topic:
            raise SystemExit(f"error: --camera {spec!r}: expected NAME=TOPIC or NAME=TOPIC@HxW")
        cameras = data.setdefault("cameras", {})
        cameras[name] = {"topic": topic}
        if size:
            try:
                cameras[name]["size"] = [int(v) for v in size.lower().split("x")]
            except ValueError:
                raise SystemExit(f"error: --camera {spec!r}: size must be HxW, e.g. 96x96") from None
    return data


def cmd_import_bag(args) -> int:
    from robot_runtime.datatools.bag_import import BagMapping, import_bag, plan_bag
    from robot_runtime.datatools.rosbag import Bag, BagError

    mapping = BagMapping.from_dict(_mapping_from_args(args), source=args.mapping or "command line")
    if args.dry_run:
        try:
            with Bag(args.bag) as bag:
                _, plans, skipped = plan_bag(bag, mapping)
        except BagError as err:
            raise _Failure(str(err)) from None
        for plan in plans:
            print(f"would import {plan.episode_id}: {plan.steps} steps at {plan.rate_hz:g} Hz, {plan.outcome}"
                  f"{' (truncated)' if plan.truncated else ''}, {int(plan.intervention.sum())} intervention steps, "
                  f"task {plan.task!r}")
        for line in skipped:
            print(f"skipped: {line}", file=sys.stderr)
        return 0
    store = EpisodeStore(args.store)
    result = import_bag(args.bag, mapping, store, skip_existing=args.skip_existing)
    for episode_id in result.committed:
        ep = store.open(episode_id)
        print(f"committed {episode_id}: {ep.steps} steps, {ep.outcome}{' (truncated)' if ep.meta['truncated'] else ''}")
    for line in result.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    return 0


class _Failure(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-runtime-episodes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="one line per committed episode")
    p.add_argument("store")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--campaign", help="exact campaign label (extra.campaign)")
    p.add_argument("--task", help="case-insensitive substring of the task")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("inspect", help="metadata, arrays, intervention spans, statistics of one episode")
    p.add_argument("store")
    p.add_argument("episode_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("validate", help="check every file of every committed episode; exit 1 on any problem")
    p.add_argument("store")
    p.add_argument("--strict", action="store_true",
                   help="also fail on notes: schema 1 episodes (no checksums), anything in staging/ or quarantine/")
    p.add_argument("--quarantine", action="store_true",
                   help="move every episode with a problem into the store's quarantine/")
    p.set_defaults(func=cmd_validate)

    for name, help_text in (("export", "write one episode as npz, mp4 or html, or episodes into another store "
                                       "with other camera codecs"),
                            ("view", "write the HTML viewer page of one episode")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("store")
        if name == "export":
            p.add_argument("episode_id", nargs="*", help="one for npz/mp4/html; for store, default all")
            p.add_argument("--format", choices=("npz", "mp4", "html", "store"), required=True)
            p.add_argument("--codec", action="append", default=[], metavar="[CAMERA=]CODEC[:QUALITY]",
                           help="store: the new camera codec (lossless, jpeg, h264, av1)")
            p.add_argument("--skip-existing", action="store_true", help="store: leave episodes already in OUT")
        else:
            p.add_argument("episode_id")
        p.add_argument("--out", required=True)
        p.add_argument("--max-frames", type=int, default=150, help="HTML: frames kept per camera")
        p.set_defaults(func=cmd_export if name == "export" else cmd_view)

    p = sub.add_parser("import-bag", help="import a rosbag2 bag (sqlite3 or MCAP) into episodes")
    p.add_argument("bag", help="bag directory (with metadata.yaml), .db3 or .mcap file")
    p.add_argument("--mapping", help="YAML topic mapping (see robot_runtime/bag_import.py); flags override it")
    p.add_argument("--store", required=True)
    p.add_argument("--camera", action="append", metavar="NAME=TOPIC[@HxW]")
    p.add_argument("--state", metavar="TOPIC")
    p.add_argument("--state-names", metavar="A,B,C")
    p.add_argument("--action", metavar="TOPIC")
    p.add_argument("--action-names", metavar="A,B,C")
    p.add_argument("--action-from-state", action="store_true", help="action = next step's state")
    p.add_argument("--policy-action", metavar="TOPIC")
    p.add_argument("--intervention", metavar="TOPIC", help="std_msgs/Bool")
    p.add_argument("--events", metavar="TOPIC", help="std_msgs/String episode events (JSON start/end)")
    p.add_argument("--task")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--robot-id")
    p.add_argument("--campaign")
    p.add_argument("--policy-version")
    p.add_argument("--operator")
    p.add_argument("--rate", type=float, help="control rate in Hz (default: events, else the state's median)")
    p.add_argument("--time", choices=("bag", "header"))
    p.add_argument("--alignment", choices=("next", "same"))
    p.add_argument("--skip-existing", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    p.set_defaults(func=cmd_import_bag)
    return parser


def main(argv: list[str] | None = None) -> int:
    from robot_runtime.datatools.bag_import import BagImportError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (EpisodeError, BagImportError, _Failure) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except FileNotFoundError as err:
        print(f"error: {err.filename}: not found", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
