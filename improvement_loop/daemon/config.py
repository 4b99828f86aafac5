"""The daemon's one YAML file, parsed into typed dataclasses; anything unknown or mistyped is refused by name.

See config/daemon.yaml for every key with its meaning. Relative paths are relative to the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter

from robot_runtime.files import UnsafeNameError, check_name
from robot_runtime.improvement_loop.cycle.methods import DEFAULT_METHOD, ROUND_METHODS
from robot_runtime.improvement_loop.fleet.deployments import DeploymentError, read_release
from robot_runtime.sim.metaworld_robot import TASK_INSTRUCTIONS

GATE_RULES = ("one_sided_test", "wilson", "not_worse")
GATE_OPERATORS = ("watch", "correct", "off")
CANARY_RULES = ("not_worse", "wilson")


class ConfigError(ValueError):
    """The daemon's config is wrong; the message names the file, the key and what to write instead."""


@dataclass(frozen=True)
class Fleet:
    robots: list[str]                 # every robot the daemon deploys to (their authenticated key names)
    canary: list[str]                 # the subset that gets a candidate first
    baseline_release: str = ""        # signed release the robots were provisioned with: the incumbent until the
    #                                   daemon's first release (so a first candidate has something to beat and
    #                                   to roll back to); "" = none


@dataclass(frozen=True)
class Schedule:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class Training:
    pretrained: str                   # the pretrain stage's result.json every round starts from
    launcher: list[str] = field(default_factory=list)   # e.g. [torchrun, --nproc_per_node=2]; empty: a plain child
    train_command: str = "robot-runtime-train"
    model_id: str = "vla"
    method: str = DEFAULT_METHOD      # what a round trains: ROUND_METHODS (cycle/methods.py says why this default)
    beta: float = 1.0                 # RECAP's CFG weight (method recap)
    value_steps: int = 300
    policy_steps: int = 300
    threads: int = 1
    extra_args: list[str] = field(default_factory=list)  # more robot-runtime-train flags (labels, critic...)
    progress_labels: bool = False     # the progress reward model labels the snapshot's unlabeled episodes
    progress_min_confidence: float = 0.9   # ... those whose predicted outcome is at least this likely


@dataclass(frozen=True)
class Gate:
    tasks: list[str] = field(default_factory=lambda: ["push-v3"])   # MetaWorld tasks, each in the bundle
    first_layout: int = 100_000       # layout seeds first_layout .. first_layout + episodes - 1, same for both
    episodes: int = 20                # per task and per policy
    max_steps: int = 150
    render: bool = False              # cameras (a bundle that reads images needs them)
    control_rate_hz: float = 20.0
    operator: str = "watch"           # GATE_OPERATORS (see gate.py): how simulation measures interventions
    rule: str = "one_sided_test"      # GATE_RULES (see gate.py)
    alpha: float = 0.05               # one_sided_test: significance level
    margin: float = 0.0               # not_worse: candidate success >= incumbent's - margin
    intervention_margin: float = 0.0  # intervention rate may grow by at most this
    steps_margin: float = 0.1         # steps to success may grow by at most this fraction
    first_release_min_success: float = 0.5   # with no incumbent: the candidate's simulated success at least this
    observations: int = 64            # recorded observations from the snapshot for the offline checks
    parity_tolerance: float = 1e-4    # the export's recorded ONNX-vs-torch error must be at most this
    max_outside_bounds: float = 0.5   # share of actions on recorded observations allowed past the bounds


@dataclass(frozen=True)
class Canary:
    episodes: int = 10                # candidate episodes on the canary robots before a decision
    rule: str = "not_worse"           # CANARY_RULES (see canary.py)
    margin: float = 0.1               # not_worse: success may fall and intervention rise by at most this
    timeout_hours: float = 24.0       # no decision by then: rolled back (too few canary episodes)
    poll_seconds: float = 60.0


@dataclass(frozen=True)
class Page:
    serve: bool = True                # `run` serves the fleet page (improvement_loop/page) beside the schedule
    host: str = "127.0.0.1"           # any other address needs token_file (the page refuses to start without)
    port: int = 5871
    token_file: str = ""              # file holding the access token (or ROBOT_RUNTIME_PAGE_TOKEN in the environment)
    online_window_s: float = 300.0    # a robot is online if it polled within this many seconds
    days: int = 14                    # days shown in the plots


@dataclass(frozen=True)
class DaemonConfig:
    store: str                        # the episode store the ingest server writes
    catalog: str                      # the catalog's SQLite file (episodes, deployments, the daemon's records)
    work: str                         # cycle work directories and the lock file
    release_key: str                  # release secret key (<name>.release.pem) that signs candidates
    fleet: Fleet
    training: Training
    schedule: Schedule = field(default_factory=Schedule)
    min_new_episodes: int = 20        # fewer new labeled episodes since the last cycle: skipped
    gate: Gate = field(default_factory=Gate)
    canary: Canary = field(default_factory=Canary)
    page: Page = field(default_factory=Page)
    source: str = ""                  # the file it came from (not a key)

    def digest(self) -> str:
        """sha256 of the settings (not the file name): a cycle records which settings it ran with."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.schedule.timezone)


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (copy config/daemon.yaml and edit it)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = _build(DaemonConfig, data, path, "")
    paths = {name: str((path.parent / getattr(cfg, name)).resolve()) for name in ("store", "catalog", "work",
                                                                                    "release_key")}
    training = dataclasses.replace(cfg.training, pretrained=str((path.parent / cfg.training.pretrained).resolve()))
    page = dataclasses.replace(cfg.page, token_file=str((path.parent / cfg.page.token_file).resolve())
                               if cfg.page.token_file else "")
    fleet = dataclasses.replace(cfg.fleet, baseline_release=str((path.parent / cfg.fleet.baseline_release).resolve())
                                if cfg.fleet.baseline_release else "")
    cfg = dataclasses.replace(cfg, **paths, fleet=fleet, training=training, page=page, source=str(path.resolve()))
    _check(cfg, path)
    return cfg


def _build(cls, data, path: Path, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where or 'the file'} must be a mapping of keys, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown key {where}{unknown[0]!r}; known keys{' of ' + where[:-1] if where else ''}"
                          f": {sorted(known)}")
    values = {}
    for name, f in known.items():
        key = f"{where}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing key {key!r}")
            continue
        values[name] = _value(hints[name], data[name], path, key)
    return cls(**values)


def _value(kind, value, path: Path, key: str):
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, path, f"{key}.")
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {key} must be a list of {item.__name__}, not {value!r}")
        return [_value(item, v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
    if not ok:
        what = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(kind, kind.__name__)
        raise ConfigError(f"{path}: {key} must be {what}, not {value!r}")
    return float(value) if kind is float else value


def _check(cfg: DaemonConfig, path: Path) -> None:
    problems = []
    if not croniter.is_valid(cfg.schedule.cron):
        problems.append(f"schedule.cron {cfg.schedule.cron!r} is not a cron expression (e.g. '0 2 * * *': 02:00 "
                        "every day)")
    try:
        cfg.zone()
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"schedule.timezone {cfg.schedule.timezone!r} is not an IANA time zone (e.g. "
                        "'Europe/Berlin', 'UTC')")
    for robot in cfg.fleet.robots + cfg.fleet.canary:
        try:
            check_name(robot, "robot")
        except UnsafeNameError as err:
            problems.append(f"fleet: {err}")
    if not cfg.fleet.robots:
        problems.append("fleet.robots is empty: name the robots the daemon deploys to")
    stray = sorted(set(cfg.fleet.canary) - set(cfg.fleet.robots))
    if stray:
        problems.append(f"fleet.canary names {stray}, not in fleet.robots")
    if set(cfg.fleet.canary) == set(cfg.fleet.robots):
        problems.append("fleet.canary is the whole fleet: leave at least one robot on the incumbent to compare with")
    if cfg.fleet.baseline_release:
        problems += _baseline_problems(Path(cfg.fleet.baseline_release))
    unknown = sorted(set(cfg.gate.tasks) - set(TASK_INSTRUCTIONS))
    if unknown or not cfg.gate.tasks:
        problems.append(f"gate.tasks {unknown or '[]'}: known MetaWorld tasks are {sorted(TASK_INSTRUCTIONS)}")
    if cfg.gate.operator not in GATE_OPERATORS:
        problems.append(f"gate.operator {cfg.gate.operator!r}: one of {GATE_OPERATORS}")
    if cfg.gate.rule not in GATE_RULES:
        problems.append(f"gate.rule {cfg.gate.rule!r}: one of {GATE_RULES}")
    if cfg.training.method not in ROUND_METHODS:
        problems.append(f"training.method {cfg.training.method!r}: one of {ROUND_METHODS}")
    if not 0.5 <= cfg.training.progress_min_confidence <= 1.0:
        problems.append(f"training.progress_min_confidence must be in [0.5, 1], not "
                        f"{cfg.training.progress_min_confidence}")
    if cfg.canary.rule not in CANARY_RULES:
        problems.append(f"canary.rule {cfg.canary.rule!r}: one of {CANARY_RULES}")
    for key, value in (("gate.episodes", cfg.gate.episodes), ("gate.max_steps", cfg.gate.max_steps),
                       ("canary.episodes", cfg.canary.episodes), ("training.threads", cfg.training.threads)):
        if value < 1:
            problems.append(f"{key} must be at least 1, not {value}")
    if not 0 < cfg.gate.alpha < 1:
        problems.append(f"gate.alpha must be in (0, 1), not {cfg.gate.alpha}")
    if not 0 <= cfg.page.port <= 65535:
        problems.append(f"page.port must be in 0..65535, not {cfg.page.port}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))


def _baseline_problems(directory: Path) -> list[str]:
    try:
        release = read_release(directory)
    except (DeploymentError, OSError) as err:
        return [f"fleet.baseline_release: {err}"]
    if release.rollback:
        return [f"fleet.baseline_release: {directory} is a rollback instruction, not a signed bundle"]
    return []
