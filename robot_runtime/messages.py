"""What travels on the wire besides frames: episode events, node status and operator labels (JSON strings).

The third contract beside `episode.py` and `bundle.py`. These messages come from other processes (a robot
driver, an operator's console, a tool replaying a bag), so each is parsed into a typed, frozen dataclass by
one parse function per topic, and anything else is refused with a `MessageError` naming the message type and
the field. The rules, the same for every type:

- a message is a JSON object of at most MAX_MESSAGE_CHARS characters, nested at most MAX_DEPTH deep (both
  checked before decoding, so a deeply nested document is refused instead of raising RecursionError);
  NaN and Infinity are refused, numbers must be finite;
- `schema_version` is written on everything we publish; a message without one is version 1 (what nodes
  wrote before the field existed); a newer version is refused, since its fields may mean something else;
- topics that carry several types (`episode/events`, `recorder/status`) say which in `event`;
- fields are typed by their annotation: `int` refuses booleans and floats (4.0 too, never truncated) and is
  0 <= n < 2**63; `float` takes integers but not booleans; `str` is at most MAX_TEXT_CHARS characters
  of valid Unicode (no unpaired surrogates, which a ROS string could not carry);
  a required field that is absent is refused, an optional one takes its default;
- `episode_id` and `robot_id` become path components and must pass `files.check_name`;
- unknown keys are ignored, so a newer publisher can add a field without breaking older readers (a field
  whose meaning changes needs a new schema version instead).

Value rules that belong to another contract stay there: an operator label's outcome and 1-5 progress are
checked by `EpisodeStore.label`. Nodes wrap `to_json()` in std_msgs/String (`nodes/ros_io.py`); this module
knows nothing of ROS.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

from robot_runtime.files import UnsafeNameError, check_name

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 4096  # any one string field
MAX_DEPTH = 16  # nesting of arrays and objects; our messages are flat, unknown keys may nest a little
# Room for the largest valid message (nine text fields of MAX_TEXT_CHARS, each character escaped as \u00XX).
MAX_MESSAGE_CHARS = 256 * 1024
POLICY_STATES = ("unconfigured", "inactive", "serving", "error")
_NAMES = frozenset({"episode_id", "robot_id"})  # fields that become path components
_MAX_INT = 2 ** 63


class MessageError(ValueError):
    """A message that is not what its topic carries; says which message type and field, and why."""

    def __init__(self, message_type: str, problem: str, field: str = ""):
        self.message_type, self.field, self.problem = message_type, field, problem
        super().__init__(f"{message_type}: {field}: {problem}" if field else f"{message_type}: {problem}")


def clip(text: str) -> str:
    """`text` cut to MAX_TEXT_CHARS, for free text a node reports (an error, an engine's note)."""
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."


def _string(value) -> str:
    if type(value) is not str:
        raise TypeError("a string")
    if len(value) > MAX_TEXT_CHARS:
        raise TypeError(f"a string of at most {MAX_TEXT_CHARS} characters (got {len(value)})")
    try:
        value.encode("utf-8")  # a ROS string is UTF-8: an unpaired surrogate ("\\ud800") could not be sent on
    except UnicodeEncodeError:
        raise TypeError("text without unpaired surrogates") from None
    return value


def _integer(value) -> int:
    if type(value) is not int or not 0 <= value < _MAX_INT:
        raise TypeError("an integer from 0 to 2**63 - 1")
    return value


def _number(value) -> float:
    if type(value) not in (int, float):
        raise TypeError("a finite number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise TypeError("a finite number")
    return number


def _boolean(value) -> bool:
    if type(value) is not bool:
        raise TypeError("true or false")
    return value


_KINDS = {"str": _string, "int": _integer, "float": _number, "bool": _boolean}


class _Message:
    """Typed fields checked on construction, whether a node builds the message or a parse function does."""

    KIND: ClassVar[str] = ""  # the `event` value on a topic that carries several types; "" on one-type topics

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            kind, _, optional = f.type.partition(" | ")
            if value is None and optional == "None":
                continue
            try:
                value = _KINDS[kind](value)
                if f.name in _NAMES:
                    check_name(value, f.name)
            except TypeError as err:
                raise MessageError(type(self).__name__, f"must be {err}, got {value!r:.80}", f.name) from None
            except UnsafeNameError as err:
                raise MessageError(type(self).__name__, str(err), f.name) from None
            object.__setattr__(self, f.name, value)  # a float field given an int holds the float
        self._check()

    def _check(self) -> None:
        """Rules across or beyond the types, for subclasses."""

    def _refuse(self, field: str, problem: str):
        raise MessageError(type(self).__name__, problem, field)

    def to_dict(self) -> dict:
        head = {"schema_version": SCHEMA_VERSION, **({"event": self.KIND} if self.KIND else {})}
        return {**head, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)


# -- episode/events ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeStart(_Message):
    """An episode begins: the robot's observations from `stamp_ns` on belong to it."""

    KIND: ClassVar[str] = "start"
    episode_id: str
    task: str  # the instruction
    robot_id: str
    control_rate_hz: float
    stamp_ns: int  # ROS time of the start; observations stamped earlier are not the episode's
    env_name: str | None = None  # simulated robots: the task environment
    seed: int | None = None  # simulated robots: the layout seed

    def _check(self) -> None:
        if self.control_rate_hz <= 0:
            self._refuse("control_rate_hz", f"must be positive, got {self.control_rate_hz}")


@dataclass(frozen=True)
class EpisodeEnd(_Message):
    """An episode ends after `steps` commands; `success` None means no verdict (e.g. an operator's stop)."""

    KIND: ClassVar[str] = "end"
    episode_id: str
    reason: str
    steps: int
    success: bool | None = None
    held_steps: int = 0  # steps the robot held still because no command came in time


# -- recorder/status --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeCommitted(_Message):
    KIND: ClassVar[str] = "committed"
    episode_id: str
    path: str
    steps: int
    outcome: str
    dropped_steps: int = 0  # by the recorder since it started, not only in this episode


@dataclass(frozen=True)
class EpisodeLabeled(_Message):
    """An operator label was stored; the fields are those of the episode's labels.json."""

    KIND: ClassVar[str] = "labeled"
    episode_id: str
    outcome: str
    progress: int | None = None
    note: str = ""
    labeled_by: str = ""
    labeled_at: float = 0.0  # seconds since the epoch


@dataclass(frozen=True)
class LabelRefused(_Message):
    KIND: ClassVar[str] = "label_refused"
    error: str


# -- policy/status ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyStatus(_Message):
    """What policy_node serves and how it is going; counters are since its bundle was configured."""

    state: str  # one of POLICY_STATES
    bundle: str = ""  # path of the bundle served
    error: str = ""  # the last problem, "" when none
    model_id: str = ""
    version: str = ""
    engine: str = ""
    engine_note: str = ""  # why the engine is not the one preferred
    conditioning: str = ""
    beta: float | None = None
    staged: str = ""  # a bundle loaded and waiting for the next chunk boundary
    inferences: int = 0
    swaps: int = 0
    rollbacks: int = 0
    deadline_misses: int = 0
    ticks: int = 0

    def _check(self) -> None:
        if self.state not in POLICY_STATES:
            self._refuse("state", f"{self.state!r:.80} is not one of {POLICY_STATES}")


# -- operator/label ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorLabel(_Message):
    """An operator's judgement of a committed episode; without `episode_id`, the last one committed."""

    outcome: str  # success | failure | unlabeled, checked by EpisodeStore.label
    episode_id: str | None = None
    progress: int | None = None  # 1-5, checked by EpisodeStore.label
    note: str = ""
    operator: str = ""


# -- parsing ----------------------------------------------------------------------------------------------
def _check_depth(text: str, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH by scanning brackets outside strings, before json sees it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise MessageError(what, f"nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(text, what: str, types: tuple[type[_Message], ...]):
    if not isinstance(text, str):
        raise MessageError(what, f"expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageError(what, f"{len(text)} characters, more than the {MAX_MESSAGE_CHARS} a message may have")
    _check_depth(text, what)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of too many digits
        raise MessageError(what, f"not JSON ({err})") from None
    if type(data) is not dict:
        raise MessageError(what, f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", 1)
    if type(version) is not int or version < 1:
        raise MessageError(what, f"must be a positive integer, got {version!r:.80}", "schema_version")
    if version > SCHEMA_VERSION:
        raise MessageError(what, f"{version} is newer than this robot_runtime reads (up to {SCHEMA_VERSION}); "
                                 "update robot_runtime on this machine", "schema_version")
    cls = types[0]
    if len(types) > 1:
        kinds = {t.KIND: t for t in types}
        kind = data.get("event", "")
        cls = kinds.get(kind) if type(kind) is str else None
        if cls is None:
            problem = f"{kind!r:.80} is not one of" if "event" in data else "missing; expected one of"
            raise MessageError(what, f"{problem} {sorted(kinds)}", "event")
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = data[f.name]
        elif f.default is MISSING:
            raise MessageError(cls.__name__, "missing (a required field)", f.name)
    return cls(**values)


def parse_episode_event(text) -> EpisodeStart | EpisodeEnd:
    """An `episode/events` message; MessageError if it is not one."""
    return _parse(text, "episode event", (EpisodeStart, EpisodeEnd))


def parse_recorder_status(text) -> EpisodeCommitted | EpisodeLabeled | LabelRefused:
    """A `recorder/status` message; MessageError if it is not one."""
    return _parse(text, "recorder status", (EpisodeCommitted, EpisodeLabeled, LabelRefused))


def parse_policy_status(text) -> PolicyStatus:
    """A `policy/status` message; MessageError if it is not one."""
    return _parse(text, "policy status", (PolicyStatus,))


def parse_operator_label(text) -> OperatorLabel:
    """An `operator/label` message; MessageError if it is not one."""
    return _parse(text, "operator label", (OperatorLabel,))
