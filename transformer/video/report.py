"""Frame scores → the video's answer: max, share flagged, first flagged time, segments.

Pure functions of the scored frames (in time order), so the service and the CLI report
alike. Segments cover ``[0, duration]`` without gaps: a new one opens at every scene cut and
wherever the frame scores cross the threshold, so a flagged stretch is its own segment.
Each segment's ``score`` is the highest frame score inside it. With early exit the last
segment runs from the flagged frame to the end, unexamined beyond that frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

# Times in the response are rounded to the millisecond.
_DIGITS = 3


@dataclass(frozen=True)
class FrameScore:
    time_s: float
    scene_cut: bool
    score: float


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    score: float


@dataclass(frozen=True)
class VideoReport:
    prediction: float
    nsfw_fraction: float
    frames_scored: int
    duration_s: float
    early_exit: bool
    first_flagged_s: float | None
    segments: tuple[Segment, ...]

    def as_dict(self) -> dict[str, Any]:
        """The response fields after ``filename`` and ``target``."""
        return {
            "prediction": self.prediction,
            "out_of_domain": 1.0 - self.prediction,
            "nsfw_fraction": self.nsfw_fraction,
            "frames_scored": self.frames_scored,
            "duration_s": round(self.duration_s, _DIGITS),
            "early_exit": self.early_exit,
            "first_flagged_s": (
                None if self.first_flagged_s is None else round(self.first_flagged_s, _DIGITS)
            ),
            "segments": [
                {
                    "start_s": round(s.start_s, _DIGITS),
                    "end_s": round(s.end_s, _DIGITS),
                    "score": s.score,
                }
                for s in self.segments
            ],
        }


def summarise(
    frames: Sequence[FrameScore], duration_s: float, threshold: float, *, early_exit: bool
) -> VideoReport:
    """The report for ``frames`` (at least one, in time order). ``early_exit`` says scoring
    stopped at the last frame because it reached ``threshold``."""
    if not frames:
        raise ValueError("a video report needs at least one scored frame")
    flagged = [f for f in frames if f.score >= threshold]
    return VideoReport(
        prediction=max(f.score for f in frames),
        nsfw_fraction=len(flagged) / len(frames),
        frames_scored=len(frames),
        duration_s=duration_s,
        early_exit=early_exit,
        first_flagged_s=flagged[0].time_s if flagged else None,
        segments=tuple(segments(frames, duration_s, threshold)),
    )


def segments(frames: Sequence[FrameScore], duration_s: float, threshold: float) -> list[Segment]:
    """Split ``[0, duration_s]`` at scene cuts and threshold crossings (see the module)."""
    starts: list[float] = [0.0]
    scores: list[float] = [frames[0].score]
    for previous, frame in pairwise(frames):
        crossed = (frame.score >= threshold) != (previous.score >= threshold)
        at = min(frame.time_s, duration_s)
        # A boundary needs a frame strictly later than the segment's start; anything else
        # (duplicate timestamps, frames past a short declared duration) joins the segment.
        if (frame.scene_cut or crossed) and at > starts[-1]:
            starts.append(at)
            scores.append(frame.score)
        else:
            scores[-1] = max(scores[-1], frame.score)
    ends = [*starts[1:], max(duration_s, starts[-1])]
    return [
        Segment(start, end, score) for start, end, score in zip(starts, ends, scores, strict=True)
    ]
