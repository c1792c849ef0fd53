"""The ASGI gate in front of KServe: what may come in, how much of it, and for how long.

KServe's app serves more than this service offers (model load and unload, ``:explain``,
the v2 inference protocol) and parses JSON bodies on the event loop before any check of
ours runs. So everything passes through here first, cheapest check first:

* **routes**: an allow-list of the read-only probes and ``POST /v1/models/<name>:predict``
  for the served models; the model-repository extension answers 404 and ``:explain`` 501,
  before any work is done;
* **admission**: at most ``max_requests`` predict requests and ``max_body_bytes`` of their
  bodies in flight, a few more waiting briefly for a turn; past that, 503 with Retry-After
  instead of running out of memory;
* **body**: 413 past ``max_body`` (declared or read), 408 when it has not all arrived
  within ``body_timeout_s`` (a client trickling a body would otherwise hold its slot and
  its bytes for as long as it liked); bytes are reserved as they arrive, not as declared.
  The body is then handed to KServe as opaque bytes, so that the models parse it off the
  event loop (``transformer.request``);
* **request id**: the caller's ``x-request-id`` when it is sane, else a new one, echoed
  on the response and in the body of a 500;
* **cancellation**: when the client disconnects, the request's remaining work is cancelled;
* **server bugs**: an unexpected exception is a 500 naming only the request id; the
  traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transformer import request_log
from transformer.http_errors import JSONResponse
from transformer.request_log import REQUEST_ID_HEADER

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PROBES = re.compile(r"/|/metrics|/v1/models|/v2|/v2/health/(?:live|ready)")
_MODEL_PATH = re.compile(r"/v([12])/models/([^/:]+)(.*)")

ADMISSION_REJECTIONS = Counter(
    "transformer_admission_rejections",
    "Predict requests refused with 503 because the in-flight budget was full",
    ["reason"],
)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


class Admission:
    """In-flight predict requests and body bytes; touched only on the event loop.

    A request past ``max_requests`` waits its turn, first come first served, for up to
    ``wait_s``, as Knative's queue-proxy queues past containerConcurrency: a short stall
    (a slow batch, a busy core) then costs latency rather than 503s. At most ``max_waiting``
    wait, before reading their bodies, so waiting holds a connection and no memory.
    """

    def __init__(self, max_requests: int, max_bytes: int, *, max_waiting: int = 0,
                 wait_s: float = 0.0) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.requests = 0
        self.bytes = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(self) -> bool:
        if self.requests < self.max_requests:
            self.requests += 1
            return True
        if len(self._waiting) >= self.max_waiting or self.wait_s <= 0:
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait((turn,), timeout=self.wait_s)
        except asyncio.CancelledError:
            self._forgo(turn)
            raise
        if turn.done():
            return True
        self._forgo(turn)
        return False

    def reserve(self, size: int) -> bool:
        if self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        return True

    def leave(self, size: int) -> None:
        self.bytes -= size
        self._release()

    def _forgo(self, turn: asyncio.Future[None]) -> None:
        if turn.done():  # handed a slot it will not use: pass it on
            self._release()
        else:
            self._waiting.remove(turn)
            turn.cancel()

    def _release(self) -> None:
        # The slot passes straight to the longest waiter, so the count stays as it is.
        if self._waiting:
            self._waiting.popleft().set_result(None)
        else:
            self.requests -= 1


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        models: Collection[str],
        max_body: int,
        admission: Admission,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.models = frozenset(models)
        self.max_body = max_body
        self.admission = admission
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        send = _with_request_id(send, request_id)
        route = self.route(scope["method"], scope["path"])
        if isinstance(route, Refusal):
            await _answer(route.status, {"error": route.message}, scope, receive, send)
        elif route == "predict":
            with request_log.recording(request_id, scope["method"], scope["path"]) as record:
                status: int | None = None
                original = send

                async def sending(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                    await original(message)

                try:
                    await self._predict(scope, receive, sending, request_id)
                finally:
                    request_log.log.info(record.line(status))
        else:
            await self.app(scope, receive, send)

    def route(self, method: str, path: str) -> Refusal | str:
        """``"probe"``, ``"predict"``, or why the request is refused."""
        read = method in ("GET", "HEAD")
        if _PROBES.fullmatch(path):
            return "probe" if read else _not_allowed(method, path)
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            return Refusal(HTTPStatus.NOT_FOUND, f"{path} is not served here")
        version, name, rest = match.groups()
        if name not in self.models:
            served = ", ".join(sorted(self.models))
            return Refusal(HTTPStatus.NOT_FOUND, f"model {name!r} is not served here ({served})")
        if rest in (":explain", "/explain"):
            return Refusal(HTTPStatus.NOT_IMPLEMENTED, f"{name} has no explainer")
        if rest == ":predict" and version == "1":
            return "predict" if method == "POST" else _not_allowed(method, path)
        if rest in ("", "/ready"):
            return "probe" if read else _not_allowed(method, path)
        return Refusal(
            HTTPStatus.NOT_FOUND,
            f"{path} is not served here: use POST /v1/models/{name}:predict",
        )

    async def _predict(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        size = int(declared) if declared.isdigit() else 0
        if size > self.max_body:
            await _too_large(size, self.max_body, scope, receive, send)
            return
        if not await self.admission.enter():
            await _busy("requests", "too many requests in flight", scope, receive, send)
            return
        reserved = 0
        try:
            body: list[bytes] = []
            refusal: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return
                        chunk = message.get("body", b"")
                        if reserved + len(chunk) > self.max_body:
                            refusal = partial(_too_large, reserved + len(chunk), self.max_body)
                            break
                        if not self.admission.reserve(len(chunk)):
                            refusal = partial(_busy, "bytes", "too many request bytes in flight")
                            break
                        reserved += len(chunk)
                        body.append(chunk)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                late = f"the request body did not arrive within {self.body_timeout_s:g} s ({reserved} bytes came)"
                refusal = partial(_answer, HTTPStatus.REQUEST_TIMEOUT, {"error": late})
            if refusal is not None:
                # Outside the body's time limit: a slow reader must not cut the answer short.
                await refusal(scope, receive, send)
                return
            whole = b"".join(body)
            body.clear()  # one copy of the body in memory, not two
            await self._run(_as_opaque(scope), whole, receive, send, request_id)
        finally:
            self.admission.leave(reserved)

    async def _run(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, request_id: str
    ) -> None:
        """Run the app with ``body``; cancel it if the client goes away first."""
        gone = asyncio.Event()
        delivered = False
        started = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        app = asyncio.ensure_future(self.app(scope, replay, tracked))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done():
                log.info("request %s: the client disconnected; its work is cancelled", request_id)
                app.cancel()
            await app
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
        except Exception:
            log.exception("request %s failed with a server error", request_id)
            if not started:
                body_out = {"error": "internal server error", "request_id": request_id}
                await _answer(HTTPStatus.INTERNAL_SERVER_ERROR, body_out, scope, replay, send)
        finally:
            watcher.cancel()


# KServe parses JSON, CloudEvents and, surprisingly, application/octet-stream bodies on the
# event loop; any other content type reaches the model's ``preprocess`` as bytes.
OPAQUE_CONTENT_TYPE = b"application/x-unparsed-request"


def _as_opaque(scope: Scope) -> Scope:
    """The scope with a content type KServe hands on unparsed, for ``preprocess`` to parse
    in a thread."""
    headers = [
        (key, value)
        for key, value in scope["headers"]
        if key != b"content-type" and not key.startswith(b"ce-")
    ]
    headers.append((b"content-type", OPAQUE_CONTENT_TYPE))
    return {**scope, "headers": headers}


def _request_id(scope: Scope) -> str:
    given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def _with_request_id(send: Send, request_id: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0] != REQUEST_ID_HEADER.encode()]
            headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _not_allowed(method: str, path: str) -> Refusal:
    return Refusal(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}")


async def _answer(status: int, content: dict, scope: Scope, receive: Receive, send: Send) -> None:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == HTTPStatus.SERVICE_UNAVAILABLE else None
    await JSONResponse(content, status_code=status, headers=headers)(scope, receive, send)


async def _too_large(size: int, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    message = f"request body of {size} bytes exceeds the {limit}-byte limit"
    await _answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": message}, scope, receive, send)


async def _busy(reason: str, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    ADMISSION_REJECTIONS.labels(reason=reason).inc()
    content = {"error": f"overloaded: {message}; retry after {RETRY_AFTER_S} s"}
    await _answer(HTTPStatus.SERVICE_UNAVAILABLE, content, scope, receive, send)
