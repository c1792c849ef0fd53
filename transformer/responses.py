"""Per-item results → the response body, or the status that the whole request earns.

Shared by the image and video models so that the rule is written once: a response is 200
when at least one instance was scored; when none was, 502/503/504 if Commons failed us,
else 400 naming the client's problem. ``predictions`` lists every item either way. A 200
answer to a request that asked for ``debug`` adds the request's stage timings.
"""

from __future__ import annotations

from http import HTTPStatus

from prometheus_client import Counter

from preprocessing.errors import CodedError
from transformer import request_log
from transformer.errors import RequestRejected, UpstreamError, as_dict, status_of

ITEM_ERRORS = Counter(
    "transformer_item_errors", "Instances that could not be scored", ["model", "code"]
)
# Triton's version of the model that scored the request, echoed so clients can log it.
MODEL_VERSION_HEADER = "x-model-version"
RETRY_AFTER_S = 1.0


def respond(
    model: str, predictions: list[dict], results: list[object], *, debug: bool = False
) -> dict:
    errors = [r for r in results if isinstance(r, CodedError)]
    for error in errors:
        ITEM_ERRORS.labels(model=model, code=error.code).inc()
    record = request_log.current()
    if record:
        record.model, record.items = model, len(results)
        record.errors.update(error.code for error in errors)
    if errors and len(errors) == len(results):
        upstream = [e for e in errors if status_of(e) >= 500]
        if upstream:
            status = status_of(upstream[0])
            # Commons overloaded or shedding load: worth retrying soon, and saying so.
            retry_after = RETRY_AFTER_S if status == HTTPStatus.SERVICE_UNAVAILABLE else None
            raise UpstreamError(status, upstream[0].message, predictions, retry_after=retry_after)
        summary = (
            errors[0].message
            if len(errors) == 1
            else f"none of the {len(errors)} instances could be scored; see predictions[].error"
        )
        raise RequestRejected(summary, predictions)
    if debug and record:
        return {"predictions": predictions, "debug": record.timings()}
    return {"predictions": predictions}


def error_prediction(filename: str | None, error: CodedError) -> dict:
    return {"filename": filename, "error": as_dict(error)}
