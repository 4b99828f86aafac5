"""Board views from pictures on disk, or picked from a live stream with coverage feedback.

From disk every readable picture is tried and the board's absence is reported by
file name; an unreadable picture is an error naming it. From a stream (a camera
topic, fed by robot_runtime.nodes.calibrate) a frame is kept only when the board
has moved since the last kept view, so holding still does not fill the set with
copies, and each kept view prints what the coverage still lacks.
"""
from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from robot_runtime.calibration.board import BoardDetector, Detection
from robot_runtime.calibration.intrinsics import Coverage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
MIN_MOVE = 0.05  # of the image diagonal: the mean corner shift that makes a frame a new view


class ViewsError(ValueError):
    """Pictures that cannot be read, or none at all, named."""


def image_files(source: str) -> list[Path]:
    """The pictures of `source`: a folder (its image files, sorted) or a glob pattern (e.g. 'shots/*.png')."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
    if not files:
        raise ViewsError(f"{source}: no pictures ({', '.join(IMAGE_SUFFIXES)}) in that folder or matching that pattern")
    return files


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB of a picture file; ViewsError naming it when it does not decode."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ViewsError(f"{path}: not a picture OpenCV can read (empty, truncated or another format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def detect_files(files: list[Path], detector: BoardDetector, say: Callable[[str], None] = print
                 ) -> dict[Path, Detection]:
    """Each picture in which the board shows, by file; the others are named through `say`."""
    found = {}
    for path in files:
        detection = detector.detect(read_image(path))
        if detection is None:
            say(f"{path.name}: board not found (too few corners in view); skipped")
        else:
            found[path] = detection
    return found


def _say(message: str) -> None:
    print(message, flush=True)  # live feedback reaches a piped or logged terminal as it happens


class ViewCollector:
    """Picks calibration views out of a stream of frames until there are enough and the coverage is complete."""

    def __init__(self, detector: BoardDetector, views: int, say: Callable[[str], None] = _say):
        self.detector, self.views_wanted, self.say = detector, views, say
        self.views: list[Detection] = []
        self.coverage: Coverage | None = None
        self.frames = 0

    @property
    def done(self) -> bool:
        return len(self.views) >= self.views_wanted and self.coverage is not None and not self.coverage.missing()

    def add(self, image: np.ndarray) -> bool:
        """Offer one frame; True when it was kept as a new view."""
        self.frames += 1
        detection = self.detector.detect(image)
        if detection is None or (self.views and not self._moved(detection, self.views[-1])):
            return False
        if self.coverage is None:
            self.coverage = Coverage(detection.image_size)
        elif detection.image_size != self.coverage.image_size:
            raise ViewsError(f"frame size changed from {self.coverage.image_size} to {detection.image_size} "
                             "during collection: one camera, one resolution")
        self.views.append(detection)
        self.coverage.add(detection)
        self.say(f"view {len(self.views)}/{self.views_wanted} ({len(detection)} corners): {self.coverage.report()}")
        return True

    @staticmethod
    def _moved(new: Detection, last: Detection) -> bool:
        shared, a, b = np.intersect1d(new.ids, last.ids, return_indices=True)
        if len(shared) < len(new.ids) // 2:
            return True
        shift = np.linalg.norm(new.image_points[a] - last.image_points[b], axis=1).mean()
        return shift > MIN_MOVE * float(np.hypot(*new.image_size))
