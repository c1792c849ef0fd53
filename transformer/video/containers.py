"""Video bytes → the decoder for their container, behind one `Video` interface.

WebM/Matroska, Ogg and MP4/QuickTime are decoded by PyAV (FFmpeg's libraries, in this
process, from the bytes: no temp file, no subprocess); animated GIF, PNG and WebP by Pillow,
under the same policy as still images (alpha composited onto white). The container is
sniffed from the bytes and handed to FFmpeg by name, so FFmpeg never probes: its playlist
and concat demuxers, which open other files or URLs, are out of reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
from PIL import Image

from transformer.video.animations import Animation
from transformer.video.errors import VideoError
from transformer.video.limits import Deadline, VideoLimits
from transformer.video.pyav import AvVideo

# Magic bytes → FFmpeg demuxer.
_CONTAINERS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (0, b"OggS", "ogg"),
    (4, b"ftyp", "mov"),
    (4, b"moov", "mov"),
    (4, b"mdat", "mov"),
    (4, b"free", "mov"),
    (4, b"wide", "mov"),
)


class Frame(Protocol):
    @property
    def time_s(self) -> float: ...

    @property
    def duration_s(self) -> float: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def small_bgr(self, size: tuple[int, int]) -> np.ndarray: ...

    def image(self) -> Image.Image: ...


class Video(Protocol):
    @property
    def duration_s(self) -> float: ...

    @property
    def fps(self) -> float: ...

    def frames(self) -> Iterator[Frame]: ...

    def no_frames_error(self) -> VideoError: ...

    def check_complete(self, decoded_end_s: float) -> None: ...


@contextmanager
def open_video(data: bytes, limits: VideoLimits, deadline: Deadline) -> Iterator[Video]:
    if not data:
        raise VideoError("empty_video", "the video is empty (0 bytes)")
    demuxer = next(
        (
            name
            for offset, magic, name in _CONTAINERS
            if data[offset : offset + len(magic)] == magic
        ),
        None,
    )
    if demuxer is not None:
        with AvVideo.open(data, demuxer, limits, deadline) as video:
            yield video
        return
    animation = Animation.open(data, limits, deadline)
    if animation is None:
        raise VideoError(
            "unsupported_video",
            "the bytes are not a WebM/Matroska, Ogg or MP4/QuickTime video, "
            "nor an animated GIF, PNG or WebP",
        )
    with animation:
        yield animation
