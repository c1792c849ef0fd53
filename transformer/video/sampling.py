"""Decoded frames → the frames worth scoring, in time order (`scan_video`).

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
alone costs three times as much.

Every decoded frame is checked against the limits again, whatever its header declared.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from PIL import Image
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector

from transformer.video.containers import Frame, open_video
from transformer.video.errors import VideoError
from transformer.video.limits import (
    Deadline,
    VideoLimits,
    too_long,
    too_many_frames,
    too_many_pixels,
)

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
    deadline = Deadline(limits.budget_s)
    timings = Timings()
    with open_video(data, limits, deadline) as video:
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


def _check_frame(frame: Frame, limits: VideoLimits, decoded: int) -> None:
    if frame.width * frame.height > limits.max_pixels:
        raise VideoError("video_too_large", too_many_pixels(frame.width, frame.height, limits))
    if frame.time_s > limits.max_duration_s:
        raise VideoError("video_too_long", too_long(frame.time_s, limits, "runs past"))
    if decoded > limits.max_decoded:
        raise VideoError("video_too_large", too_many_frames(limits))


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
