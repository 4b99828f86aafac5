"""Files that must survive a crash, and names that may become paths: one helper each, for both halves.

`replace_atomically` is the only way the project writes a file that a crash
must not leave half-written: write a temporary sibling, fsync it, rename it over
the target, fsync the directory (without the last step a power cut can forget
the rename). `check_name` is the only gate through which an identifier that came
from outside (a message, a bag, a manifest, a command line) becomes a path
component. `sha256_file` is the one digest of a file's content.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

# A path component of ours: starts with a letter or digit (so never '.', '..' or hidden), then letters,
# digits, '.', '_', '-' or '@'; no separators, no spaces, no control characters; short enough for any filesystem.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class UnsafeNameError(ValueError):
    """An identifier that must not become a path component."""


def check_name(value: object, what: str = "name") -> str:
    """`value` if it is a safe single path component, else UnsafeNameError saying what is allowed."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise UnsafeNameError(f"{what} {value!r} is not allowed: use 1-128 letters, digits, '.', '_', '-' or '@', "
                              "starting with a letter or digit")
    return value


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or directory's metadata and content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory under `root`, deepest first, `root` last."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Have `write(tmp)` create a temporary sibling, then make it `path` durably; returns `path`.

    Readers see the old file or the new one, never a partial one, before or after a crash.
    The temporary file is removed if `write` fails. `mode` is set before anything is written
    (0o644: other users, e.g. a training job, may read; 0o600 for secrets, never readable by others).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.fchmod(fd, mode)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_bytes(data), mode)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
