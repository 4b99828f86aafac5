"""Where the package's data folders (config/, calibration/, launch/, models/) are found.

In the source tree they sit beside `robot_runtime/`; in a pip or colcon install
they are under `share/robot_runtime/`, which a colcon workspace registers in the
ament index (`AMENT_PREFIX_PATH`) and a venv puts under `sys.prefix`.
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "robot_runtime"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_candidates(folder: str) -> list[Path]:
    """Every place `folder` may be, in the order they are searched: the source tree (a checkout, recognised
    by its package.xml), the ament index (a sourced colcon workspace), then the venv's share/."""
    candidates = [SOURCE_ROOT / folder] if (SOURCE_ROOT / "package.xml").is_file() else []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / folder)
    except Exception:  # not in a sourced ROS 2 workspace (ament_index_python missing or the package not indexed)
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / folder)
    return candidates


def share_dir(folder: str) -> Path:
    """The first existing `folder` among the candidates; FileNotFoundError lists where it looked."""
    candidates = share_candidates(folder)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no {folder}/ directory among {[str(c) for c in candidates]}")


def find_data_file(folder: str, name: str | Path) -> Path:
    """`name` as given when it exists or is absolute, else the first `folder/name` that exists;
    FileNotFoundError naming every place it looked when there is none."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    candidates = [base / path for base in share_candidates(folder)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name}: not found as given nor in {[str(c) for c in candidates]}")
