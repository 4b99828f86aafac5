"""The fleet's keys: CURVE certificates (who may talk to whom over ZeroMQ) and Ed25519 release keys (who may
ship a model to a robot), made, listed and revoked in plain directories that a team can inspect and back up.

A key directory holds `<name>.key` (public) and `<name>.key_secret` (secret, mode 0600) per CURVE
certificate, as pyzmq's `zmq.auth` writes them, and `<name>.release.pub` / `<name>.release.pem` per
release key. Revoking moves the public file into `revoked/`, so an allowlist built from the directory
no longer contains it and the history stays visible. Names pass `files.check_name`: they become paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.files import check_name, fsync_path, write_bytes_atomic

REVOKED = "revoked"
CURVE_PUBLIC, CURVE_SECRET = ".key", ".key_secret"
RELEASE_PUBLIC, RELEASE_SECRET = ".release.pub", ".release.pem"


class FleetKeyError(ValueError):
    """A key that is missing, malformed or already exists; the message names the file."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    kind: str  # "curve" or "release"
    public_path: Path
    has_secret: bool
    revoked: bool


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise FleetKeyError(f"{path}: already exists; revoke it or choose another name")


def create_curve_certificate(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """A CURVE key pair for a robot or a server: (public file, secret file)."""
    import zmq.auth

    directory = Path(directory)
    check_name(name, "certificate name")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}{CURVE_PUBLIC}", directory / f"{name}{CURVE_SECRET}"
    _refuse_existing(public, secret)
    zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    fsync_path(directory)
    return public, secret


def load_curve_keys(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) from a certificate file written by `create_curve_certificate`."""
    import zmq.auth

    try:
        return zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as err:
        raise FleetKeyError(f"{path}: not a CURVE certificate ({err})") from None


def create_release_key(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """An Ed25519 release key pair: (public PEM, secret PEM, mode 0600). The secret stays on the workstation."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    check_name(name, "release key name")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}{RELEASE_PUBLIC}", directory / f"{name}{RELEASE_SECRET}"
    _refuse_existing(public, secret)
    key = Ed25519PrivateKey.generate()
    secret_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    write_bytes_atomic(secret, secret_pem, mode=0o600)
    write_bytes_atomic(public, public_pem)
    return public, secret


def load_release_public_key(path: str | os.PathLike):
    """The Ed25519 public key in a `.release.pub` file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise FleetKeyError(f"{path}: not a release public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise FleetKeyError(f"{path}: is a {type(key).__name__}, release keys are Ed25519")
    return key


def load_release_secret_key(path: str | os.PathLike):
    """The Ed25519 private key in a `.release.pem` file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise FleetKeyError(f"{path}: not a release secret key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetKeyError(f"{path}: is a {type(key).__name__}, release keys are Ed25519")
    return key


def list_keys(directory: str | os.PathLike) -> list[KeyInfo]:
    """Every public key in `directory` and in its `revoked/`, by name."""
    directory = Path(directory)
    found = []
    for folder, revoked in ((directory, False), (directory / REVOKED, True)):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            for kind, public, secret in (("curve", CURVE_PUBLIC, CURVE_SECRET),
                                         ("release", RELEASE_PUBLIC, RELEASE_SECRET)):
                if path.name.endswith(public) and (kind == "release" or not path.name.endswith(RELEASE_PUBLIC)):
                    name = path.name[: -len(public)]
                    found.append(KeyInfo(name, kind, path, (directory / f"{name}{secret}").exists(), revoked))
    return found


def revoke(directory: str | os.PathLike, name: str) -> list[Path]:
    """Move every public key called `name` into `revoked/`; returns the new paths. The secret files stay."""
    directory = Path(directory)
    check_name(name, "key name")
    moved = []
    for suffix in (CURVE_PUBLIC, RELEASE_PUBLIC):
        path = directory / f"{name}{suffix}"
        if path.exists():
            (directory / REVOKED).mkdir(exist_ok=True)
            target = directory / REVOKED / path.name
            os.replace(path, target)
            moved.append(target)
    if not moved:
        raise FleetKeyError(f"{directory}: no public key named '{name}'")
    fsync_path(directory / REVOKED)
    fsync_path(directory)
    return moved
