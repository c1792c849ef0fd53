"""Why a video cannot be scored.

Every problem the bytes can cause is a `VideoError` whose ``code`` names it:
``unsupported_video``, ``corrupt_video``, ``truncated_video``, ``no_frames``,
``not_a_video``, ``video_too_large``, ``video_too_long``, ``video_budget_exceeded``,
``empty_video``. Any other exception is a bug of ours, not a property of the bytes.
"""

from __future__ import annotations

from preprocessing.errors import CodedError


class VideoError(CodedError):
    """The bytes are not a video we can score. ``code`` is the machine-readable reason."""
