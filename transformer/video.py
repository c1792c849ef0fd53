"""Video bytes → the frames worth scoring, decoded in memory, in time order.

WebM/Matroska, Ogg and MP4/QuickTime are decoded by PyAV (FFmpeg's libraries, in this
process, from the bytes: no temp file, no subprocess); animated GIF, PNG and WebP by Pillow,
under the same policy as still images (alpha composited onto white). The container is
sniffed from the bytes and handed to FFmpeg by name, so FFmpeg never probes: its playlist
and concat demuxers, which open other files or URLs, are out of reach.

**Sampling policy** (`sampling_interval`, a pure function of the duration ``d``):

* regular samples every ``interval`` seconds from 0: ``d / 10`` below 10 s (at least ten
  frames of a short clip or animation), 1 s up to 60 s, then growing linearly to 5 s at
  600 s, 5 s beyond;
* at most ``max_frames // 2`` regular samples: past that the interval stretches to
  ``d / (max_frames // 2)``;
* plus the first frame of every scene PySceneDetect's ``ContentDetector`` finds (a cut is
  at least 0.5 s after the previous one), while the frame budget ``max_frames`` lasts, so a
  short inserted scene between regular samples is still scored.

``ContentDetector`` sees every decoded frame, downscaled to 160 px wide: a hard cut
changes the mean hue, saturation and luma of the whole frame, which 160 px still measures,
and detection with its downscale costs about 0.25 s per 1800 frames, an eighth of decoding
them (docs/PERFORMANCE.md); at the 256 px PySceneDetect's auto-downscale aims at, detection
alone costs three times as much. Sampled frames are turned upright by the stream's display
rotation (phone videos) before ``prepare``.

**Limits** (`VideoLimits`): duration and pixels per frame are checked from the header
before decoding and again on every decoded frame (headers can lie); a video of more than
``MAX_FPS`` frames per second of allowed duration is refused; and the whole scan gets
``budget_s`` seconds of wall time, checked on every frame and packet, in the frame walk of
an animation and in the demux-only pass. Problems are `VideoError`s whose ``code`` names
them: ``unsupported_video``, ``corrupt_video``, ``truncated_video``, ``no_frames``,
``not_a_video``, ``video_too_large``, ``video_too_long``, ``video_budget_exceeded``,
``empty_video``. Any other exception is a bug of ours, not a property of the bytes.

**Animations** are checked before Pillow allocates a frame: a GIF's block structure is
walked from the bytes first (`_gif_layout`), because Pillow grows the canvas to a later
frame's extent when it reaches that frame, so every frame's extent and the frame count are
known up front. APNG and WebP frames cannot exceed the canvas (Pillow and libwebp refuse
them: ``corrupt_video``), so the canvas check covers them; their frame count comes from
the header (APNG's ``acTL``, WebP's animation chunks) and is bounded before the walk, and
the size is checked again after every seek, before that frame's pixels are read.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import av
import av.container
import numpy as np
from av.stream import Disposition
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector

from transformer.config import Settings
from transformer.decode import ALLOWED_FORMATS, BACKGROUND

T = TypeVar("T")

SHORT_CLIP_S = 10.0
MIN_SAMPLES = 10
STEADY_UNTIL_S = 60.0
LONG_VIDEO_S = 600.0
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 5.0

SCENE_WIDTH = 160
# ContentDetector's default threshold, tuned by PySceneDetect on real footage.
CUT_THRESHOLD = 27.0
MIN_SCENE_S = 0.5

# A video with more frames than this many per second of allowed duration is refused (GIF
# frame delays and variable frame rates make a frame count unbounded otherwise).
MAX_FPS = 120
DEFAULT_BUDGET_S = 20.0
# Browsers show GIF frames with a delay of 10 ms or less for 100 ms; so do we.
MIN_FRAME_MS = 10
DEFAULT_FRAME_MS = 100
# A decode that ends this much before the declared duration means the file was cut short.
TRUNCATION_SLACK_S = 1.0
TRUNCATION_SLACK_SHARE = 0.05

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
_ANIMATIONS: tuple[str, ...] = ("GIF", "PNG", "WEBP")
# What PyAV raises on bytes it cannot make sense of: FFmpeg's errors, header text that is
# not UTF-8, values out of range.
_UNREADABLE = (av.FFmpegError, UnicodeError, ValueError, OverflowError)
# What Pillow's plugins raise on bytes they cannot make sense of; struct.error and
# IndexError come from blocks shorter than their fields. MemoryError is left out: our
# limits stop what the bytes could make us allocate, so running out of memory is the
# server's state, not the file's.
_PILLOW_UNREADABLE = (
    OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError,
)


class VideoError(ValueError):
    """The bytes are not a video we can score. ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VideoLimits:
    max_duration_s: float
    max_pixels: int
    max_frames: int
    # Wall time for the whole scan: decoding cost has many multipliers (codec, resolution,
    # frame count, bad packets) that the other limits bound only one at a time.
    budget_s: float = DEFAULT_BUDGET_S

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_duration_s=settings.max_video_duration_s,
            max_pixels=settings.max_video_pixels,
            max_frames=settings.max_video_frames,
            budget_s=settings.video_budget_s,
        )

    @property
    def max_decoded(self) -> int:
        """Frames a video may hold: ``MAX_FPS`` per second of the allowed duration."""
        return math.ceil(self.max_duration_s * MAX_FPS)


class _Deadline:
    """The scan's work budget; `check` raises once it is spent."""

    def __init__(self, budget_s: float) -> None:
        self._started = time.perf_counter()
        self._budget_s = budget_s

    def check(self) -> None:
        elapsed = time.perf_counter() - self._started
        if elapsed > self._budget_s:
            raise VideoError(
                "video_budget_exceeded",
                f"decoding stopped after {elapsed:.1f} s, over the per-video budget of "
                f"{self._budget_s:g} s; the file is too costly to decode",
            )


@dataclass(frozen=True)
class Sample(Generic[T]):
    """A frame chosen for scoring: its time, whether it opens a scene, ``prepare(frame)``."""

    time_s: float
    scene_cut: bool
    value: T


@dataclass
class Timings:
    """Where a scan's time went. ``scenes_s`` (downscale + detection) and ``prepare_s``
    (RGB conversion + ``prepare`` of the sampled frames) are CPU seconds of the scanning
    thread, which other busy threads do not inflate; ``decode_s`` is the rest of the scan's
    wall time: demuxing, decoding, waiting for FFmpeg's decoder threads."""

    decode_s: float = 0.0
    scenes_s: float = 0.0
    prepare_s: float = 0.0


@dataclass(frozen=True)
class Scan:
    """What a finished scan learnt about the video."""

    duration_s: float
    interval_s: float
    frames_decoded: int
    scene_cuts: int  # found; frames were added for them while the budget lasted
    stopped: bool
    timings: Timings = field(compare=False)


def sampling_interval(duration_s: float, max_frames: int) -> float:
    """Seconds between regular samples for a video of ``duration_s`` (the module's policy)."""
    if duration_s <= SHORT_CLIP_S:
        interval = duration_s / MIN_SAMPLES
    else:
        growth = (duration_s - STEADY_UNTIL_S) / (LONG_VIDEO_S - STEADY_UNTIL_S)
        interval = MIN_INTERVAL_S + (MAX_INTERVAL_S - MIN_INTERVAL_S) * min(max(growth, 0.0), 1.0)
    return max(interval, duration_s / max(1, max_frames // 2), 1e-3)


def scan_video(
    data: bytes,
    limits: VideoLimits,
    prepare: Callable[[Image.Image], T],
    emit: Callable[[Sample[T]], None],
    *,
    stop: threading.Event | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> Scan:
    """Decode ``data``, hand every sampled frame to ``emit`` in time order as it is found.

    Blocking and CPU-bound: run it in a worker thread. ``stop`` ends it early (the result
    says ``stopped``); ``progress`` is called with the decoded time and the duration, in
    seconds. Raises `VideoError`.
    """
    started = time.perf_counter()
    deadline = _Deadline(limits.budget_s)
    timings = Timings()
    with _open(data, limits, deadline) as video:
        duration = video.duration_s
        interval = sampling_interval(duration, limits.max_frames)
        regular_budget = max(1, limits.max_frames // 2)
        cut_budget = limits.max_frames - min(regular_budget, math.ceil(duration / interval) or 1)
        cuts = _SceneCuts(video.fps)
        next_regular, regular_taken, cuts_taken, cuts_found = 0.0, 0, 0, 0
        decoded, end, stopped = 0, 0.0, False
        # Fixed by the first frame: the detector compares frames of one shape, and a stream
        # may change resolution midway.
        scene_size: tuple[int, int] | None = None
        for frame in video.frames():
            if stop is not None and stop.is_set():
                stopped = True
                break
            decoded += 1
            _check_frame(frame, limits, decoded)
            deadline.check()
            scene_size = scene_size or _scene_size(frame.width, frame.height)
            t0 = time.thread_time()
            cut = cuts.is_cut(frame.time_s, frame.small_bgr(scene_size))
            t1 = time.thread_time()
            timings.scenes_s += t1 - t0
            cuts_found += cut
            regular = regular_taken < regular_budget and frame.time_s + 1e-6 >= next_regular
            extra = cut and not regular and cuts_taken < cut_budget
            if regular:
                regular_taken += 1
                next_regular = (math.floor(frame.time_s / interval + 1e-6) + 1) * interval
            cuts_taken += extra
            if regular or extra:
                emit(Sample(frame.time_s, cut, prepare(frame.image())))
                timings.prepare_s += time.thread_time() - t1
            end = frame.time_s + frame.duration_s
            if progress is not None:
                progress(frame.time_s, duration)
        if decoded == 0 and not stopped:
            raise video.no_frames_error()
        if not stopped:
            video.check_complete(end)
            duration = duration or end
    timings.decode_s = time.perf_counter() - started - timings.scenes_s - timings.prepare_s
    return Scan(duration, interval, decoded, cuts_found, stopped, timings)


class _Frame(Protocol):
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


class _Video(Protocol):
    @property
    def duration_s(self) -> float: ...

    @property
    def fps(self) -> float: ...

    def frames(self) -> Iterator[_Frame]: ...

    def no_frames_error(self) -> VideoError: ...

    def check_complete(self, decoded_end_s: float) -> None: ...


def _check_frame(frame: _Frame, limits: VideoLimits, decoded: int) -> None:
    if frame.width * frame.height > limits.max_pixels:
        raise VideoError("video_too_large", _too_many_pixels(frame.width, frame.height, limits))
    if frame.time_s > limits.max_duration_s:
        raise VideoError("video_too_long", _too_long(frame.time_s, limits, "runs past"))
    if decoded > limits.max_decoded:
        raise VideoError("video_too_large", _too_many_frames(limits))


@contextmanager
def _open(data: bytes, limits: VideoLimits, deadline: _Deadline) -> Iterator[_Video]:
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
        with _AvVideo.open(data, demuxer, limits, deadline) as video:
            yield video
        return
    animation = _Animation.open(data, limits, deadline)
    if animation is None:
        raise VideoError(
            "unsupported_video",
            "the bytes are not a WebM/Matroska, Ogg or MP4/QuickTime video, "
            "nor an animated GIF, PNG or WebP",
        )
    with animation:
        yield animation


class _SceneCuts:
    """PySceneDetect's ContentDetector fed one small frame at a time, by time."""

    def __init__(self, fps: float) -> None:
        self._fps = fps
        self._detector = ContentDetector(
            threshold=CUT_THRESHOLD,
            min_scene_len=MIN_SCENE_S,
            # Report a cut on the frame that shows it, so that very frame can be sampled.
            filter_mode=FlashFilter.Mode.SUPPRESS,
        )

    def is_cut(self, time_s: float, bgr: np.ndarray) -> bool:
        return bool(self._detector.process_frame(FrameTimecode(time_s, fps=self._fps), bgr))


def _scene_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, SCENE_WIDTH / max(width, 1))
    return max(2, round(width * scale)), max(2, round(height * scale))


# --- PyAV: WebM/Matroska, Ogg, MP4/QuickTime ------------------------------------------


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


class _AvVideo:
    def __init__(
        self, container: av.container.InputContainer, limits: VideoLimits, deadline: _Deadline
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
                "video_too_large", _too_many_pixels(context.width, context.height, limits)
            )
        self.fps = float(stream.average_rate or stream.guessed_rate or 25)
        self._declared = _declared_duration(stream)
        self.duration_s = (
            self._declared
            if self._declared is not None
            else _demuxed_duration(stream, container, limits.max_duration_s, deadline)
        )
        if self.duration_s > limits.max_duration_s:
            raise VideoError("video_too_long", _too_long(self.duration_s, limits, "lasts"))
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
        cls, data: bytes, demuxer: str, limits: VideoLimits, deadline: _Deadline
    ) -> Iterator[_AvVideo]:
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
    deadline: _Deadline,
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


# --- Pillow: animated GIF, PNG, WebP ---------------------------------------------------


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


class _Animation:
    def __init__(self, img: Image.Image, durations_ms: list[int], limits: VideoLimits) -> None:
        self._img = img
        self._limits = limits
        self._durations_ms = durations_ms
        self.duration_s = sum(durations_ms) / 1000
        self.fps = len(durations_ms) / self.duration_s

    @classmethod
    def open(cls, data: bytes, limits: VideoLimits, deadline: _Deadline) -> _Animation | None:
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
            raise VideoError("video_too_large", _too_many_frames(limits))
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
                        "video_too_long", _too_long(total_ms / 1000, limits, "runs past")
                    )
        return cls(img, durations, limits)

    def __enter__(self) -> _Animation:
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
        raise VideoError("video_too_large", _too_many_pixels(img.width, img.height, limits))


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


def _gif_layout(data: bytes, limits: VideoLimits, deadline: _Deadline) -> None:
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
                raise VideoError("video_too_large", _too_many_frames(limits))
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


# --- messages ---------------------------------------------------------------------------


def _too_many_pixels(width: int, height: int, limits: VideoLimits) -> str:
    return (
        f"frames of {width}x{height} = {width * height} pixels exceed the limit of "
        f"{limits.max_pixels} pixels"
    )


def _too_long(seconds: float, limits: VideoLimits, verb: str) -> str:
    return f"the video {verb} {seconds:.1f} s, over the limit of {limits.max_duration_s:g} s"


def _too_many_frames(limits: VideoLimits) -> str:
    return (
        f"more than {limits.max_decoded} frames ({MAX_FPS} per second of the "
        f"{limits.max_duration_s:g} s limit)"
    )


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
