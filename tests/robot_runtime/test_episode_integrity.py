"""Committed episodes are checked against their commit record: a damaged file is refused by name, by the
reader and by `validate`, never read back as wrong rows; a seeded campaign of corruptions proves it, for
every camera codec."""
import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.datatools.cli import main as cli
from robot_runtime.episode import (
    CODEC_ATTR,
    COMMIT_MARKER,
    LABELS,
    REQUIRED_ATTRS,
    Episode,
    EpisodeError,
    EpisodeLayout,
    EpisodeMetadata,
    EpisodeStore,
    Step,
)
from robot_runtime.files import sha256_file

from codec_cases import CASES, IDS, camera_frames

LAYOUT = EpisodeLayout(cameras={"front": (12, 16), "wrist": (12, 16)}, state_names=("a", "b", "c"),
                       action_names=("x", "y"))
CHUNK = 8
LENGTHS = (21, 16, 30)  # 3, 2 and 4 chunks; the last one partial or not
TRIALS_PER_KIND = {"lossless": 80}  # the lossy codecs' chunk files are damaged the same ways: fewer each
LOSSY_TRIALS_PER_KIND = 25


def write_episodes(root: Path, codec: CameraCodec = CameraCodec()) -> EpisodeStore:
    """Small committed episodes with cameras; the first one carries an operator's label."""
    store = EpisodeStore(root)
    rng = np.random.default_rng(7)
    for e, steps in enumerate(LENGTHS):
        writer = store.writer(LAYOUT, EpisodeMetadata(task="stack", robot_id="r1", control_rate_hz=20.0,
                                                      episode_id=f"ep{e}"), chunk_steps=CHUNK,
                              codecs=dict.fromkeys(LAYOUT.cameras, codec))
        frames = {c: camera_frames(rng, steps, 12, 16) for c in LAYOUT.cameras}
        for i in range(steps):
            images = {c: frames[c][i] for c in LAYOUT.cameras}
            writer.append(Step(0.05 * i, images, rng.normal(size=3).astype(np.float32),
                               rng.normal(size=2).astype(np.float32),
                               policy_action=None if i % 5 == 0 else rng.normal(size=2).astype(np.float32),
                               intervention=i % 4 == 0, held=i % 7 == 3 and i % 4 != 0))
        writer.commit("success" if e % 2 else "failure")
    store.label("ep0", "success", progress=4, note="stacked on the second try", operator="ana")
    return store


def rows(ep: Episode) -> dict[str, np.ndarray]:
    return {name: ep.array(name) for name in ep.layout.arrays()}


def reseal(path: Path, **changes) -> None:
    """Rewrite commit.json the way a buggy writer would: fresh checksums of the files as they are now, fields
    replaced by `changes` (None: removed), a valid record digest. The format, written out independently."""
    record = json.loads((path / COMMIT_MARKER).read_text())
    record.pop("record_sha256")
    record["files"] = {p.relative_to(path).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                       for p in sorted(path.rglob("*")) if p.is_file()
                       and p.name not in (COMMIT_MARKER, LABELS, "progress.json")}
    record.update(changes)
    record = {key: value for key, value in record.items() if value is not None}
    record["record_sha256"] = hashlib.sha256(json.dumps(record).encode()).hexdigest()
    (path / COMMIT_MARKER).write_text(json.dumps(record))


def recorded(path: Path) -> list[str]:
    return sorted(json.loads((path / COMMIT_MARKER).read_text())["files"])


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def templates(tmp_path_factory, request):
    """(path, rows, metadata) of each pristine episode, its cameras stored with one codec."""
    store = write_episodes(tmp_path_factory.mktemp("templates"), request.param)
    return [(store.episodes_dir / eid, rows(store.open(eid)), store.open(eid).meta) for eid in store.episode_ids()]


def copy_into_store(template: Path, root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    store = EpisodeStore(root)
    return Path(shutil.copytree(template, store.episodes_dir / template.name))


def test_a_damaged_file_is_refused_by_name(tmp_path, templates):
    path = copy_into_store(templates[2][0], tmp_path / "store")
    (path / "state/c/1/0").unlink()
    ep = Episode(path)  # the metadata is sound: it opens, and the rows that are sound read
    np.testing.assert_array_equal(ep.array("action"), templates[2][1]["action"])
    with pytest.raises(EpisodeError, match=r"ep2/state/c/1/0: missing; the episode is damaged: restore it"):
        ep.array("state")
    chunk = path / "images/front/c/2/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:-1] + bytes([chunk.read_bytes()[-1] ^ 1]))
    with pytest.raises(EpisodeError, match=r"images/front/c/2/0/0/0: checksum mismatch"):
        ep.images("front")
    (path / "images/wrist/zarr.json").write_text("{}")
    with pytest.raises(EpisodeError, match=r"images/wrist/zarr.json: truncated to 2 bytes, commit.json says \d+"):
        Episode(path)


def test_validate_lists_every_damaged_file_and_quarantines(tmp_path, capsys):
    store = write_episodes(tmp_path / "store")
    ep1, ep2 = store.episodes_dir / "ep1", store.episodes_dir / "ep2"
    (ep1 / "zarr.json").write_bytes(b"\x00garbage")
    (ep1 / "held/c/1").unlink()
    (ep2 / "timestamp/c/3").write_bytes(b"")
    (ep2 / "action/c/0/0").write_bytes(b"x" + (ep2 / "action/c/0/0").read_bytes()[1:])
    capsys.readouterr()
    assert cli(["validate", str(tmp_path / "store"), "--quarantine"]) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "ep1/zarr.json", "ep1/held/c/1", "ep2/action/c/0/0", "ep2/timestamp/c/3"]
    assert "ep2/timestamp/c/3: truncated to 0 bytes" in out and "ep1/held/c/1: missing" in out
    assert "quarantine/ep1: moved there from episodes/" in err and "3 episode(s) checked, 2 with problems (4)" in err
    assert store.episode_ids() == ["ep0"] and sorted(p.name for p in store.quarantine_dir.iterdir()) == ["ep1", "ep2"]
    assert cli(["validate", str(tmp_path / "store")]) == 0


def test_a_record_consistent_with_itself_but_not_with_the_files_is_refused(tmp_path, templates):
    path = copy_into_store(templates[0][0], tmp_path / "store")
    reseal(path, steps=22)
    with pytest.raises(EpisodeError, match=r"ep0/state: shape \(21, 3\) dtype float32, commit.json and the layout "
                                           r"say \(22, 3\) float32"):
        Episode(path)
    reseal(path, steps=21)
    files = json.loads((path / COMMIT_MARKER).read_text())["files"]
    del files["images/zarr.json"], files["intervention/c/2"]
    reseal(path, files=files)
    with pytest.raises(EpisodeError, match=r"ep0/images/zarr.json: has no checksum in commit.json"):
        Episode(path)
    assert cli(["validate", str(path.parent.parent)]) == 1
    reseal(path, files={"../../elsewhere": {"bytes": 1, "sha256": "0" * 64}})
    with pytest.raises(EpisodeError, match=r"commit.json: files is not a table of relative path"):
        Episode(path)


def test_schema_1_episodes_validate_with_a_note_that_they_carry_no_checksums(tmp_path, templates, capsys):
    import zarr

    path = copy_into_store(templates[1][0], tmp_path / "store")
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 1
    (path / COMMIT_MARKER).write_text(json.dumps({"schema_version": 1, "episode_id": "ep1", "steps": 16,
                                                  "committed_at": 0.0}, indent=1))
    capsys.readouterr()
    assert cli(["validate", str(tmp_path / "store")]) == 0
    assert "ep1: schema 1, carries no checksums; its files cannot be verified" in capsys.readouterr().err
    assert cli(["validate", str(tmp_path / "store"), "--strict"]) == 1
    (path / COMMIT_MARKER).write_text(json.dumps({"schema_version": 1, "episode_id": "ep1", "steps": 16,
                                                  "committed_at": 0.0, "files": {}}))
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 2  # a v2 episode whose record says 1
    with pytest.raises(EpisodeError, match="attrs.schema_version: 2, commit.json says 1"):
        Episode(path)


# -- the campaign -----------------------------------------------------------------------------
WRONG_TYPED_JSON = ("[]", "null", '"text"', "42", "{}", '{"zarr_format": 3, "node_type": "array"}',
                    '{"schema_version": 2, "steps": 3}', "[1, 2, 3]", '{"outcome": "success"}')
WRONG_ATTRS = {"str": (None, 3, [], {}), "number": (None, "1.0", [], True), "truncated": (None, "no", 0),
               "outcome": ("great", None, 1), "extra": (None, [], "x"), "schema_version": (1, 2, 4, "3", None),
               "codecs": (None, [], {}, {"front": {"codec": "lossless", "quality": None}},
                          {"front": {"codec": "webp", "quality": None}, "wrist": {"codec": "jpeg", "quality": 90}},
                          {"front": {"codec": "h264", "quality": 99}, "wrist": {"codec": "jpeg", "quality": 90}},
                          {"front": {"codec": "jpeg"}, "wrist": {"codec": "jpeg", "quality": 90}}),
               "layout": (None, "x", [], {"cameras": []},
                          {"cameras": {"../up": [4, 4]}, "state_names": [], "action_names": []})}
ATTR_KIND = {"episode_id": "str", "task": "str", "robot_id": "str", "policy_version": "str", "operator": "str",
             "end_reason": "str", "control_rate_hz": "number", "start_time": "number", "end_time": "number",
             "truncated": "truncated", "outcome": "outcome", "layout": "layout", "extra": "extra",
             "schema_version": "schema_version", CODEC_ATTR: "codecs"}
WRONG_RECORD = {"schema_version": ("3", 4, 0, True), "steps": ("21", -1, True, 1.5, 5, 40),
                "files": ([], "x", {"zarr.json": "0" * 64}, {"zarr.json": {"bytes": "1", "sha256": "0" * 64}}),
                "episode_id": (7, []), "committed_at": ("yesterday", [])}
WRONG_LABELS = ({"outcome": "great"}, {"progress": 9}, {"progress": "4"}, {"note": 3}, {"labeled_at": "now"},
                {"layout": {"cameras": {}, "state_names": [], "action_names": []}})


def corrupt(path: Path, kind: str, rng: np.random.Generator) -> str:
    """Damage the episode at `path` one way; returns what was done."""
    files = recorded(path)
    json_files = [f for f in files if f.endswith("zarr.json")] + [COMMIT_MARKER] + \
        ([LABELS] if (path / LABELS).exists() else [])

    def pick(names):
        return str(names[rng.integers(len(names))])

    if kind == "delete":  # labels.json is optional by design and progress.json unused once committed: not these
        name = pick(files + [COMMIT_MARKER])
        (path / name).unlink()
    elif kind == "truncate":
        name = pick([f for f in files + json_files if (path / f).stat().st_size > 0])
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[:rng.integers(len(data))])
    elif kind == "flip":  # a flipped byte in labels.json can be a valid label: it carries no checksum
        name = pick(files + [COMMIT_MARKER])
        data = bytearray((path / name).read_bytes())
        at = int(rng.integers(len(data)))
        data[at] ^= int(rng.integers(1, 256))
        (path / name).write_bytes(bytes(data))
        name = f"{name}@{at}"
    elif kind == "garbage":
        name = pick(json_files)
        (path / name).write_bytes(rng.integers(0, 256, int(rng.integers(1, 200)), np.uint8).tobytes())
    elif kind == "wrong_typed_json":
        name = pick(json_files)
        (path / name).write_text(pick(WRONG_TYPED_JSON))
    elif kind == "resealed_wrong_types":  # a buggy writer: the checksums agree, the content is wrong
        where = pick(["record", "attrs", "labels"] if (path / LABELS).exists() else ["record", "attrs"])
        if where == "record":
            key = pick(list(WRONG_RECORD))
            value = WRONG_RECORD[key][rng.integers(len(WRONG_RECORD[key]))]
            reseal(path, **{key: value})
        elif where == "attrs":
            group = json.loads((path / "zarr.json").read_text())
            key = pick([*REQUIRED_ATTRS, CODEC_ATTR])
            choices = WRONG_ATTRS[ATTR_KIND[key]]
            value = choices[rng.integers(len(choices))]
            if value is None and rng.random() < 0.5:
                del group["attributes"][key]
            else:
                group["attributes"][key] = value
            (path / "zarr.json").write_text(json.dumps(group))
            reseal(path)
        else:
            key = "label"
            value = WRONG_LABELS[rng.integers(len(WRONG_LABELS))]
            label = json.loads((path / LABELS).read_text())
            (path / LABELS).write_text(json.dumps({**label, **value}))
        name = f"{where}.{key}={value!r}"
    return f"{kind} {name}"


def read_is_refused(path: Path, original: dict[str, np.ndarray], meta: dict) -> bool:
    """True when reading raises EpisodeError; whatever reads before that is exactly what was committed.
    Any other exception fails the test."""
    try:
        ep = Episode(path)
    except EpisodeError:
        return True
    assert ep.meta == meta and ep.steps == len(original["timestamp"])
    refused = False
    for name, committed in original.items():
        try:
            np.testing.assert_array_equal(ep.array(name), committed)  # never wrong rows
        except EpisodeError:
            refused = True
    return refused


def test_corruption_campaign(tmp_path, templates, capsys):
    codec = templates[0][2][CODEC_ATTR]["front"]["codec"]
    trials_per_kind = TRIALS_PER_KIND.get(codec, LOSSY_TRIALS_PER_KIND)
    rng = np.random.default_rng(20261202)
    kinds = ("delete", "truncate", "flip", "garbage", "wrong_typed_json", "resealed_wrong_types")
    trials, flagged, refused, escaped = Counter(), Counter(), Counter(), []
    started = time.monotonic()
    for template, original, meta in templates:  # an untouched copy passes and reads back exactly
        path = copy_into_store(template, tmp_path / "store")
        assert cli(["validate", str(tmp_path / "store")]) == 0 and not read_is_refused(path, original, meta)
    for trial in range(trials_per_kind * len(kinds)):
        kind = kinds[trial % len(kinds)]
        template, original, meta = templates[rng.integers(len(templates))]
        path = copy_into_store(template, tmp_path / "store")
        what = f"{template.name}: {corrupt(path, kind, rng)}"
        trials[kind] += 1
        if cli(["validate", str(tmp_path / "store")]) == 1:
            flagged[kind] += 1
        else:
            escaped.append(f"validate passed {what}")
        if read_is_refused(path, original, meta):
            refused[kind] += 1
        else:
            escaped.append(f"read returned rows of {what}")
    capsys.readouterr()
    with capsys.disabled():
        print(f"\ncorruption campaign, {codec}, {time.monotonic() - started:.1f} s: trials {dict(trials)}, "
              f"flagged by validate {dict(flagged)}, refused by the reader {dict(refused)}")
    assert escaped == []
