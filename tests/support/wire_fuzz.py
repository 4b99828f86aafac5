"""Seeded fuzz of the wire messages (robot_runtime.messages), shared by the parser tests and the DDS test that
sends the corpus to running nodes: valid examples of every type, and `mutate` (a field replaced, dropped or added,
characters changed, the text cut short, a raw token spliced in)."""
import copy
import json
import random

from robot_runtime.messages import (
    MAX_TEXT_CHARS,
    EpisodeCommitted,
    EpisodeEnd,
    EpisodeLabeled,
    EpisodeStart,
    LabelRefused,
    OperatorLabel,
    PolicyStatus,
)

START = EpisodeStart(episode_id="sim-0-20260101T000000-a1b2c3", task="push the puck to the goal", robot_id="sim-0",
                     control_rate_hz=20.0, stamp_ns=1_700_000_000_000_000_000, env_name="push-v3", seed=7)
END = EpisodeEnd(episode_id=START.episode_id, reason="success", steps=87, success=True, held_steps=2)
COMMITTED = EpisodeCommitted(episode_id=START.episode_id, path="/data/episodes/episodes/sim-0", steps=87,
                             outcome="success", dropped_steps=0)
LABELED = EpisodeLabeled(episode_id=START.episode_id, outcome="failure", progress=4, note="dropped it late",
                         labeled_by="kim", labeled_at=1_767_225_600.5)
REFUSED = LabelRefused(error="operator label: not JSON (Expecting value: line 1 column 1 (char 0))")
STATUS = PolicyStatus(state="serving", bundle="/bundles/reference@3", model_id="reference", version="3",
                      engine="onnxruntime", engine_note="", conditioning="advantage", beta=1.5, staged="",
                      inferences=120, swaps=1, rollbacks=0, deadline_misses=0, ticks=400)
LABEL = OperatorLabel(outcome="failure", episode_id=START.episode_id, progress=4, note="dropped it late",
                      operator="kim")


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


JSON_VALUES = [None, True, False, 0, -1, 3, 4.0, 2.5, 2 ** 63, 10 ** 400, -0.0, "", "x", "../../x", "a/b", ".",
               "x" * (MAX_TEXT_CHARS + 1), "é\u0000\ud7ff", [], [1, 2], {}, {"a": None}, json.loads(nested(20)),
               "start", "end", "committed", "serving"]
RAW = ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, nested(5000), '"\\ud800"', "[" * 30, "{", "}", ","]


def mutate(message, rng: random.Random) -> str:
    data = message.to_dict()
    kind = rng.randrange(6)
    if kind == 0:  # a field's value replaced
        data[rng.choice(sorted(data))] = copy.deepcopy(rng.choice(JSON_VALUES))
    elif kind == 1:  # a field dropped
        del data[rng.choice(sorted(data))]
    elif kind == 2:  # a key added
        data[rng.choice(["extra", "event", "schema_version", "success", "progress"])] = rng.choice(JSON_VALUES)
    text = json.dumps(data)
    if kind == 3:  # characters changed
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice('{}[]",:0\\ aé\x00')
        text = "".join(chars)
    elif kind == 4:  # cut short
        text = text[: rng.randrange(len(text))]
    elif kind == 5:  # a raw token spliced in where a value goes
        key = rng.choice(sorted(data))
        text = text.replace(f'"{key}": {json.dumps(data[key])}', f'"{key}": {rng.choice(RAW)}', 1)
    return text
