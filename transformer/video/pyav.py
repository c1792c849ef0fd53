"""PyAV: WebM/Matroska, Ogg and MP4/QuickTime decoded by FFmpeg's libraries, in this
process, from the bytes, with the demuxer named by the caller.

Frames are timed from the stream's start and turned upright by its display rotation (phone
videos). The duration is the video stream's own, from the header, else from a demux-only
pass. Single bad packets are skipped, as players do; a decode that ends short of the
declared duration is ``truncated_video``.
"""

from __future__ import annotations

import errno
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import av.container
import numpy as np
from av.stream import Disposition
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from transformer.video.errors import VideoError
from transformer.video.limits import Deadline, VideoLimits, too_long, too_many_pixels

# A decode that ends this much before the declared duration means the file was cut short.
TRUNCATION_SLACK_S = 1.0
TRUNCATION_SLACK_SHARE = 0.05
# What PyAV raises on bytes it cannot make sense of: FFmpeg's errors, header text that is
# not UTF-8, values out of range.
_UNREADABLE = (av.FFmpegError, UnicodeError, ValueError, OverflowError)


@dataclass
class _AvFrame:
    frame: av.VideoFrame
    time_s: float
    duration_s: float
    reformatter: VideoReformatter

    @property
    def width(self) -> int:
        return self.frame.width

    @property
    def height(self) -> int:
        return self.frame.height

    def small_bgr(self, size: tuple[int, int]) -> np.ndarray:
        width, height = size
        small = self.reformatter.reformat(
            self.frame, width, height, "bgr24", interpolation=Interpolation.FAST_BILINEAR
        )
        return small.to_ndarray()

    def image(self) -> Image.Image:
        img = self.reformatter.reformat(self.frame, format="rgb24").to_image()
        # Phone videos store frames sideways with a display rotation (counterclockwise).
        rotation = self.frame.rotation
        return img.rotate(rotation, expand=True) if rotation % 360 else img


class AvVideo:
    def __init__(
        self, container: av.container.InputContainer, limits: VideoLimits, deadline: Deadline
    ) -> None:
        self._container = container
        self._deadline = deadline
        stream = next(
            (s for s in container.streams.video if not s.disposition & Disposition.attached_pic),
            None,
        )
        if stream is None:
            raise VideoError("not_a_video", "the file has no video stream (audio only?)")
        self._stream = stream
        context = stream.codec_context
        if context is None:
            raise _no_decoder()
        if context.width * context.height > limits.max_pixels:
            raise VideoError(
                "video_too_large", too_many_pixels(context.width, context.height, limits)
            )
        # A stream may grow at any keyframe past the size its header gave: the decoder itself
        # refuses such a frame before allocating it, as the header check cannot (`_decoded`).
        context.options = {**context.options, "max_pixels": str(limits.max_pixels)}
        self._max_pixels = limits.max_pixels
        self._header_size = (context.width, context.height)
        self.fps = float(stream.average_rate or stream.guessed_rate or 25)
        self._declared = _declared_duration(stream)
        self.duration_s = (
            self._declared
            if self._declared is not None
            else _demuxed_duration(stream, container, limits.max_duration_s, deadline)
        )
        if self.duration_s > limits.max_duration_s:
            raise VideoError("video_too_long", too_long(self.duration_s, limits, "lasts"))
        self._origin = (
            float(stream.start_time * stream.time_base)
            if stream.start_time is not None and stream.time_base is not None
            else None
        )
        self._bad_packets = 0
        self._first_error: str | None = None
        stream.thread_type = "AUTO"

    @classmethod
    @contextmanager
    def open(
        cls, data: bytes, demuxer: str, limits: VideoLimits, deadline: Deadline
    ) -> Iterator[AvVideo]:
        with _unreadable(f"the {_NAMES[demuxer]} container cannot be read"):
            container = av.open(
                io.BytesIO(data), mode="r", format=demuxer, metadata_errors="replace"
            )
        try:
            with _unreadable(f"the {_NAMES[demuxer]} header cannot be read"):
                video = cls(container, limits, deadline)
            yield video
        finally:
            container.close()

    def frames(self) -> Iterator[_AvFrame]:
        with _unreadable("the video cannot be decoded"):
            yield from self._timed()

    def _timed(self) -> Iterator[_AvFrame]:
        reformatter = VideoReformatter()
        frame_s = 1.0 / self.fps
        previous = -frame_s
        for frame in self._decoded():
            if frame.time is not None:
                if self._origin is None:
                    self._origin = frame.time
                t = max(0.0, frame.time - self._origin)
            else:
                t = previous + frame_s
            duration = (
                float(frame.duration * frame.time_base)
                if frame.duration and frame.time_base
                else frame_s
            )
            previous = t
            yield _AvFrame(frame, t, duration, reformatter)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        packets = self._container.demux(self._stream)
        while True:
            self._deadline.check()  # bad packets yield no frame for the scan to check on
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                # The demuxer gave up (a cut-off file): what decoded counts, and the
                # completeness check decides.
                self._note(exc)
                return
            try:
                yield from packet.decode()
            except av.DecoderNotFoundError:
                raise _no_decoder() from None
            except av.FFmpegError as exc:
                context = self._stream.codec_context
                header_w, header_h = self._header_size
                # FFmpeg zeroes a frame size it refuses (past max_pixels, or absurd). Skipping
                # such frames would score the video on the ones that pass.
                refused = header_w * header_h > 0 and context.width * context.height == 0
                if exc.errno == errno.EINVAL and refused:
                    raise VideoError(
                        "video_too_large",
                        f"a frame of the video is larger than the limit of {self._max_pixels} "
                        f"pixels, or of no valid size (its header says {header_w}x{header_h})",
                    ) from None
                # One bad packet need not spoil the video; a player skips it too.
                self._bad_packets += 1
                self._note(exc)

    def _note(self, exc: av.FFmpegError) -> None:
        self._first_error = self._first_error or _reason(exc)

    def no_frames_error(self) -> VideoError:
        if self._first_error is not None:
            return VideoError(
                "corrupt_video",
                f"no frame of the video could be decoded ({self._bad_packets} bad packets; "
                f"first error: {self._first_error})",
            )
        if self._declared:
            return VideoError(
                "truncated_video",
                f"the video declares {self._declared:.1f} s but holds no frame: "
                "the file is truncated",
            )
        return VideoError("no_frames", "the video stream has no frames")

    def check_complete(self, decoded_end_s: float) -> None:
        if self._declared is None:
            return
        slack = max(TRUNCATION_SLACK_S, TRUNCATION_SLACK_SHARE * self._declared)
        if decoded_end_s + slack < self._declared:
            cause = f" ({self._first_error})" if self._first_error else ""
            raise VideoError(
                "truncated_video",
                f"the video stops at {decoded_end_s:.1f} s of its declared "
                f"{self._declared:.1f} s: the file is truncated or corrupt{cause}",
            )


_NAMES = {"matroska": "WebM/Matroska", "ogg": "Ogg", "mov": "MP4/QuickTime"}


def _declared_duration(stream: av.VideoStream) -> float | None:
    """The video stream's own duration from the header (Matroska's per-track ``DURATION``
    tag, MP4's track duration), else None. Never the container's: that is the longest
    stream's, and audio outlasting the video would pass for a truncated video. The tag
    comes first because FFmpeg fills a Matroska stream's duration in from the container's."""
    seconds = _tag_seconds(stream.metadata.get("DURATION", ""))
    if seconds is None and stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    return seconds if seconds is not None and 0 < seconds < math.inf else None


def _tag_seconds(value: str) -> float | None:
    """Matroska's ``HH:MM:SS.nnnnnnnnn`` in seconds; None if it is not that."""
    hours, _, rest = value.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _demuxed_duration(
    stream: av.VideoStream,
    container: av.container.InputContainer,
    max_s: float,
    deadline: Deadline,
) -> float:
    """The end of the video's last packet, for streams whose header has no duration
    (live-recorded WebM): a demux-only pass, no decoding, stopping once past ``max_s``,
    then back to the start."""
    start, end = None, 0.0
    try:
        for packet in container.demux(stream):
            deadline.check()
            if packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base)
            start = t if start is None else min(start, t)
            end = max(end, t + float((packet.duration or 0) * packet.time_base))
            if end - start > max_s:
                break
    except av.FFmpegError:
        pass  # the decode pass meets the same error and reports it
    if start is None:
        return 0.0  # nothing to decode, nor to seek back to (FFmpeg refuses)
    container.seek(0)
    return max(0.0, end - start)


def _no_decoder() -> VideoError:
    return VideoError("unsupported_video", "no decoder for this video codec")


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


@contextmanager
def _unreadable(what: str) -> Iterator[None]:
    """PyAV's errors on bytes it cannot read → ``corrupt_video``; VideoErrors pass."""
    try:
        yield
    except VideoError:
        raise
    except _UNREADABLE as exc:
        message = f"{what} (corrupt or truncated): {_reason(exc)}"
        raise VideoError("corrupt_video", message) from None
