"""Per-request context: the request id every stage passes on (to Commons as a header, to
Triton as the inference request id), and one JSON log line per predict request.

The gate opens a `RequestRecord` for each request; code below it adds what it learns
(the model, item count, item error codes, time per stage) to the current record through a
context variable, so no signature carries it. Bytes, titles and bodies are never logged.
A request that asks for ``debug`` gets the same timings, so far, in its answer.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

REQUEST_ID_HEADER = "x-request-id"

log = logging.getLogger("transformer.requests")


@dataclass
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    items: int | None = None
    errors: Counter[str] = field(default_factory=Counter)
    stages_s: dict[str, float] = field(default_factory=dict)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    def stages_ms(self) -> dict[str, float]:
        return {k: round(v * 1000, 1) for k, v in sorted(self.stages_s.items())}

    def timings(self) -> dict[str, object]:
        """The ``debug`` object of an answer: the request's stages and time so far."""
        return {
            "request_id": self.request_id,
            "stages_ms": self.stages_ms(),
            "total_ms": self.elapsed_ms(),
        }

    def line(self, status: int | None) -> str:
        """The log line; ``status`` None when no answer was sent (the client went away)."""
        fields = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": status,
            "duration_ms": self.elapsed_ms(),
            "model": self.model,
            "items": self.items,
            "item_errors": dict(self.errors) or None,
            "stages_ms": self.stages_ms() or None,
        }
        return json.dumps({k: v for k, v in fields.items() if v is not None})


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


@contextmanager
def recording(request_id: str, method: str, path: str) -> Iterator[RequestRecord]:
    record = RequestRecord(request_id, method, path)
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)


def current() -> RequestRecord | None:
    return _CURRENT.get()


def request_id() -> str | None:
    record = _CURRENT.get()
    return record.request_id if record else None


def add_stage(stage: str, seconds: float) -> None:
    """Time spent in ``stage`` by the current request (summed over its items and calls)."""
    record = _CURRENT.get()
    if record is not None:
        record.stages_s[stage] = record.stages_s.get(stage, 0.0) + seconds


def install() -> None:
    """JSON lines on stderr for the per-request log, apart from KServe's own logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
