"""What every response and request of the review page goes through: security headers, a
bounded body, and the session's CSRF token."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
_CSRF_KEY = "csrf"


def content_security_policy(image_sources: Iterable[str]) -> str:
    # Scripts and styles only from this server's files: an injected inline script never runs.
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' {' '.join(image_sources)}",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = {
            "content-security-policy": csp,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            # Thumbnails are fetched from Commons: it need not learn the queue's URLs.
            "referrer-policy": "no-referrer",
            "cross-origin-opener-policy": "same-origin",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Bodies over ``limit`` bytes get 413, by their Content-Length before anything is read,
    else once the bytes read pass it (the endpoint's read raises)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, bounded_receive, send)

    def _message(self) -> str:
        return f"request body over {self.limit} bytes"

    async def _refuse(self, send: Send) -> None:
        body = self._message().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def csrf_token(request: Request) -> str:
    """The session's synchronizer token, made on first use."""
    token = request.session.get(_CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[_CSRF_KEY] = token
    return token


def new_csrf_token(request: Request) -> None:
    request.session[_CSRF_KEY] = secrets.token_urlsafe(32)


def check_csrf(request: Request, submitted: object) -> None:
    expected = request.session.get(_CSRF_KEY)
    if not isinstance(submitted, str) or not submitted:
        raise HTTPException(403, "CSRF token missing from the form: reload the page and try again")
    if not isinstance(expected, str):
        raise HTTPException(
            403,
            "no session for this CSRF token (session expired or cookies blocked): reload the page",
        )
    if not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise HTTPException(
            403, "CSRF token does not match this session: reload the page and try again"
        )
