"""The robot's model store: a model is installed only if a trusted key signed it, its bytes are intact, it is
newer than anything accepted before (or a signed rollback) and it fits this robot; a reader never sees half of one.

Under `root`:

    versions/<model_id>-<version>/  whole, verified bundles with their release.json; never changed
    staging/                         copies being verified and versions being deleted; emptied by `recover`
    current.json                     the pointer: {"schema_version": 1, "sequence": N, "recent": [current, ...]}
    .lock                            one installer at a time (flock, released when its process dies)

An install copies the release into staging, fsyncs it, verifies the copy (what is checked is what is installed),
renames it into versions/ and then replaces current.json atomically: that replacement is the commit. A process
killed before it leaves the old pointer, and what it left behind (not named in `recent`) is removed by `recover`,
which every install also runs first. `sequence` is the highest release sequence accepted, rollbacks included, so
neither an old release nor an old rollback instruction can be replayed. `recent` lists the versions most recently
made current, newest first; the first `keep` stay on disk, so the current and the previous one always do.

How policy_node gets a version: a reader calls `current_version(root)`, which reads the pointer once and returns an
immutable versioned directory (never a path that can change under it while it loads). The fleet agent sets
policy_node's `bundle_path` parameter to that directory at an episode boundary (e.g. `ros2 param set /policy_node
bundle_path <root>/versions/reference-v2`) and passes it at start-up; the node validates it and hot-swaps at the
next chunk boundary, keeping the old model if it is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from robot_runtime.bundle import DEFAULT_LIMITS, Bundle, Manifest, ManifestLimits
from robot_runtime.episode import EpisodeLayout
from robot_runtime.files import fsync_path, fsync_tree, write_json_atomic
from robot_runtime.fleet.releases import Release, ReleaseError, TrustStore, verify_release, verify_signed

POINTER = "current.json"
SCHEMA_VERSION = 1
STORE_CAUSES = ("replay", "exists", "incompatible", "not-installed", "mismatch", "store", "io")


class StoreError(Exception):
    """The store's pointer cannot be read: the message names the file."""


@dataclass(frozen=True)
class RobotDescription:
    """What this robot offers a policy: its cameras (name -> (height, width)), the state names it publishes, the
    actions its driver accepts with their bounds, and the manifest limits it accepts."""

    cameras: dict[str, tuple[int, int]]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    limits: ManifestLimits = DEFAULT_LIMITS

    def __post_init__(self):
        if not len(self.action_low) == len(self.action_high) == len(self.action_names):
            raise ValueError("RobotDescription needs one action_low and one action_high per action name")

    @classmethod
    def from_layout(cls, layout: EpisodeLayout, action_low, action_high,
                    limits: ManifestLimits = DEFAULT_LIMITS) -> RobotDescription:
        """From the robot's episode layout (what the recorder writes) and its drivers' action bounds."""
        return cls(dict(layout.cameras), tuple(layout.state_names), tuple(layout.action_names),
                   tuple(action_low), tuple(action_high), limits)

    def misfits(self, m: Manifest) -> list[str]:
        """Why a bundle with manifest `m` cannot run here; empty when it fits."""
        problems = []
        for cam in m.cameras:
            size = self.cameras.get(cam.name)
            if size is None:
                problems.append(f"camera '{cam.name}' is not on this robot (it has {sorted(self.cameras)})")
            elif tuple(size) != (cam.height, cam.width):
                problems.append(f"camera '{cam.name}' is {cam.height}x{cam.width} in the bundle, "
                                f"{size[0]}x{size[1]} on this robot")
        unknown = [n for n in m.state_names if n not in self.state_names]
        if unknown:
            problems.append(f"state names {unknown} are not published by this robot")
        extra = [n for n in m.action_names if n not in self.action_names]
        missing = [n for n in self.action_names if n not in m.action_names]
        if extra or missing:
            problems.append(f"action names differ: the bundle adds {extra} and lacks {missing}")
        bounds = dict(zip(self.action_names, zip(self.action_low, self.action_high)))
        for name, low, high in zip(m.action_names, m.action_low, m.action_high):
            if name in bounds and (low < bounds[name][0] or high > bounds[name][1]):
                problems.append(f"action '{name}' bounds [{low}, {high}] exceed this robot's "
                                f"[{bounds[name][0]}, {bounds[name][1]}]")
        return problems


@dataclass(frozen=True)
class InstallResult:
    """What became of one release, for /diagnostics and the report to the workstation. `cause` is "" when
    installed, else a ReleaseError cause (releases.CAUSES) or one of STORE_CAUSES."""

    installed: bool
    version: str  # the version directory name; "" when the release could not be read
    reason: str
    cause: str = ""
    sequence: int = 0
    rollback: bool = False


@dataclass(frozen=True)
class StoreState:
    sequence: int = 0
    recent: tuple[str, ...] = ()

    @property
    def current(self) -> str | None:
        return self.recent[0] if self.recent else None


def read_state(root: str | os.PathLike) -> StoreState:
    """The pointer; an empty state for a store that never installed anything."""
    path = Path(root) / POINTER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return StoreState()
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable ({err}); reinstall a release into a fresh store") from None
    ok = (type(data) is dict and data.get("schema_version") == SCHEMA_VERSION and type(data.get("sequence")) is int
          and type(data.get("recent")) is list and all(type(n) is str for n in data["recent"]))
    if not ok:
        raise StoreError(f"{path}: not a model store pointer (schema_version {SCHEMA_VERSION}); "
                         "reinstall a release into a fresh store")
    return StoreState(data["sequence"], tuple(data["recent"]))


def current_version(root: str | os.PathLike) -> Path | None:
    """The directory of the current version, resolved once: load from it, not from anything that can move."""
    name = read_state(root).current
    return Path(root) / "versions" / name if name else None


class ModelStore:
    def __init__(self, root: str | os.PathLike, trust: TrustStore | str | os.PathLike, robot: RobotDescription,
                 keep: int = 3):
        if keep < 2:
            raise ValueError(f"keep={keep}: the store keeps at least the current and the previous version (keep >= 2)")
        self.root = Path(root)
        self.trust = trust if isinstance(trust, TrustStore) else TrustStore(trust)
        self.robot = robot
        self.keep = keep
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(exist_ok=True)

    def current(self) -> Path | None:
        return current_version(self.root)

    def state(self) -> StoreState:
        return read_state(self.root)

    @contextmanager
    def _locked(self):
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def recover(self) -> list[str]:
        """Remove what a killed install or prune left behind; returns the removed paths (relative to root)."""
        with self._locked():
            return self._recover()

    def _recover(self) -> list[str]:
        removed = [f"staging/{name}" for name in self._clear_staging()]
        for path in self.root.glob(f".{POINTER}.*.partial"):  # a pointer write killed before its rename
            path.unlink()
            removed.append(path.name)
        kept = set(self.state().recent)
        for path in self.versions_dir.iterdir():
            if path.name not in kept:  # renamed in, but the pointer never named it: never installed
                self._discard(path)
                removed.append(f"versions/{path.name}")
        return removed

    def _clear_staging(self) -> list[str]:
        names = sorted(p.name for p in self.staging_dir.iterdir())
        for name in names:
            path = self.staging_dir / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return names

    def _discard(self, path: Path) -> None:
        """Delete a version without ever leaving a half-deleted one under versions/."""
        trash = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix="discard."))
        os.rename(path, trash / path.name)
        fsync_path(self.versions_dir)
        shutil.rmtree(trash)

    def install(self, release_dir: str | os.PathLike) -> InstallResult:
        """Install a signed bundle release, or apply a signed rollback instruction; never raises for a bad one."""
        release = None
        with self._locked():
            try:
                self._recover()
                release = verify_signed(release_dir, self.trust)  # strangers are refused before anything is copied
                state = self.state()
                if release.sequence <= state.sequence:
                    raise ReleaseError(release_dir, "replay", f"release sequence {release.sequence} is not above "
                                       f"{state.sequence}, the last accepted here (current {state.current}); an "
                                       "older version comes back only through a signed rollback instruction")
                if release.rollback:
                    self._roll_back(Path(release_dir), release, state)
                else:
                    self._install_bundle(Path(release_dir), release, state)
            except (ReleaseError, StoreError, OSError) as err:
                cause = err.cause if isinstance(err, ReleaseError) else "store" if isinstance(err, StoreError) else "io"
                name = release.name if release else ""
                return InstallResult(False, name, f"refused {name}: {err}" if name else f"refused: {err}", cause,
                                     release.sequence if release else 0, bool(release and release.rollback))
            finally:
                self._clear_staging()  # a refused copy goes at once
        what = f"rolled back to {release.name}" if release.rollback else f"installed {release.name}"
        return InstallResult(True, release.name, f"{what} (sequence {release.sequence}, key '{release.key}')", "",
                             release.sequence, release.rollback)

    def _check_fits(self, source: Path, bundle: Bundle) -> None:
        misfits = self.robot.misfits(bundle.manifest)
        if misfits:
            raise ReleaseError(source, "incompatible", f"{bundle.label} does not fit this robot: {'; '.join(misfits)}")

    def _install_bundle(self, source: Path, release: Release, state: StoreState) -> None:
        target = self.versions_dir / release.name
        if target.exists():
            raise ReleaseError(source, "exists", f"{release.name} is already installed; bundles are immutable: "
                                                 "release a new version")
        staging = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix=f"{release.name}."))
        os.chmod(staging, 0o755)
        for entry in sorted(source.iterdir()):
            if entry.is_symlink() or not entry.is_file():
                raise ReleaseError(entry, "tampered", "not a plain file; a release holds only the bundle's files")
            shutil.copyfile(entry, staging / entry.name)
        fsync_tree(staging)
        try:
            staged, bundle = verify_release(staging, self.trust, self.robot.limits)  # what is checked is installed
        except ReleaseError as err:  # name the delivered file, not the copy that is about to go
            raise ReleaseError(source / Path(err.source).name, err.cause, err.problem) from None
        if staged != release:
            raise ReleaseError(source, "tampered", "release.json changed while it was being copied")
        self._check_fits(source, bundle)
        os.rename(staging, target)
        fsync_path(self.versions_dir)
        self._make_current(state, release)

    def _roll_back(self, source: Path, release: Release, state: StoreState) -> None:
        target = self.versions_dir / release.name
        if release.name not in state.recent or not target.is_dir():
            raise ReleaseError(source, "not-installed", f"rollback to {release.name}, which is not installed here "
                                                        f"(installed: {list(state.recent)}); release it as a new "
                                                        "version instead")
        installed, bundle = verify_release(target, self.trust, self.robot.limits)  # still trusted and intact
        if installed.manifest_sha256 != release.manifest_sha256:
            raise ReleaseError(source, "mismatch", f"the rollback names manifest {release.manifest_sha256[:12]}..., "
                                                   f"the installed {release.name} has "
                                                   f"{installed.manifest_sha256[:12]}...")
        self._check_fits(source, bundle)
        self._make_current(state, release)

    def _make_current(self, state: StoreState, release: Release) -> None:
        """The commit: one atomic pointer replacement; then versions beyond `keep` go."""
        recent = [release.name, *(n for n in state.recent if n != release.name)][: self.keep]
        write_json_atomic(self.root / POINTER, {"schema_version": SCHEMA_VERSION, "sequence": release.sequence,
                                                "recent": recent})
        for path in self.versions_dir.iterdir():
            if path.name not in recent:
                self._discard(path)
