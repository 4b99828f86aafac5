"""Is there room to record? A store-size quota and a free-space floor, checked cheaply.

Recording must stop before the disk fills (a full disk corrupts more than the
episode in progress and can take the robot's logs with it), but the check runs
every second, so the store's size is walked once and then kept up to date from
what was committed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # renamed or removed while walking
                pass
    return total


class DiskGuard:
    def __init__(self, root: Path, quota_bytes: int = 0, min_free_bytes: int = 0):
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.committed_bytes = tree_bytes(self.root)

    def add_committed(self, episode_path: Path) -> None:
        self.committed_bytes += tree_bytes(episode_path)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def problem(self, in_progress_bytes: int = 0) -> str:
        """Why recording must stop now, or '' if there is room."""
        used = self.committed_bytes + in_progress_bytes
        if self.quota_bytes and used >= self.quota_bytes:
            return f"episode store {self.root} reached its quota ({used / 1e6:.1f} of {self.quota_bytes / 1e6:.1f} MB)"
        free = self.free_bytes()
        if free < self.min_free_bytes:
            return f"disk under {self.root} is low: {free / 1e6:.1f} MB free, floor {self.min_free_bytes / 1e6:.1f} MB"
        return ""
