"""The ChArUco board: its parameters, its printable image, and finding its corners in a camera frame.

A ChArUco board is a chessboard whose white squares carry ArUco markers, so every
corner found has an id and a known place on the board even when the board is only
partly in view. The board frame is OpenCV's: origin at the top-left corner of the
printed squares, x along the rows of squares to the right, y down, z into the board.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_CORNERS = 6  # fewer corners than this give no usable pose (and no independent constraint on distortion)


class BoardError(ValueError):
    """Board parameters that do not describe a board, or an image that is not a picture."""


@dataclass(frozen=True)
class BoardSpec:
    """What is printed: squares across and down, their side and the markers' side in metres, the dictionary."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.03
    marker_m: float = 0.022
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self):
        problems = []
        if self.squares_x < 3 or self.squares_y < 3:
            problems.append(f"{self.squares_x}x{self.squares_y} squares: a ChArUco board needs at least 3x3")
        if not 0 < self.marker_m < self.square_m:
            problems.append(f"marker side {self.marker_m} m must be > 0 and below the square side {self.square_m} m")
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            problems.append(f"dictionary '{self.dictionary}' is not an OpenCV ArUco dictionary (e.g. DICT_4X4_50)")
        if problems:
            raise BoardError("; ".join(problems))
        markers = (self.squares_x * self.squares_y) // 2
        available = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
        if markers > available:
            raise BoardError(f"a {self.squares_x}x{self.squares_y} board needs {markers} markers, "
                             f"{self.dictionary} has {available}")

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary)

    def image(self, pixels_per_square: int, margin_px: int = 0) -> np.ndarray:
        """The board to print (or texture a simulated one with): uint8 grey, white margin around the squares."""
        size = (self.squares_x * pixels_per_square + 2 * margin_px, self.squares_y * pixels_per_square + 2 * margin_px)
        return self.board().generateImage(size, marginSize=margin_px)

    def corners_m(self) -> np.ndarray:
        """The inner chessboard corners in the board frame, float64 [N, 3], indexed by corner id."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64)


@dataclass
class Detection:
    """The board corners found in one frame: their ids, pixel positions [N, 2] and board-frame positions [N, 3]."""

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray
    image_size: tuple[int, int]  # (width, height) of the frame

    def __len__(self) -> int:
        return len(self.ids)


class BoardDetector:
    """Finds a board's corners (sub-pixel) in frames; one per board, reused across frames."""

    def __init__(self, spec: BoardSpec):
        self.spec = spec
        self._board = spec.board()
        self._corners = spec.corners_m()
        self._detector = cv2.aruco.CharucoDetector(self._board)

    def detect(self, image: np.ndarray, min_corners: int = MIN_CORNERS) -> Detection | None:
        """The board in `image` (uint8 grey [H, W] or RGB [H, W, 3]); None when fewer than `min_corners` show."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise BoardError(f"an image must be uint8 grey or RGB, got {image.dtype} {list(image.shape)}")
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 and image.shape[2] == 3 else image
        corners, ids, _, _ = self._detector.detectBoard(np.ascontiguousarray(grey.reshape(grey.shape[:2])))
        if ids is None or len(ids) < min_corners:
            return None
        ids = ids.ravel().astype(np.int64)
        return Detection(ids, self._refine(grey, corners.reshape(-1, 2)), self._corners[ids],
                         (grey.shape[1], grey.shape[0]))

    def _refine(self, grey: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """Sub-pixel corners with a window that stays inside the white gap between a corner and the markers
        beside it: a marker edge inside the window pulls the corner off (measured on rendered boards: a window
        of 0.8 gap leaves corners off by up to 0.5 px, 0.6 gap by up to 0.15 px)."""
        gaps = np.linalg.norm(corners[:, None] - corners[None], axis=2)
        np.fill_diagonal(gaps, np.inf)
        square_px = float(np.median(gaps.min(axis=1)))
        gap_px = 0.5 * (1 - self.spec.marker_m / self.spec.square_m) * square_px
        half = int(np.clip(round(0.6 * gap_px), 2, 7))
        refined = cv2.cornerSubPix(grey, corners.astype(np.float32).reshape(-1, 1, 2), (half, half), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-4))
        return refined.reshape(-1, 2).astype(np.float64)
