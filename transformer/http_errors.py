"""HTTP answers for the request-level errors of ``transformer.errors``."""

from __future__ import annotations

import math
from http import HTTPStatus

import orjson
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse as _StdlibJSONResponse

from transformer.errors import BadRequest, RequestRejected, UpstreamError


class JSONResponse(_StdlibJSONResponse):
    """Rendered by orjson: error bodies echo every item, and the standard library's encoder
    is several times slower on the event loop (FastAPI's own orjson class is deprecated)."""

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


async def _upstream_handler(_: Request, exc: UpstreamError) -> JSONResponse:
    content: dict = {"error": exc.message}
    if exc.predictions is not None:
        content["predictions"] = exc.predictions
    headers = None
    if exc.retry_after is not None:
        # Retry-After takes whole seconds; rounding down could tell clients to retry at once.
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    return JSONResponse(status_code=exc.status, content=content, headers=headers)


async def _rejected_handler(_: Request, exc: RequestRejected) -> JSONResponse:
    return JSONResponse(
        status_code=HTTPStatus.BAD_REQUEST,
        content={"error": exc.message, "predictions": exc.predictions},
    )


async def _bad_request_handler(_: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(status_code=HTTPStatus.BAD_REQUEST, content={"error": exc.message})


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BadRequest, _bad_request_handler)
    app.add_exception_handler(UpstreamError, _upstream_handler)
    app.add_exception_handler(RequestRejected, _rejected_handler)
