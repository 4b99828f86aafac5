"""Camera codecs of episode image arrays: lossless, JPEG per frame, or H.264/AV1 video per chunk.

Each lossy codec is a Zarr v3 array-to-bytes codec, named with its settings in the array's
zarr.json, so an episode stays a plain Zarr group of whole-chunk files: the writer's
crash safety, the per-file sha256 and salvage work unchanged. A video chunk is one closed
group of pictures (its first frame a keyframe, nothing referring outside it), so a crash
loses at most the chunk being written and a reader decodes any chunk without the others.
A chunk is its frame count and then each encoded packet, length-prefixed.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

# name -> (lowest, highest, default) quality: JPEG quality (higher is better), x264 / SVT-AV1 CRF (lower is better)
QUALITY = {"lossless": None, "jpeg": (1, 100, 90), "h264": (0, 51, 26), "av1": (0, 63, 44)}
CODECS = tuple(QUALITY)
DEFAULT = "lossless"        # a camera whose episode names no codec (schema 1 and 2) was stored lossless
# What the recorder keeps cameras in unless told otherwise: the smallest setting whose round-0 BC success with
# pixels fell inside lossless's 95% interval (benchmarks/codec_bc.py; benchmarks/results/codec_bc).
RECORDING = "av1"
_HEADER = struct.Struct("<4sI")  # magic, frames
_LENGTH = struct.Struct("<I")
_VIDEO = {"h264": ("libx264", "h264", {"preset": "superfast"}),  # (encoder, decoder, options)
          "av1": ("libsvtav1", "libdav1d", {"preset": "10", "svtav1-params": "lp=1"})}


class CodecError(ValueError):
    """A codec name or quality this code does not offer; the message lists what it does."""


@dataclass(frozen=True)
class CameraCodec:
    """How one camera's frames are stored; `quality` None means the codec's default (see QUALITY)."""

    name: str = DEFAULT
    quality: int | None = None

    def __post_init__(self):
        if self.name not in QUALITY:
            raise CodecError(f"image codec {self.name!r} is not one of {list(CODECS)}")
        bounds = QUALITY[self.name]
        if bounds is None:
            if self.quality is not None:
                raise CodecError(f"image codec {self.name!r} takes no quality (got {self.quality!r})")
            return
        if self.quality is None:
            object.__setattr__(self, "quality", bounds[2])
        if not isinstance(self.quality, int) or isinstance(self.quality, bool) \
                or not bounds[0] <= self.quality <= bounds[1]:
            raise CodecError(f"image quality {self.quality!r} for {self.name!r} is not an integer in "
                             f"[{bounds[0]}, {bounds[1]}]")

    @property
    def lossless(self) -> bool:
        return self.name == "lossless"

    def to_json(self) -> dict:
        return {"codec": self.name, "quality": self.quality}

    @classmethod
    def from_json(cls, data) -> CameraCodec:
        if not isinstance(data, dict) or set(data) != {"codec", "quality"}:
            raise CodecError(f"{data!r} is not a camera codec ({{\"codec\": name, \"quality\": value}})")
        return cls(data["codec"], data["quality"])

    def zarr_codecs(self) -> dict:
        """`serializer` and `compressors` for zarr.create_array."""
        if self.lossless:  # images compress ~4.5x with zstd and no shuffle
            from zarr.codecs import BloscCodec

            return {"compressors": BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")}
        # Load the codec's libraries now (seconds on a busy robot), not in the middle of the first chunk.
        if self.name == "jpeg":
            import imagecodecs  # noqa: F401
            codec = JpegCodec(self.quality)
        else:
            import av  # noqa: F401
            import cv2  # noqa: F401
            codec = VideoCodec(self.name, self.quality)
        return {"serializer": codec, "compressors": None}


def parse_codec_choices(choices: list[str], cameras: tuple[str, ...] | None = None) -> dict[str | None, CameraCodec]:
    """`CODEC[:QUALITY]` (every camera) and `CAMERA=CODEC[:QUALITY]` (one camera) -> {camera or None: codec}."""
    parsed: dict[str | None, CameraCodec] = {}
    for choice in choices:
        camera, _, spec = choice.rpartition("=")
        name, _, quality = spec.partition(":")
        try:
            level = int(quality) if quality else None
        except ValueError:
            raise CodecError(f"{choice!r}: quality {quality!r} is not an integer") from None
        key = camera or None
        if key in parsed:
            raise CodecError(f"{choice!r}: {'camera ' + camera if camera else 'the default codec'} is given twice")
        if cameras is not None and key is not None and key not in cameras:
            raise CodecError(f"{choice!r}: no camera {camera!r} (cameras: {list(cameras)})")
        parsed[key] = CameraCodec(name, level)
    return parsed


class _FramesCodec(ArrayBytesCodec):
    """Chunks of uint8 [frames, height, width, 3] <-> a frame count and length-prefixed packets."""

    is_fixed_size = False
    magic: ClassVar[bytes] = b""
    codec_name: ClassVar[str] = ""

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise CodecError(f"{self.codec_name}: stores uint8 RGB frames [steps, height, width, 3], not "
                             f"{dtype} {shape}")

    def evolve_from_array_spec(self, array_spec):
        return self

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError  # variable size

    def to_dict(self) -> dict:
        return {"name": self.codec_name, "configuration": {"quality": self.quality}}

    @classmethod
    def from_dict(cls, data):
        _, config = parse_named_configuration(data, cls.codec_name)
        return cls(**config)

    async def _encode_single(self, chunk_array, chunk_spec):  # off the event loop: cameras encode in parallel
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array, chunk_spec):
        frames = np.ascontiguousarray(chunk_array.as_numpy_array())
        packets = self.encode_frames(frames)
        out = [_HEADER.pack(self.magic, len(frames))]
        for packet in packets:
            out += [_LENGTH.pack(len(packet)), packet]
        return chunk_spec.prototype.buffer.from_bytes(b"".join(out))

    def _decode_sync(self, chunk_bytes, chunk_spec):
        frames = decode_chunk(self, chunk_bytes.to_bytes(), tuple(chunk_spec.shape))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(frames)

    def encode_frames(self, frames: np.ndarray) -> list[bytes]:
        raise NotImplementedError

    def decode_packets(self, packets: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


def decode_chunk(codec: _FramesCodec, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The frames of one chunk, shape `shape`; ValueError naming what is wrong when the bytes are not such a chunk."""
    if len(data) < _HEADER.size:
        raise ValueError(f"{codec.codec_name} chunk of {len(data)} bytes is shorter than its header")
    magic, count = _HEADER.unpack_from(data)
    if magic != codec.magic or count != shape[0]:
        raise ValueError(f"not a {codec.codec_name} chunk of {shape[0]} frames (magic {magic!r}, {count} frames)")
    packets, at = [], _HEADER.size
    while at < len(data):
        if at + _LENGTH.size > len(data):
            raise ValueError(f"{codec.codec_name} chunk ends inside a packet header")
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + length > len(data):
            raise ValueError(f"{codec.codec_name} chunk ends inside a packet ({length} bytes announced)")
        packets.append(data[at:at + length])
        at += length
    try:
        frames = codec.decode_packets(packets, shape)
    except Exception as err:  # FFmpeg's and libjpeg's errors: the chunk does not decode
        raise ValueError(f"{codec.codec_name} chunk does not decode ({type(err).__name__}: {err})") from None
    if frames.shape != shape:
        raise ValueError(f"{codec.codec_name} chunk decodes to {frames.shape}, the array says {shape}")
    return frames


@dataclass(frozen=True)
class JpegCodec(_FramesCodec):
    """Every frame its own JPEG (libjpeg-turbo through imagecodecs): any frame decodes alone."""

    quality: int
    magic: ClassVar[bytes] = b"RRJ1"
    codec_name: ClassVar[str] = "robot_runtime.jpeg"

    def encode_frames(self, frames):
        import imagecodecs

        return [imagecodecs.jpeg8_encode(frame, level=self.quality) for frame in frames]

    def decode_packets(self, packets, shape):
        import imagecodecs

        if len(packets) != shape[0]:
            raise ValueError(f"{len(packets)} JPEG frames, expected {shape[0]}")
        return np.stack([imagecodecs.jpeg8_decode(p) for p in packets]) if packets else np.zeros(shape, np.uint8)


@dataclass(frozen=True)
class VideoCodec(_FramesCodec):
    """A chunk as one closed GOP of H.264 (libx264) or AV1 (SVT-AV1, decoded by dav1d), through PyAV/FFmpeg.

    Frames are padded by edge replication to the encoder's minimum and even sizes (4:2:0),
    and cropped back on decoding."""

    codec: str
    quality: int
    magic: ClassVar[bytes] = b"RRV1"
    codec_name: ClassVar[str] = "robot_runtime.video"

    def __post_init__(self):
        if self.codec not in _VIDEO:
            raise CodecError(f"video codec {self.codec!r} is not one of {list(_VIDEO)}")

    def to_dict(self) -> dict:
        return {"name": self.codec_name, "configuration": {"codec": self.codec, "quality": self.quality}}

    def _padded(self, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        least = 64 if self.codec == "av1" else 2  # SVT-AV1's smallest picture
        pad_h, pad_w = max(least, height + height % 2) - height, max(least, width + width % 2) - width
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return frames

    def encode_frames(self, frames):
        import av
        import cv2

        padded = self._padded(frames)
        encoder, _, options = _VIDEO[self.codec]
        context = av.CodecContext.create(encoder, "w")
        context.height, context.width = padded.shape[1:3]
        context.pix_fmt, context.time_base = "yuv420p", Fraction(1, 30)
        context.gop_size = max(len(frames), 1)  # one keyframe, at the start of the chunk
        context.thread_count = 2  # the writer's two cores; cameras encode in parallel as well
        context.options = {**options, "crf": str(self.quality)}
        packets = []
        for i, frame in enumerate(padded):
            picture = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            picture.pts = i
            packets += [bytes(p) for p in context.encode(picture)]
        return packets + [bytes(p) for p in context.encode(None)]

    def decode_packets(self, packets, shape):
        import av
        import cv2

        context = av.CodecContext.create(_VIDEO[self.codec][1], "r")
        context.thread_count = 1
        pictures = []
        for packet in [*map(av.Packet, packets), None]:
            pictures += context.decode(packet)
        height, width = shape[1:3]
        frames = [cv2.cvtColor(p.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)[:height, :width]
                  for p in pictures]
        return np.stack(frames) if frames else np.zeros((0, *shape[1:]), np.uint8)


register_codec(JpegCodec.codec_name, JpegCodec)
register_codec(VideoCodec.codec_name, VideoCodec)
