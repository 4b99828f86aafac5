"""The camera codecs that the round-trip, crash and integrity tests run with, and how close each reads back.

Lossless reads back bit for bit; a lossy codec exactly as it encoded the frames, and near them on
camera-like (smooth, slowly changing) frames, which random noise is not.
"""
import numpy as np

from robot_runtime.capture.codecs import CODECS, CameraCodec

CASES = [CameraCodec(name) for name in CODECS]
IDS = list(CODECS)
MIN_PSNR_DB = 20.0  # tiny test pictures (24x32) are far below the codecs' 16x16 blocks


def camera_frames(rng: np.random.Generator, steps: int, height: int, width: int) -> np.ndarray:
    """uint8 [steps, height, width, 3]: a smooth random picture (sinusoids per channel) drifting a little each
    step, the kind of signal camera codecs are made for."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    params = rng.uniform((0.2, 0.2, 0.2, 0, -0.3), (1.5, 1.5, 1.0, 2 * np.pi, 0.3), (3, 5))
    frames = [[120 + 60 * np.sin(2 * np.pi * (fx * x + fy * y) + phase + speed * t) + 40 * np.cos(2 * np.pi * gy * y)
               for fx, fy, gy, phase, speed in params] for t in range(steps)]
    return np.clip(np.stack(frames, 0).transpose(0, 2, 3, 1), 0, 255).astype(np.uint8)


def psnr_db(read: np.ndarray, sent: np.ndarray) -> float:
    mse = np.mean((read.astype(np.float64) - sent.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def as_stored(sent: np.ndarray, codec: CameraCodec, chunk_steps: int) -> np.ndarray:
    """What `codec` makes of frames written `chunk_steps` at a time (the codecs are deterministic)."""
    import zarr

    array = zarr.create_array(zarr.storage.MemoryStore(), shape=sent.shape, chunks=(chunk_steps, *sent.shape[1:]),
                              dtype="uint8", **codec.zarr_codecs())
    array[:] = sent
    return array[:]


def assert_frames_match(read: np.ndarray, sent: np.ndarray, codec: CameraCodec, chunk_steps: int) -> None:
    """Lossless: bit for bit. Lossy: exactly what the codec makes of the frames sent, and near them."""
    assert read.shape == sent.shape and read.dtype == np.uint8
    if codec.lossless:
        np.testing.assert_array_equal(read, sent)
    else:
        np.testing.assert_array_equal(read, as_stored(sent, codec, chunk_steps))
        assert psnr_db(read, sent) >= MIN_PSNR_DB, f"{codec}: PSNR {psnr_db(read, sent):.1f} dB"
