"""Error types: per-item problems, and failures that decide a whole request's status.

`STATUS_BY_CODE` is the one place that maps an item error's code to the HTTP status it
earns on its own; every item problem is a `preprocessing.errors.CodedError` (an
`ItemError`, or a decoder's `DecodeError` / `VideoError` as raised), so none is converted
into another. The HTTP answers live in ``transformer.http_errors``.
"""

from __future__ import annotations

from http import HTTPStatus

from preprocessing.errors import CodedError

# 4xx: the client's input; 5xx: Commons (or the deadline) failed us.
STATUS_BY_CODE: dict[str, HTTPStatus] = {
    **dict.fromkeys(
        (
            "invalid_instance", "invalid_base64", "empty_image", "image_too_large",
            "unsupported_image", "corrupt_image", "invalid_title", "file_not_found",
            "not_an_image", "file_too_large", "unsupported_video", "corrupt_video",
            "truncated_video", "no_frames", "not_a_video", "video_too_large",
            "video_too_long", "video_budget_exceeded", "empty_video",
        ),
        HTTPStatus.BAD_REQUEST,
    ),
    "fetch_failed": HTTPStatus.BAD_GATEWAY,
    "url_not_allowed": HTTPStatus.BAD_GATEWAY,
    # Its status follows Commons' answer (429/503 → 503, timeout → 504, else 502).
    "commons_unavailable": HTTPStatus.BAD_GATEWAY,
    "deadline_exceeded": HTTPStatus.GATEWAY_TIMEOUT,
}


class ItemError(CodedError):
    """Why one instance could not be scored. ``status`` overrides the table for codes whose
    status depends on what an upstream answered."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message)
        self.override = status


def status_of(error: CodedError) -> int:
    """The HTTP status ``error`` would earn on its own."""
    override = getattr(error, "override", None)
    return override or STATUS_BY_CODE[error.code]


def as_dict(error: CodedError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


class UpstreamError(Exception):
    """Commons or Triton failed: answered as 502, 503 or 504 with a message naming it.

    ``retry_after``: seconds after which a retry may succeed, sent as ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        predictions: list | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.predictions = predictions
        self.retry_after = retry_after


class RequestRejected(Exception):
    """Every instance failed for a client reason: 400 listing each item's problem."""

    def __init__(self, message: str, predictions: list) -> None:
        super().__init__(message)
        self.message = message
        self.predictions = predictions


class BadRequest(Exception):
    """The request as a whole is malformed: 400 naming the problem.

    Not KServe's ``InvalidInput``, whose handler logs a traceback for every client mistake.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
