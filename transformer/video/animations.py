"""Pillow: animated GIF, PNG and WebP, each frame's alpha composited onto white as a still
image's is.

Animations are checked before Pillow allocates a frame: a GIF's block structure is walked
from the bytes first (`_gif_layout`), because Pillow grows the canvas to a later frame's
extent when it reaches that frame, so every frame's extent and the frame count are known up
front. APNG and WebP frames cannot exceed the canvas (Pillow and libwebp refuse them:
``corrupt_video``), so the canvas check covers them; their frame count comes from the header
(APNG's ``acTL``, WebP's animation chunks) and is bounded before the walk, and the size is
checked again after every seek, before that frame's pixels are read.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocessing.decode import ALLOWED_FORMATS, BACKGROUND
from transformer.video.errors import VideoError
from transformer.video.limits import (
    Deadline,
    VideoLimits,
    too_long,
    too_many_frames,
    too_many_pixels,
)

# Browsers show GIF frames with a delay of 10 ms or less for 100 ms; so do we.
MIN_FRAME_MS = 10
DEFAULT_FRAME_MS = 100
_ANIMATIONS: tuple[str, ...] = ("GIF", "PNG", "WEBP")
# What Pillow's plugins raise on bytes they cannot make sense of; struct.error and
# IndexError come from blocks shorter than their fields. MemoryError is left out: our
# limits stop what the bytes could make us allocate, so running out of memory is the
# server's state, not the file's.
_PILLOW_UNREADABLE = (
    OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError,
)


@dataclass
class _StillFrame:
    rgb: Image.Image
    time_s: float
    duration_s: float

    @property
    def width(self) -> int:
        return self.rgb.width

    @property
    def height(self) -> int:
        return self.rgb.height

    def small_bgr(self, size: tuple[int, int]) -> np.ndarray:
        small = self.rgb.resize(size, Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(small)[:, :, ::-1])

    def image(self) -> Image.Image:
        return self.rgb


class Animation:
    def __init__(self, img: Image.Image, durations_ms: list[int], limits: VideoLimits) -> None:
        self._img = img
        self._limits = limits
        self._durations_ms = durations_ms
        self.duration_s = sum(durations_ms) / 1000
        self.fps = len(durations_ms) / self.duration_s

    @classmethod
    def open(cls, data: bytes, limits: VideoLimits, deadline: Deadline) -> Animation | None:
        """The animation in ``data``; None if it is no image Pillow knows."""
        if fmt := _cut_short(data):
            raise VideoError("truncated_video", f"the {fmt} file ends early: it is truncated")
        if data.startswith(b"GIF8"):
            _gif_layout(data, limits, deadline)
        try:
            # Still formats too, to name a still image as such.
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.UnidentifiedImageError:
            return None
        except Image.DecompressionBombError as exc:
            raise VideoError("video_too_large", str(exc)) from None
        except _PILLOW_UNREADABLE as exc:
            raise VideoError("corrupt_video", f"the image header cannot be read: {exc}") from None
        _check_canvas(img, limits)
        with _unreadable_frame(img, lambda: 0):
            if img.format not in _ANIMATIONS or not getattr(img, "is_animated", False):
                raise VideoError(
                    "not_a_video", f"a still {img.format} image; score it with nsfw-detection"
                )
            count = img.n_frames
        if count > limits.max_decoded:
            raise VideoError("video_too_large", too_many_frames(limits))
        durations: list[int] = []
        total_ms = 0
        with _unreadable_frame(img, lambda: len(durations)):
            for index in range(count):
                deadline.check()
                img.seek(index)
                _check_canvas(img, limits)
                if "duration" not in img.info:
                    img.load()  # WebP reads a frame's duration with its pixels
                delay = int(img.info.get("duration") or 0)
                durations.append(delay if delay > MIN_FRAME_MS else DEFAULT_FRAME_MS)
                total_ms += durations[-1]
                if total_ms > limits.max_duration_s * 1000:
                    raise VideoError(
                        "video_too_long", too_long(total_ms / 1000, limits, "runs past")
                    )
        return cls(img, durations, limits)

    def __enter__(self) -> Animation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._img.close()

    def frames(self) -> Iterator[_StillFrame]:
        t = 0.0
        for index, delay in enumerate(self._durations_ms):
            with _unreadable_frame(self._img, lambda: index):
                self._img.seek(index)
                _check_canvas(self._img, self._limits)
                rgba = self._img.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, BACKGROUND)
            rgb.paste(rgba, mask=rgba.getchannel("A"))
            yield _StillFrame(rgb, t, delay / 1000)
            t += delay / 1000

    def no_frames_error(self) -> VideoError:
        return VideoError("no_frames", "the animation has no frames")

    def check_complete(self, decoded_end_s: float) -> None:
        """Pillow raises on a cut-off animation while decoding it."""


def _check_canvas(img: Image.Image, limits: VideoLimits) -> None:
    if img.width * img.height > limits.max_pixels:
        raise VideoError("video_too_large", too_many_pixels(img.width, img.height, limits))


@contextmanager
def _unreadable_frame(img: Image.Image, index: Callable[[], int]) -> Iterator[None]:
    """Pillow's errors on a frame it cannot read → ``truncated_video`` or ``corrupt_video``."""
    try:
        yield
    except VideoError:
        raise
    except Image.DecompressionBombError as exc:
        raise VideoError("video_too_large", str(exc)) from None
    except _PILLOW_UNREADABLE as exc:
        raise VideoError(
            "truncated_video" if "truncated" in str(exc) else "corrupt_video",
            f"frame {index()} of the {img.format} animation cannot be read: {exc}",
        ) from None


def _gif_layout(data: bytes, limits: VideoLimits, deadline: Deadline) -> None:
    """Walk the GIF's blocks as Pillow's reader does (a byte it does not know is skipped)
    and refuse the file if a frame's extent would grow the canvas past ``max_pixels`` or
    it holds too many frames. Pillow reports malformed files itself."""
    if len(data) < 13:
        return
    width, height = struct.unpack_from("<HH", data, 6)
    if width * height > limits.max_pixels:
        return  # the screen alone: refused once opened, as any canvas is
    pos = 13 + _colour_table_bytes(data[10])
    frames = 0
    while pos < len(data):
        block, pos = data[pos], pos + 1
        if block == 0x3B:  # trailer
            return
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 1)
        elif block == 0x2C and pos + 9 <= len(data):  # image descriptor
            left, top, frame_w, frame_h, flags = struct.unpack_from("<HHHHB", data, pos)
            width, height = max(width, left + frame_w), max(height, top + frame_h)
            if width * height > limits.max_pixels:
                raise VideoError(
                    "video_too_large",
                    f"frame {frames} of the GIF ({frame_w}x{frame_h} at {left},{top}) grows "
                    f"the canvas to {width}x{height} = {width * height} pixels, over the "
                    f"limit of {limits.max_pixels} pixels",
                )
            frames += 1
            if frames > limits.max_decoded:
                raise VideoError("video_too_large", too_many_frames(limits))
            deadline.check()
            # local colour table, LZW code size, then the image data sub-blocks
            pos = _skip_sub_blocks(data, pos + 9 + _colour_table_bytes(flags) + 1)


def _colour_table_bytes(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """The position after the data sub-blocks at ``pos`` and their zero-length terminator."""
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _cut_short(data: bytes) -> str | None:
    """The format of an animation file that lacks its end (GIF trailer, PNG IEND, the
    length in the WebP header), else None. Pillow reads a GIF cut after its first frame as
    a still image, so truncation has to be seen from the bytes."""
    if data.startswith(b"GIF8") and not data.rstrip(b"\0").endswith(b";"):
        return "GIF"
    if data.startswith(b"\x89PNG") and b"IEND" not in data[-32:]:
        return "PNG"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        if int.from_bytes(data[4:8], "little") + 8 > len(data):
            return "WebP"
    return None
