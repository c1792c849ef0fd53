"""What one video may cost: `VideoLimits`, the scan's wall-time `Deadline`, and the
messages for a video over them.

Duration and pixels per frame are checked from the header before decoding and again on
every decoded frame (headers can lie); a video of more than ``MAX_FPS`` frames per second
of allowed duration is refused; and the whole scan gets ``budget_s`` seconds of wall time,
checked on every frame and packet, in the frame walk of an animation and in the demux-only
pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from transformer.config import Settings
from transformer.video.errors import VideoError

# A video with more frames than this many per second of allowed duration is refused (GIF
# frame delays and variable frame rates make a frame count unbounded otherwise).
MAX_FPS = 120
DEFAULT_BUDGET_S = 20.0


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


class Deadline:
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


def too_many_pixels(width: int, height: int, limits: VideoLimits) -> str:
    return (
        f"frames of {width}x{height} = {width * height} pixels exceed the limit of "
        f"{limits.max_pixels} pixels"
    )


def too_long(seconds: float, limits: VideoLimits, verb: str) -> str:
    return f"the video {verb} {seconds:.1f} s, over the limit of {limits.max_duration_s:g} s"


def too_many_frames(limits: VideoLimits) -> str:
    return (
        f"more than {limits.max_decoded} frames ({MAX_FPS} per second of the "
        f"{limits.max_duration_s:g} s limit)"
    )
