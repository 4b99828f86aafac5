"""The wire contract: every message type round-trips, today's messages still parse, and the rest is refused
with a MessageError naming the message type and field (never another exception, even for fuzzed input)."""
import json
import random
import time

import pytest

from robot_runtime.messages import (
    MAX_DEPTH,
    MAX_MESSAGE_CHARS,
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    EpisodeCommitted,
    EpisodeEnd,
    EpisodeLabeled,
    EpisodeStart,
    LabelRefused,
    MessageError,
    OperatorLabel,
    PolicyStatus,
    clip,
    parse_episode_event,
    parse_operator_label,
    parse_policy_status,
    parse_recorder_status,
)

from wire_fuzz import COMMITTED, END, LABEL, LABELED, REFUSED, START, STATUS, mutate, nested

PARSERS = {EpisodeStart: parse_episode_event, EpisodeEnd: parse_episode_event,
           EpisodeCommitted: parse_recorder_status, EpisodeLabeled: parse_recorder_status,
           LabelRefused: parse_recorder_status, PolicyStatus: parse_policy_status, OperatorLabel: parse_operator_label}
EXAMPLES = [START, END, COMMITTED, LABELED, REFUSED, STATUS, LABEL]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_type_round_trips_with_its_schema_version(message):
    text = message.to_json()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert PARSERS[type(message)](text) == message
    assert PARSERS[type(message)](json.dumps(message.to_dict())) == message


@pytest.mark.parametrize("data, parse", [  # as nodes wrote them before messages.py: no schema_version
    ({"event": "start", "episode_id": "sim-0-x", "task": "push", "env_name": "push-v3", "seed": 0,
      "robot_id": "sim-0", "control_rate_hz": 20.0, "stamp_ns": 12}, parse_episode_event),
    ({"event": "end", "episode_id": "arm-7-x", "reason": "stopped by operator", "steps": 20}, parse_episode_event),
    ({"state": "unconfigured", "bundle": "", "error": ""}, parse_policy_status),
    ({"state": "serving", "bundle": "/b", "model_id": "m", "version": "1", "engine": "onnxruntime",
      "engine_note": "", "conditioning": "none", "beta": 1, "error": "", "staged": "", "inferences": 3,
      "swaps": 0, "rollbacks": 0, "deadline_misses": 0, "ticks": 9}, parse_policy_status),
    ({"event": "committed", "episode_id": "e1", "path": "/s/episodes/e1", "steps": 3, "outcome": "unlabeled",
      "dropped_steps": 0}, parse_recorder_status),
    ({"event": "labeled", "episode_id": "e1", "outcome": "failure", "progress": None, "note": "",
      "labeled_by": "", "labeled_at": 1.0}, parse_recorder_status),
    ({"event": "label_refused", "error": "no"}, parse_recorder_status),
    ({"outcome": "failure", "progress": 4, "note": "dropped it late", "operator": "kim"}, parse_operator_label),
])
def test_messages_without_a_version_are_version_1(data, parse):
    message = parse(json.dumps(data))
    assert message.to_dict() == {**message.to_dict(), **data}  # every field as sent


def test_defaults_fill_what_a_message_leaves_out_and_unknown_keys_are_ignored():
    end = parse_episode_event('{"event": "end", "episode_id": "e1", "reason": "stopped", "steps": 0}')
    assert end.success is None and end.held_steps == 0
    label = parse_operator_label('{"outcome": "success", "mood": {"a": [1, 2]}, "schema_version": 1}')
    assert label == OperatorLabel(outcome="success")
    assert parse_policy_status('{"state": "inactive", "temperature_c": 41.5}').state == "inactive"


def test_a_float_field_given_an_integer_holds_a_float():
    start = parse_episode_event(json.dumps({**START.to_dict(), "control_rate_hz": 20}))
    assert start.control_rate_hz == 20.0 and type(start.control_rate_hz) is float


def _with(message, **changes) -> str:
    return json.dumps({**message.to_dict(), **changes})


def _without(message, key: str) -> str:
    data = message.to_dict()
    del data[key]
    return json.dumps(data)


REFUSALS = {  # case -> (parse, text, message type named, field named ("" for the whole message))
    "not JSON": (parse_operator_label, "outcome=success", "operator label", ""),
    "truncated JSON": (parse_episode_event, START.to_json()[:-5], "episode event", ""),
    "not text": (parse_operator_label, b'{"outcome": "success"}', "operator label", ""),
    "a list": (parse_policy_status, '["serving"]', "policy status", ""),
    "a string": (parse_policy_status, '"serving"', "policy status", ""),
    "null": (parse_recorder_status, "null", "recorder status", ""),
    "100,000 deep list": (parse_episode_event, nested(100_000), "episode event", ""),
    "100,000 deep object": (parse_operator_label, '{"a":' * 100_000 + "1" + "}" * 100_000, "operator label", ""),
    "deep inside an unknown key": (parse_operator_label, _with(LABEL, extra=json.loads(nested(MAX_DEPTH))),
                                   "operator label", ""),
    "huge message": (parse_operator_label, _with(LABEL, padding="x" * MAX_MESSAGE_CHARS), "operator label", ""),
    "huge note": (parse_operator_label, _with(LABEL, note="x" * (MAX_TEXT_CHARS + 1)), "OperatorLabel", "note"),
    "huge task": (parse_episode_event, _with(START, task="x" * 100_000), "EpisodeStart", "task"),
    "NaN": (parse_episode_event, _with(START).replace('"control_rate_hz": 20.0', '"control_rate_hz": NaN'),
            "episode event", ""),
    "Infinity": (parse_policy_status, '{"state": "serving", "beta": Infinity}', "policy status", ""),
    "-Infinity": (parse_recorder_status, _with(LABELED).replace("1767225600.5", "-Infinity"),
                  "recorder status", ""),
    "a float overflowing to inf": (parse_policy_status, '{"state": "serving", "beta": 1e400}', "PolicyStatus",
                                   "beta"),
    "an integer beyond any float": (parse_episode_event, _with(START, control_rate_hz=10 ** 400), "EpisodeStart",
                                    "control_rate_hz"),
    "an integer of 5,000 digits": (parse_episode_event, _with(END).replace('"steps": 87', '"steps": ' + "9" * 5000),
                                   "episode event", ""),
    "an integer beyond int64": (parse_episode_event, _with(START, stamp_ns=2 ** 63), "EpisodeStart", "stamp_ns"),
    "a negative count": (parse_episode_event, _with(END, steps=-1), "EpisodeEnd", "steps"),
    "unknown event kind": (parse_episode_event, _with(START, event="restart"), "episode event", "event"),
    "no event kind": (parse_episode_event, _without(START, "event"), "episode event", "event"),
    "an event kind of another topic": (parse_episode_event, COMMITTED.to_json(), "episode event", "event"),
    "event kind not a string": (parse_recorder_status, _with(COMMITTED, event=["committed"]), "recorder status",
                                "event"),
    "missing episode_id": (parse_episode_event, _without(START, "episode_id"), "EpisodeStart", "episode_id"),
    "missing task": (parse_episode_event, _without(START, "task"), "EpisodeStart", "task"),
    "missing stamp_ns": (parse_episode_event, _without(START, "stamp_ns"), "EpisodeStart", "stamp_ns"),
    "missing steps": (parse_episode_event, _without(END, "steps"), "EpisodeEnd", "steps"),
    "missing outcome": (parse_operator_label, '{"progress": 3}', "OperatorLabel", "outcome"),
    "missing state": (parse_policy_status, '{"bundle": "/b"}', "PolicyStatus", "state"),
    "a list where a number belongs": (parse_episode_event, _with(END, steps=[87]), "EpisodeEnd", "steps"),
    "a string where a number belongs": (parse_episode_event, _with(START, control_rate_hz="20"), "EpisodeStart",
                                        "control_rate_hz"),
    "a bool where a rate belongs": (parse_episode_event, _with(START, control_rate_hz=True), "EpisodeStart",
                                    "control_rate_hz"),
    "a bool where a count belongs": (parse_episode_event, _with(END, held_steps=False), "EpisodeEnd", "held_steps"),
    "progress true": (parse_operator_label, _with(LABEL, progress=True), "OperatorLabel", "progress"),
    "float progress": (parse_operator_label, _with(LABEL, progress=3.7), "OperatorLabel", "progress"),
    "float progress 4.0": (parse_operator_label, _with(LABEL, progress=4.0), "OperatorLabel", "progress"),
    "note not a string": (parse_operator_label, _with(LABEL, note=5), "OperatorLabel", "note"),
    "note with an unpaired surrogate": (parse_operator_label, '{"outcome": "success", "note": "a\\ud800"}',
                                        "OperatorLabel", "note"),
    "note an object": (parse_operator_label, _with(LABEL, note={"text": "x"}), "OperatorLabel", "note"),
    "success not a bool": (parse_episode_event, _with(END, success="yes"), "EpisodeEnd", "success"),
    "success a number": (parse_episode_event, _with(END, success=1), "EpisodeEnd", "success"),
    "task null": (parse_episode_event, _with(START, task=None), "EpisodeStart", "task"),
    "zero control rate": (parse_episode_event, _with(START, control_rate_hz=0), "EpisodeStart", "control_rate_hz"),
    "unknown policy state": (parse_policy_status, '{"state": "dancing"}', "PolicyStatus", "state"),
    "episode id climbing out": (parse_episode_event, _with(START, episode_id="../../../x"), "EpisodeStart",
                                "episode_id"),
    "end episode id climbing out": (parse_episode_event, _with(END, episode_id="../../../x"), "EpisodeEnd",
                                    "episode_id"),
    "absolute episode id": (parse_episode_event, _with(START, episode_id="/etc/passwd"), "EpisodeStart",
                            "episode_id"),
    "hidden episode id": (parse_episode_event, _with(START, episode_id=".hidden"), "EpisodeStart", "episode_id"),
    "empty episode id": (parse_episode_event, _with(START, episode_id=""), "EpisodeStart", "episode_id"),
    "robot id with a slash": (parse_episode_event, _with(START, robot_id="arm/7"), "EpisodeStart", "robot_id"),
    "label for a path": (parse_operator_label, _with(LABEL, episode_id="../labels"), "OperatorLabel", "episode_id"),
    "committed id climbing out": (parse_recorder_status, _with(COMMITTED, episode_id="a/../../b"),
                                  "EpisodeCommitted", "episode_id"),
    "newer schema": (parse_episode_event, _with(START, schema_version=SCHEMA_VERSION + 1), "episode event",
                     "schema_version"),
    "schema as a string": (parse_operator_label, _with(LABEL, schema_version="1"), "operator label",
                           "schema_version"),
    "schema true": (parse_operator_label, _with(LABEL, schema_version=True), "operator label", "schema_version"),
    "schema 0": (parse_policy_status, _with(STATUS, schema_version=0), "policy status", "schema_version"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_malformed_messages_are_refused_naming_the_type_and_field(case):
    parse, text, message_type, field = REFUSALS[case]
    with pytest.raises(MessageError) as refused:
        parse(text)
    assert (refused.value.message_type, refused.value.field) == (message_type, field), str(refused.value)
    assert str(refused.value).startswith(f"{message_type}: ") and len(str(refused.value)) < 400


def test_the_errors_say_what_to_do():
    with pytest.raises(MessageError, match="newer than this robot_runtime reads .* update robot_runtime"):
        parse_episode_event(_with(START, schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(MessageError, match=r"use 1-128 letters, digits"):
        parse_episode_event(_with(START, episode_id="../../../x"))
    with pytest.raises(MessageError, match=r"'restart' is not one of \['end', 'start'\]"):
        parse_episode_event(_with(START, event="restart"))
    with pytest.raises(MessageError, match=r"must be an integer .* got True"):
        parse_operator_label(_with(LABEL, progress=True))


def test_nodes_cannot_build_what_readers_would_refuse():
    with pytest.raises(MessageError, match="EpisodeStart: robot_id"):
        EpisodeStart(episode_id="e1", task="t", robot_id="my robot", control_rate_hz=20.0, stamp_ns=0)
    with pytest.raises(MessageError, match="EpisodeEnd: steps"):
        EpisodeEnd(episode_id="e1", reason="", steps=3.0)
    with pytest.raises(MessageError, match="PolicyStatus: error"):
        PolicyStatus(state="error", error="x" * (MAX_TEXT_CHARS + 1))
    assert PolicyStatus(state="error", error=clip("x" * 10 * MAX_TEXT_CHARS)).error.endswith("...")
    assert clip("short") == "short"


def test_brackets_and_quotes_inside_strings_are_text():
    note = '[[[[{{{{"\\' * 40
    label = parse_operator_label(_with(LABEL, note=note))
    assert label.note == note


def test_the_largest_valid_message_fits_and_hostile_ones_are_refused_quickly():
    worst = "\x00" * MAX_TEXT_CHARS  # every character escaped as \u0000 by JSON
    texts = {f.name: worst for f in PolicyStatus.__dataclass_fields__.values() if f.type == "str"}
    status = PolicyStatus(**{**texts, "state": "serving"})
    assert len(status.to_json()) <= MAX_MESSAGE_CHARS and parse_policy_status(status.to_json()) == status
    started = time.perf_counter()
    for text in ("[]" * (MAX_MESSAGE_CHARS // 2), "[" * MAX_MESSAGE_CHARS, "x" * (100 * MAX_MESSAGE_CHARS)):
        with pytest.raises(MessageError):
            parse_operator_label(text)
    assert time.perf_counter() - started < 2.0


FUZZ_PER_PARSER = 10_000


@pytest.mark.parametrize("parse", sorted(set(PARSERS.values()), key=lambda p: p.__name__), ids=lambda p: p.__name__)
def test_fuzzed_messages_give_a_typed_message_or_a_message_error(parse):
    """10,000 mutated messages per parser (of every type it reads): a typed message that survives a round trip,
    or a MessageError; any other exception fails the test."""
    examples = [m for m in EXAMPLES if PARSERS[type(m)] is parse]
    rng = random.Random(parse.__name__)
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(FUZZ_PER_PARSER):
        text = mutate(examples[i % len(examples)], rng)
        try:
            parsed = parse(text)
        except MessageError:
            outcomes["refused"] += 1
            continue
        assert isinstance(parsed, tuple(t for t, p in PARSERS.items() if p is parse)), text
        assert parse(parsed.to_json()) == parsed  # what was accepted can be sent on unchanged
        parsed.to_json().encode("utf-8")  # as a ROS string
        outcomes["parsed"] += 1
    print(f"{parse.__name__}: {FUZZ_PER_PARSER} fuzzed, {outcomes}")
    assert outcomes["parsed"] > FUZZ_PER_PARSER // 20 and outcomes["refused"] > FUZZ_PER_PARSER // 3, outcomes
