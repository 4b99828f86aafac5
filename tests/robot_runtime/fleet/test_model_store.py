"""The robot's model store: only signed, intact, newer releases that fit the robot are installed; a signed rollback
returns to an installed version; an installer killed at any moment leaves the old model current and loadable."""
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, replace

import numpy as np
import pytest

from robot_runtime.bundle import load_bundle, write_bundle
from robot_runtime.episode import EpisodeLayout
from robot_runtime.fleet import keys
from robot_runtime.fleet.model_store import ModelStore, RobotDescription, current_version, read_state
from robot_runtime.fleet.releases import RELEASE_FILE, TrustStore, sign_bundle, sign_rollback, verify_release
from robot_runtime.sim.metaworld_robot import ACTION_NAMES, STATE_NAMES

from bundle_factory import make_reference_bundle

ROBOT = RobotDescription.from_layout(
    EpisodeLayout(cameras={"corner": (96, 96), "gripperPOV": (96, 96)}, state_names=STATE_NAMES,
                  action_names=ACTION_NAMES), action_low=[-1.0] * 4, action_high=[1.0] * 4)
KILL_TRIALS = 12
PAYLOAD_BYTES = 48 << 20  # a large-ish weights file, so a kill lands inside copying, fsync and hashing


class Fleet:
    """A workstation with release keys (nightly: trusted; retired: trusted, then revoked; stranger: never trusted)
    and a robot trust store."""

    def __init__(self, tmp_path):
        self.tmp, self.made = tmp_path, 0
        self.trust = tmp_path / "trust"
        self.trust.mkdir()
        for name in ("nightly", "retired", "stranger"):
            keys.create_release_key(tmp_path / "keys", name)
            if name != "stranger":
                shutil.copy(tmp_path / "keys" / f"{name}.release.pub", self.trust)
        keys.revoke(self.trust, "retired")

    def secret(self, name: str = "nightly"):
        return self.tmp / "keys" / f"{name}.release.pem"

    def _new_dir(self, kind: str):
        self.made += 1
        return self.tmp / kind / str(self.made)

    def release(self, version: str, sequence: int, key: str = "nightly", **bundle):
        path = make_reference_bundle(self._new_dir("releases"), version=version, **bundle).path
        sign_bundle(path, self.secret(key), sequence)
        return path

    def rollback(self, bundle_dir, sequence: int, key: str = "nightly"):
        out = self._new_dir("rollbacks")
        sign_rollback(bundle_dir, out, self.secret(key), sequence)
        return out

    def store(self, robot: RobotDescription = ROBOT, keep: int = 3) -> ModelStore:
        return ModelStore(self.tmp / "store", self.trust, robot, keep)


@pytest.fixture
def fleet(tmp_path):
    return Fleet(tmp_path)


def installed(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.versions_dir.iterdir())


def test_installs_flip_current_and_keep_the_last_k(fleet):
    store = fleet.store(keep=3)
    assert store.current() is None
    for n in range(1, 6):
        result = store.install(fleet.release(f"v{n}", n))
        assert result.installed and result.version == f"reference-v{n}" and result.cause == "", result.reason
        assert load_bundle(store.current()).manifest.version == f"v{n}"
        assert list(store.staging_dir.iterdir()) == []
    assert installed(store) == ["reference-v3", "reference-v4", "reference-v5"]
    assert store.state().recent == ("reference-v5", "reference-v4", "reference-v3")


def test_pruning_never_deletes_the_current_or_the_previous_version(fleet):
    store = fleet.store(keep=2)
    v1 = fleet.release("v1", 1)
    for path in (v1, fleet.release("v2", 2), fleet.rollback(v1, 3), fleet.release("v3", 4)):
        assert store.install(path).installed
        assert installed(store) == sorted(store.state().recent)  # current and previous, once there is one
    assert store.state().recent == ("reference-v3", "reference-v1")  # v2 went: it was neither
    with pytest.raises(ValueError, match="keep >= 2"):
        fleet.store(keep=1)


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _tampered(fleet, file: str):
    path = fleet.release("v7", 7)
    if file == "manifest.json":
        (path / file).write_text((path / file).read_text().replace('"chunk_length": 8', '"chunk_length": 4'))
    else:
        _flip_byte(path / file)
    return path


def _unsigned(fleet):
    path = fleet.release("v7", 7)
    (path / RELEASE_FILE).unlink()
    return path


NARROW_GRIPPER = replace(ROBOT, action_high=(1.0, 1.0, 1.0, 0.5))
REFUSED = [  # (what, the release, the robot, the cause, words the reason must carry); v1 at sequence 5 is current
    ("policy.onnx tampered", lambda f: _tampered(f, "policy.onnx"), ROBOT, "tampered", "sha256 mismatch"),
    ("manifest.json tampered", lambda f: _tampered(f, "manifest.json"), ROBOT, "tampered", "changed after signing"),
    ("unsigned", _unsigned, ROBOT, "unsigned", "release.json: unsigned"),
    ("unknown key", lambda f: f.release("v7", 7, key="stranger"), ROBOT, "unknown-key", "'stranger'"),
    ("revoked key", lambda f: f.release("v7", 7, key="retired"), ROBOT, "revoked-key", "'retired'"),
    ("cameras", lambda f: f.release("v7", 7, cameras=(("corner", 96), ("wrist", 96))), ROBOT, "incompatible",
     "camera 'wrist' is not on this robot"),
    ("camera sizes", lambda f: f.release("v7", 7, cameras=(("corner", 64), ("gripperPOV", 96))), ROBOT,
     "incompatible", "camera 'corner' is 64x64 in the bundle, 96x96 on this robot"),
    ("state names", lambda f: f.release("v7", 7, state_names=(*STATE_NAMES, "joint_7")), ROBOT, "incompatible",
     "state names ['joint_7'] are not published"),
    ("action names", lambda f: f.release("v7", 7, action_names=(*ACTION_NAMES[:3], "wrist_roll")), ROBOT,
     "incompatible", "adds ['wrist_roll'] and lacks ['gripper']"),
    ("action bounds", lambda f: f.release("v7", 7), NARROW_GRIPPER, "incompatible",
     "action 'gripper' bounds [-1.0, 1.0] exceed this robot's [-1.0, 0.5]"),
    ("older release replayed", lambda f: f.release("v0", 3), ROBOT, "replay", "sequence 3 is not above 5"),
    ("current release re-sent", lambda f: f.release("v1", 5), ROBOT, "replay", "sequence 5 is not above 5"),
    ("new version, old sequence", lambda f: f.release("v8", 4), ROBOT, "replay", "signed rollback"),
    ("installed version re-signed", lambda f: f.release("v1", 9), ROBOT, "exists", "already installed"),
]


def test_every_bad_release_is_refused_before_install_with_its_reason(fleet):
    fleet.store().install(fleet.release("v1", 5))
    before = (read_state(fleet.store().root), installed(fleet.store()))
    counts = Counter()
    for what, make, robot, cause, words in REFUSED:
        store = fleet.store(robot)
        result = store.install(make(fleet))
        assert not result.installed and result.cause == cause and words in result.reason, (what, result)
        assert (read_state(store.root), installed(store)) == before, what
        assert list(store.staging_dir.iterdir()) == [], what
        counts[cause] += 1
    print(f"refused before install: {dict(counts)}")
    assert load_bundle(fleet.store().current()).manifest.version == "v1"
    assert fleet.store().install(fleet.release("v7", 7)).installed  # the store still takes a good release


def _without_signature(path):
    (path / RELEASE_FILE).unlink()
    return path


def _edited(path, **signed):
    doc = json.loads((path / RELEASE_FILE).read_text())
    doc["signed"].update(signed)
    (path / RELEASE_FILE).write_text(json.dumps(doc))
    return path


def test_a_signed_rollback_returns_to_an_installed_version_and_nothing_else_does(fleet):
    store = fleet.store()
    v1, v2 = fleet.release("v1", 1), fleet.release("v2", 2)
    assert store.install(v1).installed and store.install(v2).installed
    refused = {  # each refused, the store unchanged
        "unsigned": lambda: _without_signature(fleet.rollback(v1, 3)),
        "bad-signature": lambda: _edited(fleet.rollback(v1, 3), version="v2"),
        "unknown-key": lambda: fleet.rollback(v1, 3, key="stranger"),
        "revoked-key": lambda: fleet.rollback(v1, 3, key="retired"),
        "not-installed": lambda: fleet.rollback(make_reference_bundle(fleet.tmp / "v9", version="v9").path, 3),
        "mismatch": lambda: fleet.rollback(make_reference_bundle(fleet.tmp / "v1b", version="v1", seed=5).path, 3),
    }
    for cause, make in refused.items():
        result = store.install(make())
        assert not result.installed and result.cause == cause, result
        assert store.state().recent == ("reference-v2", "reference-v1")
    rollback = fleet.rollback(v1, 3)
    result = store.install(rollback)
    assert result.installed and result.rollback and result.reason.startswith("rolled back to reference-v1"), result
    assert store.state().recent == ("reference-v1", "reference-v2") and store.state().sequence == 3
    assert load_bundle(current_version(store.root)).manifest.version == "v1"
    for replayed in (rollback, v2):  # neither the instruction nor the release rolled back from comes back
        assert store.install(replayed).cause == "replay"
    assert store.install(fleet.rollback(v2, 4)).installed and store.state().current == "reference-v2"


def test_recover_removes_what_a_kill_leaves_at_each_step(fleet):
    """The states a kill can leave, made directly: a partial copy, a version renamed in but never made current,
    a pointer write never renamed, a prune never finished. Recovery removes each; `current` never moves."""
    store = fleet.store()
    assert store.install(fleet.release("v1", 1)).installed
    (store.staging_dir / "reference-v2.abc").mkdir()
    (store.staging_dir / "reference-v2.abc" / "policy.onnx").write_bytes(b"half")
    shutil.copytree(store.versions_dir / "reference-v1", store.versions_dir / "reference-v2")
    (store.root / ".current.json.x1.partial").write_text('{"schema_version": 1')
    shutil.copytree(store.versions_dir / "reference-v1", store.staging_dir / "discard.q" / "reference-v0")
    assert sorted(store.recover()) == [".current.json.x1.partial", "staging/discard.q", "staging/reference-v2.abc",
                                       "versions/reference-v2"]
    assert installed(store) == ["reference-v1"] and list(store.staging_dir.iterdir()) == []
    assert store.current() == store.versions_dir / "reference-v1" and store.recover() == []


CHILD = """
import json, sys
import onnx  # imported before 'ready', so the kill window covers the install, not the imports
from robot_runtime.fleet.model_store import ModelStore, RobotDescription
root, trust, release, robot = sys.argv[1:]
store = ModelStore(root, trust, RobotDescription(**json.loads(robot)))
print("ready", flush=True)
sys.stdin.readline()
store.install(release)
"""


def _big_release(fleet, payload, version: str, sequence: int):
    small = make_reference_bundle(fleet.tmp / "small" / version, version=version)
    path = fleet.tmp / "big" / version
    write_bundle(path, small.manifest, {"policy.onnx": small.policy_path, "weights.bin": payload})
    sign_bundle(path, fleet.secret(), sequence)
    return path


def _installer(fleet, root, release) -> subprocess.Popen:
    """A process installing `release` into the store at `root`, started and told to go."""
    robot = json.dumps({k: v for k, v in asdict(ROBOT).items() if k != "limits"})
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(fleet.trust), str(release), robot],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    child.stdin.write("go\n")
    child.stdin.flush()
    return child


class Reader(threading.Thread):
    """policy_node's view: resolve `current` once, load that directory; any failure is recorded."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.loads, self.failures, self.stop = root, 0, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            path = current_version(self.root)
            try:
                load_bundle(path)
                self.loads += 1
            except Exception as err:  # every failure is a finding
                self.failures.append(f"{path}: {err}")
            time.sleep(0.01)


def test_installer_killed_mid_install_leaves_the_old_model_current(fleet):
    rng = np.random.default_rng(2024)
    payload = fleet.tmp / "weights.bin"
    payload.write_bytes(rng.integers(0, 256, PAYLOAD_BYTES, dtype=np.uint8).tobytes())
    durations = []  # how long an installer process takes once it is told to go (the faster of two)
    for n in range(2):
        calibration = _installer(fleet, fleet.tmp / "calibration", _big_release(fleet, payload, f"calib{n}", n + 1))
        started = time.monotonic()
        assert calibration.wait() == 0
        durations.append(time.monotonic() - started)
    install_s = min(durations)
    store = fleet.store()
    assert store.install(_big_release(fleet, payload, "v1", 1)).installed
    reader = Reader(store.root)
    reader.start()
    outcomes = Counter()
    for trial in range(KILL_TRIALS):
        old, new = store.state().current, f"reference-v{trial + 2}"
        release = _big_release(fleet, payload, f"v{trial + 2}", trial + 2)
        child = _installer(fleet, store.root, release)
        time.sleep(rng.uniform(0.0, 1.3 * install_s))
        child.kill()
        child.wait()
        state = read_state(store.root)
        assert state.current in (old, new)  # never anything else, never a half-installed one
        for name in state.recent:  # what the pointer names is whole and verifies
            verify_release(store.versions_dir / name, TrustStore(fleet.trust))
        leftovers = set(installed(store)) - set(state.recent)
        outcomes["install completed" if state.current == new else "killed with a copy in staging"
                 if any(store.staging_dir.iterdir()) else "killed after the rename, before the flip"
                 if leftovers else "killed before copying"] += 1
        store.recover()
        assert list(store.staging_dir.iterdir()) == [] and set(installed(store)) == set(state.recent)
        if state.current != new:  # re-delivered after the restart, it installs
            assert store.install(release).installed
        else:  # it finished before the kill: aim earlier, so kills keep landing inside installs on a fast machine
            install_s *= 0.8
        assert store.state().current == new
        shutil.rmtree(release)
    reader.stop.set()
    reader.join()
    print(f"{KILL_TRIALS} kills within ~{1.3 * install_s:.2f} s of an install starting: {dict(outcomes)}; "
          f"a concurrent reader loaded current {reader.loads} times, {len(reader.failures)} failures")
    assert reader.failures == [] and reader.loads > KILL_TRIALS
    assert sum(n for k, n in outcomes.items() if k != "install completed") >= KILL_TRIALS // 3
