"""The one error type with a machine-readable code.

Decoding (images here, videos in the transformer) and the transformer's per-item checks
all raise or return a `CodedError`; the transformer maps codes to HTTP statuses in one
table (``transformer.errors.STATUS_BY_CODE``). Dependency-free, so training can use it.
"""

from __future__ import annotations


class CodedError(ValueError):
    """``code`` names the problem for machines, ``message`` explains it to people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"
