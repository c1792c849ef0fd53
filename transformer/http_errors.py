"""HTTP answers for the request-level errors of ``transformer.errors``."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from transformer.errors import RequestRejected, UpstreamError


async def _upstream_handler(_: Request, exc: UpstreamError) -> ORJSONResponse:
    content: dict = {"error": exc.message}
    if exc.predictions is not None:
        content["predictions"] = exc.predictions
    return ORJSONResponse(status_code=exc.status, content=content)


async def _rejected_handler(_: Request, exc: RequestRejected) -> ORJSONResponse:
    return ORJSONResponse(
        status_code=HTTPStatus.BAD_REQUEST,
        content={"error": exc.message, "predictions": exc.predictions},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(UpstreamError, _upstream_handler)
    app.add_exception_handler(RequestRejected, _rejected_handler)
