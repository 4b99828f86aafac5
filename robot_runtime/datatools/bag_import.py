"""Import rosbag2 bags (sqlite3 or MCAP) of image and joint topics into episodes.

A mapping (YAML, see `BagMapping`) says which topics are which cameras, the state, the
executed command, the policy's proposal, the intervention flag and the episode events.
The streams are resampled onto a control-rate grid by zero-order hold:

- time: each message's time is when the bag recorded it (`time: bag`, one clock for every
  topic, what the robot knew then), or its header stamp (`time: header`, for stamped types).
- start: the first step is at the first time every camera and the state have a message in
  the episode; step k is at t_k = t_0 + k / rate, rate from the mapping, the episode's start
  event, or the state topic's median period. The last step is at or before the episode end.
- observations (images, state) at step k: the latest message at or before t_k.
- action at step k (`action_alignment: next`, the default): the latest command before
  t_{k+1}, i.e. the one in force when the next observation was taken, which is what moved
  the robot from step k to k+1. `same`: the latest at or before t_k (for commands stamped
  with the observation they answer, as this project's graph does, with `time: header`).
  Leading steps with no command yet are dropped. `from_state: true` instead takes the next
  step's state (and drops the last step).
- intervention / held: sampled like the action, from a std_msgs/Bool topic, or from the
  command's `header.frame_id` (`operator` / `hold`, this project's convention).
- policy_action: the latest proposal within the step's action window, NaN if none.

A mapping for a bag of this project's own graph (`ros2 bag record` of its topics):

    cameras:                      # name -> topic, or {topic, size: [height, width]} to resize
      corner: /camera/corner/image_raw
      gripperPOV: {topic: /camera/gripperPOV/image_raw, size: [96, 96]}
    state: {topic: /joint_states, names: [x, y, z, gripper]}   # names: default all, in order
    action: {topic: /robot/executed, source_in_frame_id: true}  # or {from_state: true, names: [...]}
    policy_action: /policy/command
    intervention: /teleop/engaged  # optional std_msgs/Bool (instead of source_in_frame_id)
    episode_events: /episode/events
    time: header                  # its commands carry the stamp of the observation they answer
    action_alignment: same
    task: push the puck           # for episodes whose start event names none
    outcome: unlabeled            # for episodes whose end event does not say
    robot_id: sim-1
    campaign: imported-bags
    # control_rate_hz: 20, policy_version, operator: optional

Episodes: one bag is one episode, or, with `episode_events` mapped, each start/end pair of
the std_msgs/String events (`messages.EpisodeStart`/`EpisodeEnd`, as `episode/events` carries
them) is one; an event the message contract refuses is skipped with its reason. Every mapped
message is decoded and checked before anything is written, and each episode is committed
atomically, so bad input leaves the store as it was.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from robot_runtime.datatools.rosbag import Bag, BagError, deserialize, message_class
from robot_runtime.episode import OUTCOMES, EpisodeLayout, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.messages import EpisodeEnd, EpisodeStart, MessageError, parse_episode_event

IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
BOOL = "std_msgs/msg/Bool"
STRING = "std_msgs/msg/String"
ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class BagImportError(Exception):
    """A bag or mapping that cannot be imported; the message names the file, topic or key."""


# ---------------------------------------------------------------------------------------------
# The mapping
@dataclass(frozen=True)
class CameraMapping:
    name: str
    topic: str
    size: tuple[int, int] | None = None  # (height, width) to resize to; None keeps the bag's size


@dataclass(frozen=True)
class JointMapping:
    topic: str
    names: tuple[str, ...] | None = None  # None: every name of the first message, in its order
    field: str = "position"  # position | velocity | effort


@dataclass(frozen=True)
class ActionMapping:
    topic: str | None = None
    names: tuple[str, ...] | None = None
    field: str = "position"
    from_state: bool = False  # no command topic: the next step's state (of `names`) is the action
    source_in_frame_id: bool = False  # header.frame_id 'operator' -> intervention, 'hold' -> held


@dataclass(frozen=True)
class BagMapping:
    """Which topics become which episode arrays, and the metadata the bag does not carry."""

    cameras: tuple[CameraMapping, ...]
    state: JointMapping
    action: ActionMapping
    policy_action: JointMapping | None = None
    intervention: str | None = None  # std_msgs/Bool topic
    episode_events: str | None = None  # std_msgs/String JSON topic; None: one bag, one episode
    task: str = ""
    outcome: str = "unlabeled"  # for episodes whose end event does not say
    robot_id: str = "robot"
    policy_version: str = ""
    operator: str = ""
    campaign: str = ""
    control_rate_hz: float | None = None
    time: str = "bag"  # bag | header
    action_alignment: str = "next"  # next | same

    @classmethod
    def load(cls, path: str | Path) -> BagMapping:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as err:
            raise BagImportError(f"{path}: cannot read mapping ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise BagImportError(f"{path}: not valid YAML ({err})") from None
        return cls.from_dict(data or {}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "mapping") -> BagMapping:
        return _parse_mapping(data, source)

    def topics(self) -> dict[str, tuple[str, str]]:
        """topic -> (role, expected type) for every mapped topic."""
        roles = {c.topic: (f"camera '{c.name}'", IMAGE) for c in self.cameras}
        roles[self.state.topic] = ("state", JOINT_STATE)
        for role, topic, kind in (("action", self.action.topic, JOINT_STATE),
                                  ("policy_action", self.policy_action and self.policy_action.topic, JOINT_STATE),
                                  ("intervention", self.intervention, BOOL),
                                  ("episode_events", self.episode_events, STRING)):
            if topic:
                if topic in roles:
                    raise BagImportError(f"mapping: topic {topic} is mapped twice ({roles[topic][0]} and {role})")
                roles[topic] = (role, kind)
        return roles


_TOP_KEYS = {"cameras", "state", "action", "policy_action", "intervention", "episode_events", "task", "outcome",
             "robot_id", "policy_version", "operator", "campaign", "control_rate_hz", "time", "action_alignment"}


def _check_keys(data, known: set[str], where: str) -> dict:
    if not isinstance(data, dict):
        raise BagImportError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise BagImportError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return data


def _names(value, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise BagImportError(f"{where}: expected a non-empty list of names")
    return tuple(value)


def _joint(value, where: str, extra: set[str] = frozenset()) -> dict:
    if isinstance(value, str):
        value = {"topic": value}
    value = dict(_check_keys(value, {"topic", "names", "field"} | extra, where))
    if "field" in value and value["field"] not in ("position", "velocity", "effort"):
        raise BagImportError(f"{where}.field: '{value['field']}' is not position, velocity or effort")
    value["names"] = _names(value.get("names"), f"{where}.names")
    return value


def _parse_mapping(data: dict, source: str) -> BagMapping:
    _check_keys(data, _TOP_KEYS, source)
    cameras = []
    raw_cameras = data.get("cameras") or {}
    if not isinstance(raw_cameras, dict):
        raise BagImportError(f"{source}: cameras: expected camera name -> topic (or {{topic, size}})")
    for name, spec in raw_cameras.items():
        where = f"{source}: cameras.{name}"
        spec = _check_keys({"topic": spec} if isinstance(spec, str) else spec, {"topic", "size"}, where)
        if not isinstance(spec.get("topic"), str):
            raise BagImportError(f"{where}: needs a topic")
        size = spec.get("size")
        if size is not None:
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0
                                                                               for s in size)):
                raise BagImportError(f"{where}.size: expected [height, width] in pixels")
            size = (int(size[0]), int(size[1]))
        cameras.append(CameraMapping(str(name), spec["topic"], size))
    if "state" not in data:
        raise BagImportError(f"{source}: no 'state' (the sensor_msgs/JointState topic of the robot state)")
    state = _joint(data["state"], f"{source}: state")
    if not isinstance(state.get("topic"), str):
        raise BagImportError(f"{source}: state needs a topic")
    action = _joint(data.get("action") or {}, f"{source}: action", {"from_state", "source_in_frame_id"})
    if bool(action.get("topic")) == bool(action.get("from_state")):
        raise BagImportError(f"{source}: action needs either a topic (JointState) or from_state: true")
    if action.get("from_state") and action.get("source_in_frame_id"):
        raise BagImportError(f"{source}: action.source_in_frame_id needs a command topic, not from_state")
    policy = data.get("policy_action")
    policy = JointMapping(**_joint(policy, f"{source}: policy_action")) if policy else None
    fields = {k: data[k] for k in ("task", "robot_id", "policy_version", "operator", "campaign") if k in data}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise BagImportError(f"{source}: {key} must be a string")
    outcome = data.get("outcome", "unlabeled")
    if outcome not in OUTCOMES:
        raise BagImportError(f"{source}: outcome '{outcome}' is not one of {OUTCOMES}")
    rate = data.get("control_rate_hz")
    if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
        raise BagImportError(f"{source}: control_rate_hz must be a positive number")
    if data.get("time", "bag") not in ("bag", "header"):
        raise BagImportError(f"{source}: time '{data['time']}' is not 'bag' or 'header'")
    if data.get("action_alignment", "next") not in ("next", "same"):
        raise BagImportError(f"{source}: action_alignment '{data['action_alignment']}' is not 'next' or 'same'")
    for key in ("intervention", "episode_events"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise BagImportError(f"{source}: {key} must be a topic name")
    mapping = BagMapping(
        cameras=tuple(cameras), state=JointMapping(**state), action=ActionMapping(**action), policy_action=policy,
        intervention=data.get("intervention"), episode_events=data.get("episode_events"), outcome=outcome,
        control_rate_hz=float(rate) if rate else None, time=data.get("time", "bag"),
        action_alignment=data.get("action_alignment", "next"), **fields)
    mapping.topics()  # a topic mapped twice
    return mapping


# ---------------------------------------------------------------------------------------------
# Pass 1: decode and check every mapped message, keep times and small values
@dataclass
class _Stream:
    topic: str
    times: list = field(default_factory=list)  # sample times, ns
    # JointState: (vector, frame id) for the command, else vectors; Image: key (log time, ordinal
    # among this topic's messages at that log time), to find the message again; Bool; episode events
    # (EpisodeStart, EpisodeEnd, or the MessageError that refused one).
    values: list = field(default_factory=list)

    def finish(self):
        order = np.argsort(np.asarray(self.times, np.int64), kind="stable")
        self.times = np.asarray(self.times, np.int64)[order]
        self.values = [self.values[i] for i in order]
        return self


def _stamp(msg, log_time: int, time_source: str, where: str) -> int:
    if time_source == "header" and hasattr(msg, "header"):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if stamp == 0:
            raise BagImportError(f"{where}: header stamp is zero; import with `time: bag`")
        return stamp
    return log_time


def _joint_values(msg, names, fld: str, where: str) -> np.ndarray:
    values = list(getattr(msg, fld))
    if len(values) != len(msg.name):
        raise BagImportError(f"{where}: {len(msg.name)} names but {len(values)} {fld} values")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise BagImportError(f"{where}: JointState lacks {missing} (it has {list(msg.name)})")
    return np.array([values[index[n]] for n in names], np.float32)


def _check_image(msg, where: str) -> tuple[int, int]:
    channels = ENCODINGS.get(msg.encoding)
    if channels is None:
        raise BagImportError(f"{where}: image encoding '{msg.encoding}' is not one of {sorted(ENCODINGS)}")
    if msg.step < msg.width * channels or len(msg.data) < msg.height * msg.step or msg.height * msg.width == 0:
        raise BagImportError(f"{where}: image {msg.width}x{msg.height} {msg.encoding} step {msg.step} "
                             f"holds {len(msg.data)} bytes")
    return int(msg.height), int(msg.width)


def image_to_rgb(msg, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a checked sensor_msgs/Image, resized to `size` (H, W) if given."""
    import cv2

    channels = ENCODINGS[msg.encoding]
    rows = np.frombuffer(msg.data, np.uint8)[: msg.height * msg.step].reshape(msg.height, msg.step)
    image = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if msg.encoding == "mono8":
        image = np.repeat(image, 3, axis=2)
    elif msg.encoding in ("bgr8", "bgra8"):
        image = image[:, :, 2::-1]
    else:
        image = image[:, :, :3]
    if size is not None and image.shape[:2] != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class _Reader:
    """Pass 1 over the bag: every mapped message decoded, checked and reduced to what the plan needs."""

    def __init__(self, bag: Bag, mapping: BagMapping):
        self.bag, self.mapping = bag, mapping
        self.roles = mapping.topics()
        self.classes = {}
        for topic, (role, expected) in self.roles.items():
            info = bag.topics.get(topic)
            if info is None:
                raise BagImportError(f"{bag.path}: mapped topic {topic} ({role}) is not in the bag; "
                                     f"it has {sorted(bag.topics)}")
            if not info.type:
                raise BagImportError(f"{bag.path}: topic {topic} ({role}) has no message type recorded")
            if info.type != expected:
                raise BagImportError(f"{bag.path}: topic {topic} ({role}) has type {info.type}, expected {expected}")
            if info.serialization_format != "cdr":
                raise BagImportError(f"{bag.path}: topic {topic} is serialized as '{info.serialization_format}', "
                                     "not cdr")
            try:
                self.classes[topic] = message_class(info.type)
            except ValueError as err:
                raise BagImportError(f"{bag.path}: topic {topic}: {err}") from None
        self.streams = {topic: _Stream(topic) for topic in self.roles}
        self.names: dict[str, tuple[str, ...]] = {}  # JointState topic -> names used
        self.frame_ids: list[str] = []
        self.image_sizes: dict[str, tuple[int, int]] = {}

    def read(self) -> _Reader:
        m = self.mapping
        joints = {m.state.topic: m.state}
        if m.action.topic:
            joints[m.action.topic] = m.action
        if m.policy_action:
            joints[m.policy_action.topic] = m.policy_action
        cameras = {c.topic: c for c in m.cameras}
        ordinals: dict[tuple[str, int], int] = {}
        for raw in self.bag.messages(self.roles):
            where = f"{self.bag.path}: topic {raw.topic} message at {raw.log_time} ns"
            try:
                msg = deserialize(raw.data, self.classes[raw.topic])
            except Exception as err:
                raise BagImportError(f"{where}: does not deserialize as {self.bag.topics[raw.topic].type} "
                                     f"({err})") from None
            stream = self.streams[raw.topic]
            stream.times.append(_stamp(msg, raw.log_time, m.time, where))
            if raw.topic in joints:
                spec = joints[raw.topic]
                names = self.names.setdefault(raw.topic, spec.names or tuple(msg.name))
                if not names:
                    raise BagImportError(f"{where}: JointState has no names; list them in the mapping")
                stream.values.append(_joint_values(msg, names, spec.field, where))
                if raw.topic == m.action.topic:
                    self.frame_ids.append(msg.header.frame_id)
            elif raw.topic in cameras:
                shape = _check_image(msg, where)
                known = self.image_sizes.setdefault(raw.topic, shape)
                if shape != known and cameras[raw.topic].size is None:
                    raise BagImportError(f"{where}: image is {shape[0]}x{shape[1]} (HxW), earlier ones "
                                         f"{known[0]}x{known[1]}; set a size for camera "
                                         f"'{cameras[raw.topic].name}' to resize")
                ordinal = ordinals.get((raw.topic, raw.log_time), 0)
                ordinals[(raw.topic, raw.log_time)] = ordinal + 1
                stream.values.append((raw.log_time, ordinal))
            elif raw.topic == m.intervention:
                stream.values.append(bool(msg.data))
            else:  # episode events
                try:
                    stream.values.append(parse_episode_event(msg.data))
                except MessageError as err:
                    stream.values.append(err)
        if m.action.topic:  # frame ids travel with the command values through the sort
            stream = self.streams[m.action.topic]
            stream.values = list(zip(stream.values, self.frame_ids))
        for stream in self.streams.values():
            stream.finish()
        for topic, (role, _) in self.roles.items():
            if role != "intervention" and role != "episode_events" and not len(self.streams[topic].times):
                raise BagImportError(f"{self.bag.path}: mapped topic {topic} ({role}) has no messages")
        return self


# ---------------------------------------------------------------------------------------------
# Planning: episodes and, per step, which message of each stream
@dataclass
class EpisodePlan:
    episode_id: str
    task: str
    robot_id: str
    outcome: str
    truncated: bool
    end_reason: str
    rate_hz: float
    times: np.ndarray  # step times, ns
    state: np.ndarray
    action: np.ndarray
    policy_action: np.ndarray
    intervention: np.ndarray
    held: np.ndarray
    images: dict[str, list[tuple[int, int]]]  # camera -> image key per step
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.times)


@dataclass
class ImportResult:
    committed: list[str] = field(default_factory=list)  # episode ids
    skipped: list[str] = field(default_factory=list)  # one line each: what and why


@dataclass
class _Segment:
    start: int | None  # ns; None: from the beginning of the bag
    end: int | None  # ns, exclusive (the end event's time); None: through the last message
    start_event: EpisodeStart | None = None  # None: no episode events mapped
    end_event: EpisodeEnd | None = None
    cut_short: str = ""  # why there is no end event: the bag ends, or a new start comes, first


def _segments(reader: _Reader, skipped: list[str]) -> list[_Segment]:
    m = reader.mapping
    if not m.episode_events:
        return [_Segment(None, None)]
    events = reader.streams[m.episode_events]
    segments, current = [], None
    for t, event in zip(events.times, events.values):
        if isinstance(event, EpisodeStart):
            if current is not None:
                current.end, current.cut_short = int(t), "superseded by a new start"
                segments.append(current)
            current = _Segment(int(t), None, event)
        elif isinstance(event, EpisodeEnd):
            if current is None:
                skipped.append(f"end event at {t} ns ({event.episode_id}) has no start in the bag")
                continue
            current.end, current.end_event = int(t), event
            segments.append(current)
            current = None
        else:
            skipped.append(f"event at {t} ns on {m.episode_events} refused ({event}); ignored")
    if current is not None:  # the bag ends mid-episode: kept, marked truncated
        current.cut_short = "the bag ends mid-episode"
        segments.append(current)
    if not segments:
        raise BagImportError(f"{reader.bag.path}: no start event on {m.episode_events}; "
                             "map no episode_events to import the bag as one episode")
    return segments


def _median_rate(times: np.ndarray, topic: str) -> float:
    periods = np.diff(times)
    periods = periods[periods > 0]
    if not len(periods):
        raise BagImportError(f"topic {topic}: cannot infer the control rate from fewer than two distinct "
                             "message times; set control_rate_hz in the mapping")
    return 1e9 / float(np.median(periods))


def _episode_id(robot_id: str, start_ns: int, bag: Path) -> str:
    """Like episode.new_episode_id but from the bag's own time, so re-importing finds the same id."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start_ns / 1e9))
    digest = hashlib.sha1(f"{bag.resolve()}:{start_ns}".encode()).hexdigest()[:6]
    return f"{robot_id}-{stamp}-{digest}"


def _plan(reader: _Reader, segment: _Segment, default_rate: float | None) -> EpisodePlan | str:
    """The steps of one episode, or why there are none."""
    m, s = reader.mapping, reader.streams
    low = -(2 ** 63) if segment.start is None else segment.start
    obs_topics = [c.topic for c in m.cameras] + [m.state.topic]
    required = obs_topics + ([m.action.topic] if m.action.topic else [])
    firsts, lasts = {}, {}
    for topic in required:
        times = s[topic].times
        inside = times[(times >= low) & ((times < segment.end) if segment.end is not None else True)]
        if not len(inside):
            return f"no message on {topic} during the episode"
        firsts[topic], lasts[topic] = int(inside[0]), int(inside[-1])
    # Steps come before the end event, or, without one, no later than any stream's last message.
    end = segment.end if segment.end is not None else min(lasts.values()) + 1
    event, end_event = segment.start_event, segment.end_event
    rate = m.control_rate_hz or (event.control_rate_hz if event else default_rate)
    period = int(round(1e9 / rate))
    t0 = max(firsts[t] for t in obs_topics)
    if t0 >= end:
        return "the streams never all have a message before the episode ends"
    times = t0 + period * np.arange((end - 1 - t0) // period + 1, dtype=np.int64)
    # The action window of step k ends (exclusively) at `until[k]`.
    until = np.minimum(times + period, end) if m.action_alignment == "next" else times + 1

    def latest(topic, at, side="right"):  # index of the latest message at (right) or before (left) `at`
        return np.searchsorted(s[topic].times, at, side=side) - 1

    state_index = latest(m.state.topic, times)
    state = np.stack([s[m.state.topic].values[i] for i in state_index])
    n = len(times)
    intervention, held = np.zeros(n, bool), np.zeros(n, bool)
    if m.action.from_state:
        state_names = reader.names[m.state.topic]
        names = m.action.names or state_names
        missing = [x for x in names if x not in state_names]
        if missing:
            raise BagImportError(f"mapping: action.from_state takes {missing} from the state, which has only "
                                 f"{list(state_names)}")
        action = state[1:, [state_names.index(x) for x in names]]
        keep = np.arange(n - 1)
    else:
        command = s[m.action.topic]
        index = latest(m.action.topic, until, side="left")
        keep = np.flatnonzero((index >= 0) & (command.times[np.maximum(index, 0)] >= low))
        if not len(keep):
            return f"no command on {m.action.topic} during the episode"
        keep = np.arange(keep[0], n)  # only leading steps lack a command: later ones hold the last
        action = np.stack([command.values[i][0] for i in index[keep]])
        if m.action.source_in_frame_id:
            frames = [command.values[i][1] for i in index[keep]]
            intervention[keep] = [f == "operator" for f in frames]
            held[keep] = [f == "hold" for f in frames]
    if m.intervention:
        flags = s[m.intervention]
        index = latest(m.intervention, until, side="left")
        intervention = np.array([i >= 0 and flags.values[i] for i in index], bool)
    held &= ~intervention
    action_dim = action.shape[1]
    policy_action = np.full((n, action_dim), np.nan, np.float32)
    if m.policy_action:
        topic = m.policy_action.topic
        proposals, names = s[topic], reader.names.get(topic, ())
        missing = [x for x in _action_names(reader) if x not in names]
        if missing and len(proposals.times):
            raise BagImportError(f"{reader.bag.path}: topic {topic} (policy_action) lacks action(s) {missing}; "
                                 f"it has {list(names)}")
        order = [names.index(x) for x in _action_names(reader)] if not missing else []
        index = latest(topic, until, side="left")
        for k, i in enumerate(index):
            if i >= 0 and proposals.times[i] >= max(until[k] - period, low):
                policy_action[k] = proposals.values[i][order]
    if len(keep) == 0:
        return "no complete step (from_state needs at least two)"
    images = {c.name: [s[c.topic].values[i] for i in latest(c.topic, times[keep])] for c in m.cameras}
    ages = {topic: float(np.max(times[keep] - s[topic].times[latest(topic, times[keep])]) / 1e9)
            for topic in obs_topics}
    truncated = bool(segment.cut_short)
    if truncated:
        outcome = "unlabeled"
    elif end_event and end_event.success is not None:
        outcome = "success" if end_event.success else "failure"
    else:
        outcome = m.outcome
    robot_id = event.robot_id if event else m.robot_id
    extra = {"campaign": m.campaign,
             **{k: getattr(event, k) for k in ("env_name", "seed") if event and getattr(event, k) is not None},
             "import": {"time": m.time, "action_alignment": m.action_alignment, "rate_hz": rate,
                        "start_ns": int(times[keep][0]), "end_ns": int(end),
                        "observation_max_age_s": ages}}
    if end_event:
        extra["held_steps"] = end_event.held_steps
    return EpisodePlan(
        episode_id=event.episode_id if event else _episode_id(robot_id, int(times[keep][0]), reader.bag.path),
        task=(event.task if event else "") or m.task, robot_id=robot_id, outcome=outcome, truncated=truncated,
        end_reason=end_event.reason if end_event else segment.cut_short or "end of the bag",
        rate_hz=rate, times=times[keep], state=state[keep], action=action, policy_action=policy_action[keep],
        intervention=intervention[keep], held=held[keep], images=images, extra=extra)


# ---------------------------------------------------------------------------------------------
# Pass 2: write
def _write(bag: Bag, reader: _Reader, plan: EpisodePlan, store: EpisodeStore, bag_path: Path) -> None:
    m = reader.mapping
    sizes = {c.name: c.size or reader.image_sizes[c.topic] for c in m.cameras}
    layout = EpisodeLayout(cameras=sizes, state_names=reader.names[m.state.topic],
                           action_names=_action_names(reader))
    camera_of = {c.topic: c for c in m.cameras}
    last_use = {}  # (camera, key) -> last step that shows it
    for name, keys in plan.images.items():
        for k, key in enumerate(keys):
            last_use[(name, key)] = k
    all_keys = [key for keys in plan.images.values() for key in keys]
    messages = bag.messages(list(camera_of), min(k[0] for k in all_keys), max(k[0] for k in all_keys) + 1) \
        if all_keys else iter(())
    ordinals: dict[tuple[str, int], int] = {}
    cache: dict[tuple[str, tuple[int, int]], np.ndarray] = {}

    def frame(name: str, key) -> np.ndarray:
        while (name, key) not in cache:
            raw = next(messages, None)
            if raw is None:
                raise BagImportError(f"{bag_path}: image {key} of camera '{name}' not found on the second read")
            ordinal = ordinals.get((raw.topic, raw.log_time), 0)
            ordinals[(raw.topic, raw.log_time)] = ordinal + 1
            camera = camera_of[raw.topic]
            if (camera.name, (raw.log_time, ordinal)) in last_use:
                msg = deserialize(raw.data, reader.classes[raw.topic])
                cache[(camera.name, (raw.log_time, ordinal))] = image_to_rgb(msg, sizes[camera.name])
        return cache[(name, key)]

    metadata = EpisodeMetadata(task=plan.task, robot_id=plan.robot_id, control_rate_hz=plan.rate_hz,
                               policy_version=m.policy_version, operator=m.operator, episode_id=plan.episode_id,
                               start_time=plan.times[0] / 1e9,
                               extra={**plan.extra, "source": {"bag": str(bag_path.resolve()),
                                                               "storage": bag.storage}})
    writer = store.writer(layout, metadata)
    try:
        for k in range(plan.steps):
            images = {name: frame(name, keys[k]) for name, keys in plan.images.items()}
            writer.append(Step(timestamp=plan.times[k] / 1e9, images=images, state=plan.state[k],
                               action=plan.action[k], policy_action=plan.policy_action[k],
                               intervention=bool(plan.intervention[k]), held=bool(plan.held[k])))
            for name, keys in plan.images.items():
                if last_use[(name, keys[k])] == k:
                    cache.pop((name, keys[k]), None)
        writer.commit(plan.outcome, plan.end_reason, truncated=plan.truncated)
    except BaseException:
        writer.discard()
        raise


def _action_names(reader: _Reader) -> tuple[str, ...]:
    m = reader.mapping
    if m.action.from_state:
        return m.action.names or reader.names[m.state.topic]
    return reader.names[m.action.topic]


def plan_bag(bag: Bag, mapping: BagMapping) -> tuple[_Reader, list[EpisodePlan], list[str]]:
    """Pass 1 and planning, no writing: (reader, episode plans, skipped segments with reasons)."""
    reader = _Reader(bag, mapping).read()
    skipped: list[str] = []
    default_rate = None
    if mapping.control_rate_hz is None:
        try:
            default_rate = _median_rate(reader.streams[mapping.state.topic].times, mapping.state.topic)
        except BagImportError:
            if not mapping.episode_events:
                raise
    plans = []
    for segment in _segments(reader, skipped):  # each has a rate: the mapping's, its start event's or the median
        plan = _plan(reader, segment, default_rate)
        if isinstance(plan, str):
            skipped.append(f"episode starting at {segment.start} ns: {plan}")
        else:
            plans.append(plan)
    return reader, plans, skipped


def import_bag(bag_path: str | Path, mapping: BagMapping, store: EpisodeStore | str | Path,
               skip_existing: bool = False) -> ImportResult:
    """Import every episode of the bag into `store`; see the module docstring for the rules."""
    bag_path = Path(bag_path)
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    result = ImportResult()
    try:
        with Bag(bag_path) as bag:
            reader, plans, result.skipped = plan_bag(bag, mapping)
            if not plans:
                raise BagImportError(f"{bag_path}: no episode to import ({'; '.join(result.skipped)})")
            todo = []
            for plan in plans:
                if (store.episodes_dir / plan.episode_id).exists() or (store.staging_dir / plan.episode_id).exists():
                    if not skip_existing:
                        raise BagImportError(f"{store.root}: episode {plan.episode_id} is already in the store "
                                             "(imported before?); pass skip_existing / --skip-existing")
                    result.skipped.append(f"{plan.episode_id}: already in the store")
                else:
                    todo.append(plan)
            for plan in todo:
                try:
                    _write(bag, reader, plan, store, bag_path)
                except Exception as err:
                    done = f"; already committed: {result.committed}" if result.committed else ""
                    raise BagImportError(f"{bag_path}: writing episode {plan.episode_id} failed ({err}){done}") \
                        from err
                result.committed.append(plan.episode_id)
    except BagError as err:
        raise BagImportError(str(err)) from None
    return result


def mapping_with(mapping: dict, **overrides) -> dict:
    """A mapping dict with the non-None `overrides` applied (how the CLI flags win over the YAML)."""
    out = dict(mapping)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out

