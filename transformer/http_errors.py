"""HTTP answers for the request-level errors of ``transformer.errors``."""

from __future__ import annotations

import math
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from transformer.errors import BadRequest, RequestRejected, UpstreamError


async def _upstream_handler(_: Request, exc: UpstreamError) -> ORJSONResponse:
    content: dict = {"error": exc.message}
    if exc.predictions is not None:
        content["predictions"] = exc.predictions
    headers = None
    if exc.retry_after is not None:
        # Retry-After takes whole seconds; rounding down could tell clients to retry at once.
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    return ORJSONResponse(status_code=exc.status, content=content, headers=headers)


async def _rejected_handler(_: Request, exc: RequestRejected) -> ORJSONResponse:
    return ORJSONResponse(
        status_code=HTTPStatus.BAD_REQUEST,
        content={"error": exc.message, "predictions": exc.predictions},
    )


async def _bad_request_handler(_: Request, exc: BadRequest) -> ORJSONResponse:
    return ORJSONResponse(status_code=HTTPStatus.BAD_REQUEST, content={"error": exc.message})


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BadRequest, _bad_request_handler)
    app.add_exception_handler(UpstreamError, _upstream_handler)
    app.add_exception_handler(RequestRejected, _rejected_handler)
