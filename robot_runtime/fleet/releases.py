"""Signed releases: a model reaches a robot only as a bundle signed by a release key that the robot trusts.

`sign_bundle` writes `release.json` into a bundle directory:

    {"schema_version": 1, "key": "<release key name>",
     "signed": {"model_id", "version", "manifest_sha256", "sequence", "created_at", "rollback"},
     "signature": "<base64 Ed25519 signature of DOMAIN + the canonical JSON of `signed`>"}

`manifest_sha256` is the digest of manifest.json's exact bytes and the manifest holds every file's sha256,
so the signature covers every byte of the bundle. `sequence` only grows from one release to the next: a
robot refuses one that is not newer than what it accepted last, so an old release cannot be replayed.
A rollback instruction (`sign_rollback`) is a directory holding only `release.json` with `rollback: true`;
it names an installed version by model id, version and manifest hash, under a new sequence number.

`verify_release` checks a release directory against a `TrustStore` and returns a typed `Release`, or raises
`ReleaseError` whose `cause` names why (CAUSES); release.json is parsed with bounds into typed fields and
anything else is refused, never another exception type.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from robot_runtime.bundle import DEFAULT_LIMITS, MANIFEST, Bundle, BundleError, ManifestLimits, load_bundle
from robot_runtime.files import UnsafeNameError, check_name, sha256_file, write_bytes_atomic
from robot_runtime.fleet.keys import (
    RELEASE_PUBLIC,
    RELEASE_SECRET,
    REVOKED,
    FleetKeyError,
    load_release_public_key,
    load_release_secret_key,
)

SCHEMA_VERSION = 1
RELEASE_FILE = "release.json"
DOMAIN = b"robot_runtime release v1\n"  # a release signature can never be taken for another kind of message
MAX_RELEASE_BYTES = 64 << 10
MAX_SEQUENCE = 2**63 - 1
CAUSES = ("unsigned", "malformed", "trust-store", "unknown-key", "revoked-key", "bad-signature", "tampered", "invalid")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ReleaseError(Exception):
    """A release a robot must not install. `cause` is a short code (CAUSES, or a model store's own) for
    counting and reporting; the message names the file and what is wrong."""

    def __init__(self, source: Path | str, cause: str, problem: str):
        super().__init__(f"{source}: {cause}: {problem}")
        self.source = str(source)
        self.cause = cause
        self.problem = problem


@dataclass(frozen=True)
class Release:
    """What a trusted key signed: which bundle (by manifest hash), its place in the release order, and
    whether it is a rollback instruction. `key` names the key that signed it."""

    key: str
    model_id: str
    version: str
    manifest_sha256: str
    sequence: int
    created_at: str
    rollback: bool = False

    @property
    def name(self) -> str:
        """The version directory name on a robot."""
        return f"{self.model_id}-{self.version}"

    def signed(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "key"}


_SIGNED = {f.name: f.type for f in fields(Release) if f.name != "key"}


def _message(release: Release) -> bytes:
    return DOMAIN + json.dumps(release.signed(), sort_keys=True, separators=(",", ":")).encode()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _show(value) -> str:
    """A short description of a parsed JSON value, safe for any value (no repr of deep nesting)."""
    return repr(value)[:80] if type(value) in (str, int, float, bool, type(None)) else type(value).__name__


def _field(obj: dict, name: str, kind: str, source, where: str):
    value = obj[name]
    expected = {"str": str, "int": int, "bool": bool}[kind]
    if type(value) is not expected or (kind == "str" and len(value) > 256):
        raise ReleaseError(source, "malformed", f"{where}{name} must be a {kind} (strings up to 256 characters), "
                                                f"got {_show(value)}")
    return value


def _exactly(obj, names, source, where: str) -> dict:
    if type(obj) is not dict or set(obj) != set(names):
        got = sorted(obj, key=str) if type(obj) is dict else type(obj).__name__
        raise ReleaseError(source, "malformed", f"{where or 'top level'} needs exactly the fields {sorted(names)}, "
                                                f"got {got}")
    return obj


def parse_release(data: bytes, source: Path | str = RELEASE_FILE) -> tuple[Release, bytes]:
    """(release, signature) from release.json's bytes, every field typed and bounded; not yet verified."""
    if len(data) > MAX_RELEASE_BYTES:
        raise ReleaseError(source, "malformed", f"larger than {MAX_RELEASE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise ReleaseError(source, "malformed", f"not JSON ({err or 'nested too deeply'})") from None
    doc = _exactly(doc, ("schema_version", "key", "signed", "signature"), source, "")
    if type(doc["schema_version"]) is not int or doc["schema_version"] != SCHEMA_VERSION:
        raise ReleaseError(source, "malformed", f"schema_version {_show(doc['schema_version'])}; "
                                                f"this runtime reads {SCHEMA_VERSION}")
    signed = _exactly(doc["signed"], _SIGNED, source, "signed")
    values = {name: _field(signed, name, kind, source, "signed.") for name, kind in _SIGNED.items()}
    values["key"] = _field(doc, "key", "str", source, "")
    try:
        for name in ("key", "model_id", "version"):
            check_name(values[name], name)
        datetime.fromisoformat(values["created_at"])
        signature = base64.b64decode(_field(doc, "signature", "str", source, ""), validate=True)
    except (UnsafeNameError, ValueError, binascii.Error) as err:
        raise ReleaseError(source, "malformed", str(err)) from None
    if not _SHA256.fullmatch(values["manifest_sha256"]):
        raise ReleaseError(source, "malformed", "signed.manifest_sha256 must be 64 lowercase hex digits")
    if not 1 <= values["sequence"] <= MAX_SEQUENCE:
        raise ReleaseError(source, "malformed", f"signed.sequence {_show(values['sequence'])} must be in 1..2^63-1")
    if len(signature) != 64:
        raise ReleaseError(source, "malformed", f"signature has {len(signature)} bytes; Ed25519 signatures have 64")
    return Release(**values), signature


class TrustStore:
    """The release keys a robot trusts: `<name>.release.pub` files in one directory, read at every check so a
    revocation applies at once. A key under `revoked/` is refused, also if a copy of it is put back."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def public_key(self, name: str, source: Path | str):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        path = self.directory / f"{name}{RELEASE_PUBLIC}"
        revoked_dir = self.directory / REVOKED
        try:
            if (revoked_dir / path.name).is_file() and not path.is_file():
                raise ReleaseError(source, "revoked-key", f"signed by '{name}', whose key was revoked "
                                                          f"({revoked_dir / path.name}); sign with a current key")
            if not path.is_file():
                raise ReleaseError(source, "unknown-key", f"signed by '{name}', which is not in the trust store "
                                                          f"{self.directory}; add its {RELEASE_PUBLIC} file there "
                                                          "only if you trust it")
            key = load_release_public_key(path)
            raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
            revoked = sorted(revoked_dir.glob(f"*{RELEASE_PUBLIC}")) if revoked_dir.is_dir() else []
            for other in revoked:
                if load_release_public_key(other).public_bytes(Encoding.Raw, PublicFormat.Raw) == raw:
                    raise ReleaseError(source, "revoked-key", f"signed by '{name}', whose key was revoked "
                                                              f"({other}); remove {path} from the trust store")
        except (FleetKeyError, OSError) as err:
            raise ReleaseError(source, "trust-store", f"cannot read the trust store: {err}") from None
        return key


def verify_signed(directory: str | os.PathLike, trust: TrustStore) -> Release:
    """The release in `directory`/release.json if a trusted key signed it (bundle release or rollback)."""
    from cryptography.exceptions import InvalidSignature

    path = Path(directory) / RELEASE_FILE
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RELEASE_BYTES + 1)
    except FileNotFoundError:
        raise ReleaseError(path, "unsigned", "missing: sign the bundle with `robot-runtime-fleet release sign`") \
            from None
    except OSError as err:
        raise ReleaseError(path, "unsigned", f"unreadable ({err})") from None
    release, signature = parse_release(data, path)
    key = trust.public_key(release.key, path)
    try:
        key.verify(signature, _message(release))
    except InvalidSignature:
        raise ReleaseError(path, "bad-signature", f"the signature does not match key '{release.key}': "
                                                  "release.json was changed after signing or signed by another key") \
            from None
    return release


def verify_release(directory: str | os.PathLike, trust: TrustStore,
                   limits: ManifestLimits = DEFAULT_LIMITS) -> tuple[Release, Bundle]:
    """A signed bundle release, checked byte for byte: signature, manifest hash, every file's sha256 (load_bundle),
    no file the signature does not cover."""
    directory = Path(directory)
    release = verify_signed(directory, trust)
    if release.rollback:
        raise ReleaseError(directory / RELEASE_FILE, "invalid", f"a rollback instruction to {release.name}, "
                                                                "not a bundle release")
    manifest_path = directory / MANIFEST
    actual = sha256_file(manifest_path) if manifest_path.is_file() else "missing"
    if actual != release.manifest_sha256:
        raise ReleaseError(manifest_path, "tampered", f"sha256 {actual[:12]}..., the release signed "
                                                      f"{release.manifest_sha256[:12]}...: changed after signing")
    try:
        bundle = load_bundle(directory, limits)
    except BundleError as err:  # the manifest is as signed: a bad listed file was changed, a bad manifest signed
        raise ReleaseError(err.file, "invalid" if Path(err.file) == manifest_path else "tampered",
                           err.problem) from None
    covered = {*bundle.manifest.files, MANIFEST, RELEASE_FILE}
    for entry in sorted(directory.iterdir()):
        if entry.name not in covered or entry.is_symlink() or not entry.is_file():
            raise ReleaseError(entry, "tampered", "not a file of the signed manifest; a release holds only "
                                                  "manifest.json, release.json and the files the manifest lists")
    m = bundle.manifest
    if (m.model_id, m.version) != (release.model_id, release.version):
        raise ReleaseError(directory / RELEASE_FILE, "invalid", f"names {release.model_id}@{release.version}, "
                                                                f"the manifest is {bundle.label}")
    return release, bundle


def _key_name(secret_key: Path, key_name: str | None) -> str:
    if key_name:
        return key_name
    if not secret_key.name.endswith(RELEASE_SECRET):
        raise FleetKeyError(f"{secret_key}: not named <name>{RELEASE_SECRET}; say which key it is (key_name)")
    return secret_key.name[: -len(RELEASE_SECRET)]


def _write(directory: Path, release: Release, secret_key: Path) -> Release:
    key = load_release_secret_key(secret_key)
    doc = {"schema_version": SCHEMA_VERSION, "key": release.key, "signed": release.signed(),
           "signature": base64.b64encode(key.sign(_message(release))).decode()}
    data = json.dumps(doc, indent=1).encode()
    parse_release(data, directory / RELEASE_FILE)  # refuse to write what a robot would refuse to read
    write_bytes_atomic(directory / RELEASE_FILE, data)
    return release


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sign_bundle(bundle_dir: str | os.PathLike, secret_key: str | os.PathLike, sequence: int,
                key_name: str | None = None, created_at: str | None = None) -> Release:
    """Sign a (valid) bundle as release number `sequence`: writes `bundle_dir`/release.json."""
    bundle_dir, secret_key = Path(bundle_dir), Path(secret_key)
    m = load_bundle(bundle_dir).manifest
    release = Release(_key_name(secret_key, key_name), m.model_id, m.version, sha256_file(bundle_dir / MANIFEST),
                      sequence, created_at or _now())
    return _write(bundle_dir, release, secret_key)


def sign_rollback(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike, secret_key: str | os.PathLike,
                  sequence: int, key_name: str | None = None, created_at: str | None = None) -> Release:
    """A signed instruction, numbered `sequence`, to make the bundle in `bundle_dir` current again on robots
    that have it installed: writes `out_dir`/release.json."""
    bundle_dir, out_dir, secret_key = Path(bundle_dir), Path(out_dir), Path(secret_key)
    m = load_bundle(bundle_dir).manifest
    release = Release(_key_name(secret_key, key_name), m.model_id, m.version, sha256_file(bundle_dir / MANIFEST),
                      sequence, created_at or _now(), rollback=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write(out_dir, release, secret_key)
