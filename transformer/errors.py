"""Error types: per-item problems, and failures that decide a whole request's status.

Dependency-free, so the Commons client and the decode path can use them too; the HTTP
mapping lives in ``transformer.http_errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus


@dataclass(frozen=True)
class ItemError:
    """Why one instance could not be scored.

    ``status`` is the HTTP status the problem would earn on its own: 4xx for the client's
    mistakes, 502/503/504 when Commons failed us.
    """

    code: str
    message: str
    status: int = HTTPStatus.BAD_REQUEST

    @property
    def upstream(self) -> bool:
        return self.status >= 500

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


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
