"""Data in and out: rosbag2 bags (sqlite3 and MCAP) into episodes, and the episodes CLI and viewer.

The bags are real: rosbag2's sqlite3 schema + metadata.yaml, or MCAP with ros2msg schemas,
payloads serialized by rclpy. The simulated recording: 10 Hz, cameras `front` (rgb8 6x8) and
`wrist` (bgr8 12x16, resized to 6x8), a 4-joint state, a 2-dim executed command 40 ms after
each observation (frame_id `operator` during the intervention, `hold` once), the policy's
proposal (names in the other order) when it was in control, the deadman on a Bool topic,
and start/end events as our sim publishes them.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String

from robot_runtime.datatools.bag_import import BagImportError, BagMapping, import_bag
from robot_runtime.datatools.cli import main as cli
from robot_runtime.episode import EpisodeMetadata, EpisodeStore, Step
from robot_runtime.messages import EpisodeEnd, EpisodeStart

from bag_factory import write_mcap_bag, write_sqlite3_bag

MS = 1_000_000
DT = 100 * MS  # 10 Hz
BASE = 1_700_000_000 * 10 ** 9
STATE_NAMES = ["j0", "j1", "j2", "gripper"]
ACTION_NAMES = ["a0", "a1"]
# (steps, success, intervention [start, end)) per episode
EPISODES = ((12, True, (3, 6)), (8, False, (2, 4)))
HOLD = {(0, 8)}  # (episode, step) where the robot held: no command came in time
WRITERS = {"sqlite3": write_sqlite3_bag, "mcap": write_mcap_bag}


def _stamp(msg, ns: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10 ** 9)
    return msg


def image_msg(value: int, height: int, width: int, encoding: str, ns: int) -> Image:
    """First channel in memory = value, then 7, then 200 (so bgr8 -> RGB (200, 7, value))."""
    channels = 1 if encoding == "mono8" else 3
    pixels = np.zeros((height, width, channels), np.uint8)
    pixels[..., 0] = value
    if channels == 3:
        pixels[..., 1], pixels[..., 2] = 7, 200
    msg = _stamp(Image(), ns)
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, width * channels
    msg.data = pixels.tobytes()
    return msg


def joints_msg(names, values, ns: int, frame_id: str = "") -> JointState:
    msg = _stamp(JointState(), ns)
    msg.header.frame_id = frame_id
    msg.name, msg.position = list(names), [float(v) for v in values]
    return msg


def state_of(e: int, k: int) -> list[float]:
    return [e * 100 + k + 0.25 * j for j in range(4)]


def action_of(e: int, k: int) -> list[float]:
    return [-(e * 100 + k), 0.5 * k]


def recording(episodes=EPISODES, events=True, end_last=True) -> list[tuple[str, object, int]]:
    """(topic, message, bag time) in bag-time order. Header stamps are the observation time
    (commands: the observation they answer); bag times add the transport delay."""
    messages, t = [], BASE
    for e, (steps, success, (i0, i1)) in enumerate(episodes):
        start = t
        if events:
            messages.append(("/episode/events", String(data=EpisodeStart(
                episode_id=f"sim-ep{e}", task=f"task {e}", robot_id="sim", control_rate_hz=10.0, stamp_ns=start,
                seed=e).to_json()), start))
        for k in range(steps):
            tk = start + k * DT
            messages.append(("/camera/front/image_raw", image_msg(k + 10 * e, 6, 8, "rgb8", tk), tk + 5 * MS))
            messages.append(("/camera/wrist/image_raw", image_msg(k + 10 * e, 12, 16, "bgr8", tk), tk + 6 * MS))
            messages.append(("/joint_states", joints_msg(STATE_NAMES, state_of(e, k), tk), tk + 5 * MS))
            operator, hold = i0 <= k < i1, (e, k) in HOLD
            source = "operator" if operator else "hold" if hold else "policy"
            messages.append(("/robot/executed", joints_msg(ACTION_NAMES, action_of(e, k), tk, source), tk + 40 * MS))
            if source == "policy":
                messages.append(("/policy/command",
                                 joints_msg(ACTION_NAMES[::-1], action_of(e, k)[::-1], tk), tk + 30 * MS))
        messages.append(("/teleop/engaged", Bool(data=True), start + i0 * DT + 20 * MS))
        messages.append(("/teleop/engaged", Bool(data=False), start + i1 * DT + 20 * MS))
        if events and (end_last or e < len(episodes) - 1):
            messages.append(("/episode/events", String(data=EpisodeEnd(
                episode_id=f"sim-ep{e}", reason="done", steps=steps, success=success).to_json()), start + steps * DT))
        t = start + steps * DT + 500 * MS
    return sorted(messages, key=lambda m: m[2])


MAPPING = {
    "cameras": {"front": "/camera/front/image_raw", "wrist": {"topic": "/camera/wrist/image_raw", "size": [6, 8]}},
    "state": {"topic": "/joint_states", "names": ["j2", "j0", "j1"]},
    "action": {"topic": "/robot/executed"},
    "policy_action": {"topic": "/policy/command"},
    "intervention": "/teleop/engaged",
    "episode_events": "/episode/events",
    "campaign": "imported",
    "policy_version": "pi-test@3",
}


def mapping(**changes) -> BagMapping:
    data = json.loads(json.dumps(MAPPING))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return BagMapping.from_dict(data)


def assert_store_empty(store: EpisodeStore):
    assert not list(store.episodes_dir.iterdir()) and not list(store.staging_dir.iterdir())


def check_episode(ep, e: int, intervention_from: str):
    """The episode holds exactly what `recording()` put in the bag for episode `e`."""
    steps, success, (i0, i1) = EPISODES[e]
    k = np.arange(steps)
    assert ep.steps == steps
    assert ep.meta["task"] == f"task {e}" and ep.meta["robot_id"] == "sim"
    assert ep.outcome == ("success" if success else "failure") and ep.meta["truncated"] is False
    assert ep.meta["policy_version"] == "pi-test@3" and ep.meta["extra"]["campaign"] == "imported"
    assert ep.meta["extra"]["seed"] == e and ep.meta["control_rate_hz"] == 10.0
    assert ep.layout.state_names == ("j2", "j0", "j1") and ep.layout.action_names == ("a0", "a1")
    assert ep.layout.cameras == {"front": (6, 8), "wrist": (6, 8)}
    # Every observation at or before the step time (the latest camera 6 ms after the period start).
    np.testing.assert_allclose(np.diff(ep.array("timestamp")), 0.1, atol=1e-6)
    assert ep.array("timestamp")[0] == pytest.approx((BASE + (sum(s * DT + 500 * MS for s, _, _ in EPISODES[:e]))
                                                      + 6 * MS) / 1e9)
    expected_state = np.array([state_of(e, i) for i in k], np.float32)[:, [2, 0, 1]]
    np.testing.assert_array_equal(ep.array("state"), expected_state)
    np.testing.assert_array_equal(ep.array("action"), np.array([action_of(e, i) for i in k], np.float32))
    front, wrist = ep.images("front"), ep.images("wrist")
    assert front.shape == wrist.shape == (steps, 6, 8, 3)
    np.testing.assert_array_equal(front[:, 2, 3], np.stack([k + 10 * e, np.full(steps, 7), np.full(steps, 200)], 1))
    np.testing.assert_array_equal(wrist[:, 2, 3], np.stack([np.full(steps, 200), np.full(steps, 7), k + 10 * e], 1))
    operator = (k >= i0) & (k < i1)
    np.testing.assert_array_equal(ep.array("intervention"), operator)
    held = np.array([(e, i) in HOLD for i in k])
    np.testing.assert_array_equal(ep.array("held"), held if intervention_from == "frame_id" else np.zeros(steps, bool))
    proposed = ep.array("policy_action")
    ran = ~operator & ~held
    assert np.isnan(proposed[~ran]).all()
    np.testing.assert_array_equal(proposed[ran], ep.array("action")[ran])  # reordered from (a1, a0)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_with_episode_events_imports_every_episode(tmp_path, storage):
    bag = WRITERS[storage](tmp_path / "bag", recording())
    store = EpisodeStore(tmp_path / "store")
    result = import_bag(bag, mapping(), store)
    assert result.committed == ["sim-ep0", "sim-ep1"] and result.skipped == []
    for e in range(2):
        check_episode(store.open(f"sim-ep{e}"), e, "bool")
    assert store.open("sim-ep0").meta["extra"]["source"]["storage"] == storage
    # Importing again finds the same ids and refuses, or skips them.
    with pytest.raises(BagImportError, match="sim-ep0 is already in the store"):
        import_bag(bag, mapping(), store)
    again = import_bag(bag, mapping(), store, skip_existing=True)
    assert again.committed == [] and len(again.skipped) == 2


def test_events_the_message_contract_refuses_are_skipped_with_the_reason(tmp_path):
    hostile = [json.dumps({"event": "start", "episode_id": "../../../x", "task": "t", "robot_id": "sim",
                           "control_rate_hz": 10.0, "stamp_ns": 1}),  # between the episodes: starts nothing
               json.dumps({"event": "end", "episode_id": "sim-ep0", "reason": "done", "steps": True}),  # mid ep0
               "{not json", json.dumps({"event": "restart"})]
    at = [BASE + 12 * DT + 200 * MS, BASE + 5 * DT + 1, BASE + 1, BASE + 2]
    messages = sorted(recording() + [("/episode/events", String(data=h), t) for h, t in zip(hostile, at)],
                      key=lambda m: m[2])
    store = EpisodeStore(tmp_path / "store")
    result = import_bag(write_sqlite3_bag(tmp_path / "bag", messages), mapping(), store)
    assert result.committed == ["sim-ep0", "sim-ep1"] and len(result.skipped) == 4
    for e in range(2):  # exactly as without the hostile events
        check_episode(store.open(f"sim-ep{e}"), e, "bool")
    reasons = "\n".join(result.skipped)
    for words in ("EpisodeStart: episode_id: episode_id '../../../x' is not allowed", "EpisodeEnd: steps",
                  "episode event: not JSON", "'restart' is not one of"):
        assert words in reasons, reasons
    assert not (tmp_path / "x").exists() and sorted(p.name for p in store.episodes_dir.iterdir()) == \
        ["sim-ep0", "sim-ep1"]


def test_intervention_and_held_from_the_command_frame_id(tmp_path):
    bag = write_mcap_bag(tmp_path / "bag", recording())
    store = EpisodeStore(tmp_path / "store")
    import_bag(bag, mapping(intervention=None, action={"topic": "/robot/executed", "source_in_frame_id": True}),
               store)
    for e in range(2):
        check_episode(store.open(f"sim-ep{e}"), e, "frame_id")


def test_header_stamps_with_same_step_alignment_match_the_bag_clock(tmp_path):
    """This project's graph stamps commands with the observation they answer: `time: header`
    with `action_alignment: same` pairs them exactly, and gives the same episodes."""
    bag = write_sqlite3_bag(tmp_path / "bag", recording())
    store = EpisodeStore(tmp_path / "store")
    import_bag(bag, mapping(time="header", action_alignment="same", intervention=None,
                            action={"topic": "/robot/executed", "source_in_frame_id": True}), store)
    ep = store.open("sim-ep0")
    assert ep.steps == 12 and ep.array("timestamp")[0] == pytest.approx(BASE / 1e9)  # stamps, not bag times
    np.testing.assert_array_equal(ep.array("action"), np.array([action_of(0, i) for i in range(12)], np.float32))
    np.testing.assert_array_equal(np.flatnonzero(ep.array("intervention")), [3, 4, 5])
    np.testing.assert_array_equal(np.flatnonzero(ep.array("held")), [8])
    no_policy = ep.array("intervention") | ep.array("held")
    np.testing.assert_array_equal(np.isnan(ep.array("policy_action")[:, 0]), no_policy)


def test_one_bag_one_episode_rate_from_the_state_and_action_from_the_next_state(tmp_path):
    bag = write_sqlite3_bag(tmp_path / "bag", recording(episodes=((10, True, (3, 6)),), events=False))
    store = EpisodeStore(tmp_path / "store")
    result = import_bag(bag, mapping(episode_events=None, policy_action=None, task="stack", outcome="success",
                                     robot_id="arm-2", action={"from_state": True, "names": ["j0", "j1"]}), store)
    [episode_id] = result.committed
    assert episode_id.startswith("arm-2-20231114T221320-")  # robot, UTC of the first step, digest
    ep = store.open(episode_id)
    assert ep.meta["control_rate_hz"] == pytest.approx(10.0)  # median state period
    assert ep.outcome == "success" and ep.meta["task"] == "stack" and ep.meta["end_reason"] == "end of the bag"
    # Steps stop at the last state (5 ms into period 9); from_state drops the last one: 10 - 1 - 1.
    assert ep.steps == 8 and ep.layout.action_names == ("j0", "j1")
    np.testing.assert_array_equal(ep.array("action"), np.array([state_of(0, i + 1)[:2] for i in range(8)], np.float32))
    assert np.isnan(ep.array("policy_action")).all()


def test_a_bag_cut_mid_episode_keeps_it_as_truncated(tmp_path):
    bag = write_mcap_bag(tmp_path / "bag", recording(end_last=False))
    store = EpisodeStore(tmp_path / "store")
    import_bag(bag, mapping(), store)
    first, cut = store.open("sim-ep0"), store.open("sim-ep1")
    assert first.meta["truncated"] is False and first.outcome == "success"
    assert cut.meta["truncated"] is True and cut.outcome == "unlabeled"
    assert cut.steps == 7 and "mid-episode" in cut.meta["end_reason"]  # no end event: up to the last state


def _sqlite_file(bag):
    return next(bag.glob("*.db3"))


@pytest.mark.parametrize("case", ["unknown topic", "wrong type", "missing type", "unknown key", "bad outcome",
                                  "image size", "corrupt sqlite3", "truncated mcap", "corrupt message"])
def test_bad_input_names_the_culprit_and_writes_nothing(tmp_path, case):
    messages, writer, kwargs = recording(), write_sqlite3_bag, {}
    if case == "image size":
        i = next(i for i, m in enumerate(messages) if m[0] == "/camera/front/image_raw" and m[2] > BASE + 5 * DT)
        messages[i] = (messages[i][0], image_msg(1, 7, 8, "rgb8", messages[i][2]), messages[i][2])
    if case == "truncated mcap":
        writer = write_mcap_bag
    bag = writer(tmp_path / "bag", messages)
    store = EpisodeStore(tmp_path / "store")
    if case == "unknown topic":
        kwargs, match = {"intervention": "/teleop/deadman"}, r"/teleop/deadman \(intervention\) is not in the bag"
    elif case == "wrong type":
        kwargs = {"state": "/camera/front/image_raw", "cameras": {"wrist": "/camera/wrist/image_raw"}}
        match = r"/camera/front/image_raw \(state\) has type sensor_msgs/msg/Image, expected sensor_msgs/msg/JointState"
    elif case == "missing type":
        with sqlite3.connect(_sqlite_file(bag)) as db:
            db.execute("UPDATE topics SET type = '' WHERE name = '/joint_states'")
        match = r"/joint_states \(state\) has no message type recorded"
    elif case == "unknown key":
        kwargs, match = {"cameraz": {}}, r"unknown key\(s\) \['cameraz'\]"
    elif case == "bad outcome":
        kwargs, match = {"outcome": "great"}, "outcome 'great' is not one of"
    elif case == "image size":
        match = r"/camera/front/image_raw message at .* image is 7x8 \(HxW\), earlier ones 6x8"
    elif case == "corrupt sqlite3":
        _sqlite_file(bag).write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
        match = f"{_sqlite_file(bag)}: cannot read as a rosbag2 sqlite3 file"
    elif case == "truncated mcap":
        path = next(bag.glob("*.mcap"))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = f"{path}: cannot read as MCAP"
    elif case == "corrupt message":
        with sqlite3.connect(_sqlite_file(bag)) as db:
            db.execute("UPDATE messages SET data = x'000100000102' WHERE id = (SELECT MIN(m.id) FROM messages m "
                       "JOIN topics t ON m.topic_id = t.id WHERE t.name = '/joint_states')")
        match = r"/joint_states message at \d+ ns: does not deserialize as sensor_msgs/msg/JointState"
    with pytest.raises(BagImportError, match=match):
        import_bag(bag, mapping(**kwargs), store)
    assert_store_empty(store)


# -- the CLI and the viewer -------------------------------------------------------------------
class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements, self._open, self.text = [], None, {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        self._open = attrs.get("id")

    def handle_data(self, data):
        if self._open:
            self.text[self._open] = self.text.get(self._open, "") + data

    def find(self, tag=None, id=None, cls=None):
        return [a for t, a in self.elements if (tag is None or t == tag) and (id is None or a.get("id") == id)
                and (cls is None or cls in a.get("class", "").split())]


@pytest.fixture
def imported(tmp_path):
    """A store filled through the CLI: the MCAP bag, mapping from YAML, one flag on top."""
    bag = write_mcap_bag(tmp_path / "bag", recording())
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(yaml.safe_dump({**MAPPING, "intervention": None,
                                            "action": {"topic": "/robot/executed", "source_in_frame_id": True}}))
    store = tmp_path / "store"
    assert cli(["import-bag", str(bag), "--mapping", str(mapping_file), "--store", str(store),
                "--campaign", "round-1"]) == 0
    return store


def test_cli_list_inspect_and_validate(imported, capsys, tmp_path):
    capsys.readouterr()
    assert cli(["list", str(imported)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "task", "steps", "outcome"]
    row = next(line for line in lines if line.startswith("sim-ep0"))
    assert row.split()[3:9] == ["12", "success", "no", "25.0", "pi-test@3", "2023-11-14"]
    assert cli(["list", str(imported), "--outcome", "failure", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["sim-ep1"]
    assert cli(["list", str(imported), "--campaign", "round-1", "--task", "TASK 1", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["sim-ep1"]

    assert cli(["inspect", str(imported), "sim-ep0"]) == 0
    out = capsys.readouterr().out
    assert "images/wrist             (12, 6, 8, 3)" in out and "float32" in out
    assert "intervention: 3 step(s); spans 3-5 (0.30-0.50 s)" in out and "held: 1 step(s); spans 8-8" in out
    assert cli(["inspect", str(imported), "sim-ep1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["intervention_spans"] == [{"steps": [2, 4], "seconds": [0.2, 0.3]}]
    assert info["arrays"]["state"] == {"shape": [8, 3], "dtype": "float32"}
    assert info["policy_vs_executed_mean_abs"] == 0.0

    assert cli(["validate", str(imported)]) == 0
    # A copy edited after commit (a NaN in its action, a timestamp out of order): every edited file is damage.
    episodes = imported / "episodes"
    shutil.copytree(episodes / "sim-ep0", episodes / "sim-ep0-edited")
    import zarr

    group = zarr.open_group(str(episodes / "sim-ep0-edited"), mode="r+")
    group.attrs["episode_id"] = "sim-ep0-edited"
    action = group["action"][:]
    action[4, 1] = np.nan
    group["action"][:] = action
    timestamp = group["timestamp"][:]
    timestamp[7] = timestamp[5]
    group["timestamp"][:] = timestamp
    # An episode recorded with bad rows: its files are sound, its rows are not.
    store = EpisodeStore(imported)
    source = store.open("sim-ep0")
    writer = store.writer(source.layout, EpisodeMetadata(task="t", robot_id="sim", control_rate_hz=10.0,
                                                         episode_id="sim-bad-rows"))
    action = source.array("action")
    action[4, 1] = np.nan
    for k, t in enumerate(source.array("timestamp")):
        writer.append(Step(t, {cam: source.images(cam)[k] for cam in source.layout.cameras}, source.array("state")[k],
                           action[k], intervention=k == 2, held=k == 2))
    writer.commit("success")
    (imported / "staging" / "sim-crashed").mkdir()
    capsys.readouterr()
    assert cli(["validate", str(imported)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[2].startswith("sim-ep0-edited/zarr.json: grew to ")  # the new episode_id is longer
    assert lines[:2] + lines[3:] == [
        "sim-bad-rows/action: NaN or inf at 1 step(s), first [4]",
        "sim-bad-rows/intervention,held: both true at step(s) [2]",
        "sim-ep0-edited/action/c/0/0: grew to 78 bytes, commit.json says 75",
        "sim-ep0-edited/timestamp/c/0: truncated to 78 bytes, commit.json says 80",
    ]
    assert "staging/sim-crashed: in progress" in captured.err
    assert "4 episode(s) checked, 2 with problems (5)" in captured.err
    # --quarantine moves both out of readers' sight; what is left validates.
    assert cli(["validate", str(imported), "--quarantine"]) == 1
    assert "quarantine/sim-ep0-edited: moved there from episodes/" in capsys.readouterr().err
    assert sorted(p.name for p in store.quarantine_dir.iterdir()) == ["sim-bad-rows", "sim-ep0-edited"]
    assert store.episode_ids() == ["sim-ep0", "sim-ep1"]
    assert cli(["validate", str(imported)]) == 0
    assert cli(["validate", str(imported), "--strict"]) == 1
    assert cli(["inspect", str(imported), "nope"]) == 1
    assert "no episode 'nope'" in capsys.readouterr().err


def test_cli_export_npz_mp4_and_html(imported, tmp_path, capsys):
    store = EpisodeStore(imported)
    ep = store.open("sim-ep0")

    assert cli(["export", str(imported), "sim-ep0", "--format", "npz", "--out", str(tmp_path / "ep.npz")]) == 0
    with np.load(tmp_path / "ep.npz") as npz:
        np.testing.assert_array_equal(npz["images_front"], ep.images("front"))
        np.testing.assert_array_equal(npz["policy_action"], ep.array("policy_action"))
        assert json.loads(str(npz["meta"]))["episode_id"] == "sim-ep0"

    assert cli(["export", str(imported), "sim-ep0", "--format", "mp4", "--out", str(tmp_path / "ep.mp4")]) == 0
    video = cv2.VideoCapture(str(tmp_path / "ep.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == ep.steps
    # The intervention border (orange, BGR ~ (12, 89, 232)) marks steps 3-5 only.
    border = np.array([f[f.shape[0] // 2, 2].astype(int) for f in frames])
    orange = np.abs(border - [12, 89, 232]).sum(axis=1) < 60
    np.testing.assert_array_equal(np.flatnonzero(orange), [3, 4, 5])

    assert cli(["view", str(imported), "sim-ep0", "--out", str(tmp_path / "ep.html"), "--max-frames", "5"]) == 0
    page = (tmp_path / "ep.html").read_text()
    parsed = _Elements()
    parsed.feed(page)
    for camera in ("front", "wrist"):
        [img] = parsed.find("img", id=f"frame-{camera}")
        assert img["src"].startswith("data:image/jpeg;base64,")
    [slider] = parsed.find("input", id="slider")
    assert slider["type"] == "range" and slider["max"] == "11"
    assert parsed.find("button", id="play")
    [timeline] = parsed.find("svg", id="timeline")
    spans = [(r["data-start"], r["data-end"]) for r in parsed.find("rect", cls="intervention")]
    assert spans == [("3", "6")] and [(r["data-start"], r["data-end"]) for r in parsed.find("rect", cls="held")] == [
        ("8", "9")]
    [badge] = parsed.find("span", id="outcome")
    assert "outcome-success" in badge["class"] and parsed.text["outcome"] == "success"
    assert not parsed.find(id="truncated")
    assert parsed.text["task"] == "task 0" and parsed.text["policy-version"] == "pi-test@3"
    assert [p["data-dim"] for p in parsed.find("svg", cls="action-plot")] == ["a0", "a1"]
    assert parsed.find("polyline", cls="executed") and parsed.find("polyline", cls="proposed")
    [data] = parsed.find("script", id="episode-data")
    payload = json.loads(parsed.text["episode-data"])
    assert payload["steps"] == 12 and len(payload["frames"]["front"]) <= 5
    assert payload["intervention"] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    import base64

    jpeg = np.frombuffer(base64.b64decode(payload["frames"]["wrist"][0]), np.uint8)
    assert cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape == (6, 8, 3)
    for _, attrs in parsed.elements:  # self-contained: nothing fetched from a network
        for key in ("src", "href"):
            assert not attrs.get(key, "").startswith(("http:", "https:", "//"))


def test_image_encodings_and_row_padding():
    from robot_runtime.datatools.bag_import import image_to_rgb

    mono = image_msg(9, 4, 5, "mono8", 0)
    np.testing.assert_array_equal(image_to_rgb(mono)[1, 2], [9, 9, 9])
    padded = image_msg(3, 4, 5, "rgb8", 0)  # rows padded to 16 bytes, as some drivers send them
    rows = np.frombuffer(padded.data, np.uint8).reshape(4, 15)
    padded.step, padded.data = 16, np.concatenate([rows, np.full((4, 1), 255, np.uint8)], axis=1).tobytes()
    image = image_to_rgb(padded, size=(2, 3))
    assert image.shape == (2, 3, 3) and (image == [3, 7, 200]).all()


def test_cli_import_from_flags_dry_run_then_for_real(tmp_path, capsys):
    bag = write_mcap_bag(tmp_path / "bag", recording())
    store = tmp_path / "store"
    flags = ["--store", str(store), "--camera", "front=/camera/front/image_raw",
             "--camera", "wrist=/camera/wrist/image_raw@6x8", "--state", "/joint_states", "--action", "/robot/executed",
             "--intervention", "/teleop/engaged", "--events", "/episode/events"]
    single_file = str(next(bag.glob("*.mcap")))  # a bare .mcap works as well as the bag directory
    assert cli(["import-bag", single_file, *flags, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["would import sim-ep0: 12 steps at 10 Hz, success, 3 intervention steps, task 'task 0'",
                   "would import sim-ep1: 8 steps at 10 Hz, failure, 2 intervention steps, task 'task 1'"]
    assert not (store / "episodes").exists() or not list((store / "episodes").iterdir())
    assert cli(["import-bag", str(bag), *flags]) == 0
    assert capsys.readouterr().out.splitlines() == ["committed sim-ep0: 12 steps, success",
                                                    "committed sim-ep1: 8 steps, failure"]
    assert EpisodeStore(store).open("sim-ep1").layout.state_names == tuple(STATE_NAMES)
    assert cli(["import-bag", str(bag), *flags, "--state", "/nope"]) == 1  # the last flag wins
    assert "mapped topic /nope (state) is not in the bag" in capsys.readouterr().err
