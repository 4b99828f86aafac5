"""Signed releases: a robot trusts exactly the bytes a trusted key signed; anything else is refused with its cause."""
import copy
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from robot_runtime.fleet import keys
from robot_runtime.fleet.cli import main
from robot_runtime.fleet.releases import (
    RELEASE_FILE,
    ReleaseError,
    TrustStore,
    sign_bundle,
    sign_rollback,
    verify_release,
    verify_signed,
)

from bundle_factory import make_reference_bundle

FUZZ_CASES = 10_000


@pytest.fixture
def fleet(tmp_path):
    """The workstation's release key 'nightly' and a robot trust store holding its public half."""
    keys.create_release_key(tmp_path / "keys", "nightly")
    (tmp_path / "trust").mkdir()
    shutil.copy(tmp_path / "keys" / "nightly.release.pub", tmp_path / "trust")
    return tmp_path / "keys" / "nightly.release.pem", TrustStore(tmp_path / "trust")


def test_a_signed_bundle_verifies_as_what_was_signed(tmp_path, fleet):
    secret, trust = fleet
    bundle = make_reference_bundle(tmp_path / "b", version="v3").path
    signed = sign_bundle(bundle, secret, sequence=3)
    release, loaded = verify_release(bundle, trust)
    assert release == signed and (release.key, release.name, release.sequence) == ("nightly", "reference-v3", 3)
    assert loaded.label == "reference@v3" and not release.rollback
    rollback = sign_rollback(bundle, tmp_path / "rb", secret, sequence=4)
    assert verify_signed(tmp_path / "rb", trust) == rollback and rollback.rollback
    assert sorted(p.name for p in (tmp_path / "rb").iterdir()) == [RELEASE_FILE]


def _edit_release(bundle, change):
    doc = json.loads((bundle / RELEASE_FILE).read_text())
    change(doc)
    (bundle / RELEASE_FILE).write_text(json.dumps(doc))


def _flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _stranger(tmp_path):
    keys.create_release_key(tmp_path / "stranger", "stranger")
    return tmp_path / "stranger" / "stranger.release.pem"


def _revoke_and_put_back(trust):
    keys.revoke(trust.directory, "nightly")
    shutil.copy(trust.directory / "revoked" / "nightly.release.pub", trust.directory)


def _replace_with_rollback(bundle, trust, tmp):
    sign_rollback(bundle, tmp / "rb", tmp / "keys" / "nightly.release.pem", 2)
    shutil.copy(tmp / "rb" / RELEASE_FILE, bundle / RELEASE_FILE)


REFUSALS = {  # what was done to a signed bundle -> (the cause, words the message must carry)
    "no release.json": (lambda b, t, tmp: (b / RELEASE_FILE).unlink(), "unsigned", "missing"),
    "signed by an unknown key": (lambda b, t, tmp: sign_bundle(b, _stranger(tmp), 2), "unknown-key", "stranger"),
    "signed by a revoked key": (lambda b, t, tmp: keys.revoke(t.directory, "nightly"), "revoked-key", "revoked"),
    "revoked key put back": (lambda b, t, tmp: _revoke_and_put_back(t), "revoked-key", "was revoked"),
    "unknown key under a trusted name": (lambda b, t, tmp: sign_bundle(b, _stranger(tmp), 2, key_name="nightly"),
                                         "bad-signature", "does not match key 'nightly'"),
    "signed fields edited": (lambda b, t, tmp: _edit_release(b, lambda d: d["signed"].update(sequence=99)),
                             "bad-signature", "changed after signing"),
    "policy.onnx byte flipped": (lambda b, t, tmp: _flip_byte(b / "policy.onnx"), "tampered", "sha256 mismatch"),
    "policy.onnx removed": (lambda b, t, tmp: (b / "policy.onnx").unlink(), "tampered", "missing"),
    "manifest.json edited": (lambda b, t, tmp: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"chunk_length": 8', '"chunk_length": 9')),
        "tampered", "changed after signing"),
    "file the manifest does not list": (lambda b, t, tmp: (b / "extra.so").write_bytes(b"\x7fELF"),
                                        "tampered", "not a file of the signed manifest"),
    "release.json not JSON": (lambda b, t, tmp: (b / RELEASE_FILE).write_text("{not json"), "malformed", "not JSON"),
    "rollback instruction given as a bundle": (_replace_with_rollback, "invalid", "rollback instruction"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_names_its_cause(tmp_path, fleet, case):
    secret, trust = fleet
    bundle = make_reference_bundle(tmp_path / "b").path
    sign_bundle(bundle, secret, 1)
    change, cause, words = REFUSALS[case]
    change(bundle, trust, tmp_path)
    with pytest.raises(ReleaseError) as refused:
        verify_release(bundle, trust)
    assert refused.value.cause == cause and words in str(refused.value), str(refused.value)


JSON_VALUES = [None, True, False, 0, -1, 2**63, 10**40, 1.5, "", "x" * 300, "../etc", "é", [], {}, [[[]]],
               "2026-13-01T00:00:00", "AAAA", {"a": [1, {"b": None}]}]


def _mutations(valid: bytes, rng: np.random.Generator):
    """Seeded damage to a valid release.json: byte flips, truncation, wrong, missing and extra fields, nesting,
    oversize."""
    doc = json.loads(valid)
    for i in range(FUZZ_CASES):
        kind = i % 5
        if kind == 0:
            data = bytearray(valid)
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            yield bytes(data)
        elif kind == 1:
            yield valid[: int(rng.integers(len(valid)))]
        elif kind in (2, 3):
            d = copy.deepcopy(doc)
            target = d["signed"] if kind == 3 else d
            name = sorted(target)[int(rng.integers(len(target)))]
            action = int(rng.integers(3))
            if action == 0:
                target[name] = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
            elif action == 1:
                del target[name]
            else:
                target[f"extra{i}"] = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
            yield json.dumps(d).encode()
        else:
            depth = int(rng.integers(1, 50_000))
            yield [b"[" * depth + b"]" * depth, valid + b" " * (70 << 10), b"NaN", b'{"schema_version": 1e999}',
                   b"\xff\xfe", b'{"schema_version": ' + b"9" * 5000 + b"}"][i // 5 % 6]


def test_fuzzed_release_json_gives_a_release_or_a_release_error(tmp_path, fleet):
    secret, trust = fleet
    bundle = make_reference_bundle(tmp_path / "b").path
    original = sign_bundle(bundle, secret, 1)
    valid = (bundle / RELEASE_FILE).read_bytes()
    outcomes = Counter()
    for data in _mutations(valid, np.random.default_rng(11)):
        (bundle / RELEASE_FILE).write_bytes(data)
        try:
            release = verify_signed(bundle, trust)
        except ReleaseError as err:
            outcomes[err.cause] += 1
            continue
        assert release == original  # only harmless changes (whitespace, a flip inside base64 padding) verify
        outcomes["verified"] += 1
    print(f"{FUZZ_CASES} mutated release.json: {dict(outcomes)}")
    assert sum(outcomes.values()) == FUZZ_CASES and outcomes["malformed"] > FUZZ_CASES // 2
    assert outcomes["bad-signature"] > 0 and outcomes["verified"] < FUZZ_CASES // 100


def test_cli_signs_verifies_and_refuses(tmp_path, fleet, capsys):
    secret, trust = fleet
    bundle = make_reference_bundle(tmp_path / "b", version="r2").path
    main(["release", "sign", "--bundle", str(bundle), "--key", str(secret), "--sequence", "2"])
    main(["release", "verify", "--bundle", str(bundle), "--trust", str(trust.directory)])
    out = capsys.readouterr().out
    assert "signed reference-r2 as release 2 with key 'nightly'" in out and "ok: reference-r2" in out
    main(["release", "rollback", "--bundle", str(bundle), "--key", str(secret), "--sequence", "5",
          "--out", str(tmp_path / "rb")])
    main(["release", "verify", "--bundle", str(tmp_path / "rb"), "--trust", str(trust.directory)])
    assert "ok: rollback instruction to reference-r2; release 5" in capsys.readouterr().out
    _flip_byte(bundle / "policy.onnx")
    with pytest.raises(SystemExit):
        main(["release", "verify", "--bundle", str(bundle), "--trust", str(trust.directory)])
    assert "tampered: sha256 mismatch" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a broken bundle is never signed
        main(["release", "sign", "--bundle", str(bundle), "--key", str(secret), "--sequence", "3"])
    assert "policy.onnx: sha256 mismatch" in capsys.readouterr().err
