"""The ASGI gate in front of KServe, driven directly with ASGI messages.

What it does with real traffic is covered over HTTP by test_hostile.py; here are the parts
that need an app we control: a server bug, a client that disconnects, a full budget.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transformer.gate import OPAQUE_CONTENT_TYPE, Admission, RequestGate

MODELS = ("logo-detection", "nsfw-detection")


def scope(path: str = "/v1/models/logo-detection:predict", method: str = "POST", **headers: str) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


class Exchange:
    """A client's side of one request: the body it sends, what it gets back."""

    def __init__(self, chunks: list[bytes], disconnect_after_s: float | None = None) -> None:
        self.chunks = list(chunks)
        self.disconnect_after_s = disconnect_after_s
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.chunks:
            body = self.chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}
        if self.disconnect_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.disconnect_after_s or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def json(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-body", str(len(message["body"])).encode())]})
    await send({"type": "http.response.body", "body": b"{}"})


def gate(app=ok_app, max_requests: int = 4, max_bytes: int = 1000, max_body: int = 500,
         max_waiting: int = 0, wait_s: float = 0.0, body_timeout_s: float = 5.0) -> RequestGate:
    admission = Admission(max_requests, max_bytes, max_waiting=max_waiting, wait_s=wait_s)
    return RequestGate(app, models=MODELS, max_body=max_body, admission=admission,
                       body_timeout_s=body_timeout_s)


async def test_a_server_bug_is_a_500_with_only_a_request_id() -> None:
    async def buggy(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise KeyError("internal detail")

    exchange = Exchange([b"{}"])
    await gate(buggy)(scope(x_request_id="req-1"), exchange.receive, exchange.send)
    assert exchange.status == 500
    assert exchange.json == {"error": "internal server error", "request_id": "req-1"}
    assert exchange.headers["x-request-id"] == "req-1"


async def test_a_disconnect_cancels_the_work() -> None:
    cancelled = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    exchange = Exchange([b"{}"], disconnect_after_s=0.05)
    guarded = gate(slow)
    await asyncio.wait_for(guarded(scope(), exchange.receive, exchange.send), 5)
    assert cancelled.is_set()
    assert exchange.sent == []
    assert guarded.admission.requests == 0 and guarded.admission.bytes == 0


def held_app() -> tuple[ASGIApp, asyncio.Event, asyncio.Event]:
    """An app that holds every request until ``release`` is set; ``started`` once one runs."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        started.set()
        await release.wait()
        await ok_app(scope, _body(b"{}"), send)

    return held, started, release


async def test_a_full_budget_answers_503_with_retry_after() -> None:
    app, started, release = held_app()
    guarded = gate(app, max_requests=1)
    first = Exchange([b"{}"])
    running = asyncio.ensure_future(guarded(scope(), first.receive, first.send))
    await started.wait()
    second = Exchange([b"{}"])
    await guarded(scope(), second.receive, second.send)
    assert second.status == 503
    assert second.headers["retry-after"] == "1"
    release.set()
    await running
    assert first.status == 200
    assert guarded.admission.requests == 0


async def test_a_request_past_the_budget_waits_its_turn_in_order() -> None:
    app, started, release = held_app()
    guarded = gate(app, max_requests=1, max_waiting=2, wait_s=5)
    first = Exchange([b"{}"])
    running = [asyncio.ensure_future(guarded(scope(), first.receive, first.send))]
    await started.wait()
    queued = [Exchange([b"{}"]), Exchange([b"{}"])]
    for exchange in queued:
        running.append(asyncio.ensure_future(guarded(scope(), exchange.receive, exchange.send)))
        await asyncio.sleep(0)
    assert guarded.admission.waiting == 2
    refused = Exchange([b"{}"])
    await guarded(scope(), refused.receive, refused.send)
    assert refused.status == 503, "past max_waiting is refused at once"
    release.set()
    await asyncio.wait_for(asyncio.gather(*running), 5)
    assert [e.status for e in (first, *queued)] == [200, 200, 200]
    assert guarded.admission.requests == 0 and guarded.admission.waiting == 0


async def test_a_wait_past_wait_s_is_a_503_and_frees_its_place() -> None:
    app, started, release = held_app()
    guarded = gate(app, max_requests=1, max_waiting=4, wait_s=0.05)
    first = Exchange([b"{}"])
    running = asyncio.ensure_future(guarded(scope(), first.receive, first.send))
    await started.wait()
    second = Exchange([b"{}"])
    await asyncio.wait_for(guarded(scope(), second.receive, second.send), 5)
    assert second.status == 503
    assert second.headers["retry-after"] == "1"
    assert guarded.admission.waiting == 0
    release.set()
    await running
    assert guarded.admission.requests == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_any_slot_it_was_handed() -> None:
    admission = Admission(1, 1000, max_waiting=4, wait_s=5)
    assert await admission.enter()
    waiter = asyncio.ensure_future(admission.enter())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    # A slot handed over in the same loop iteration as the cancellation is passed on.
    handed = asyncio.ensure_future(admission.enter())
    await asyncio.sleep(0)
    admission.leave(0)
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert admission.requests == 0 and admission.waiting == 0


async def test_bytes_in_flight_are_bounded_while_reading() -> None:
    exchange = Exchange([b"x" * 400, b"x" * 400])
    guarded = gate(max_bytes=600, max_body=1000)
    await guarded(scope(), exchange.receive, exchange.send)
    assert exchange.status == 503
    assert guarded.admission.bytes == 0


class Trickle(Exchange):
    """A client that sends ``chunks`` and then nothing more, without ending its body."""

    async def receive(self) -> Message:
        if self.chunks:
            return {"type": "http.request", "body": self.chunks.pop(0), "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_its_slot() -> None:
    guarded = gate(body_timeout_s=0.2)
    stalled = Trickle([b"x" * 100])
    await asyncio.wait_for(guarded(scope(content_length="400"), stalled.receive, stalled.send), 5)
    assert stalled.status == 408
    assert "did not arrive within 0.2 s (100 bytes came)" in stalled.json["error"]
    assert guarded.admission.requests == 0 and guarded.admission.bytes == 0


async def test_bytes_are_reserved_as_they_arrive_not_as_declared() -> None:
    """A client that declares a large body and sends none of it holds no bytes: another
    request's body still fits."""
    guarded = gate(max_bytes=600, body_timeout_s=0.5)
    stalled = Trickle([])
    stalling = asyncio.ensure_future(guarded(scope(content_length="500"), stalled.receive, stalled.send))
    await asyncio.sleep(0.05)
    other = Exchange([b"x" * 400])
    await guarded(scope(), other.receive, other.send)
    assert other.status == 200
    await asyncio.wait_for(stalling, 5)
    assert stalled.status == 408


async def test_a_declared_or_streamed_body_over_the_limit_is_413() -> None:
    declared = Exchange([b"{}"])
    await gate()(scope(content_length="501"), declared.receive, declared.send)
    assert declared.status == 413
    streamed = Exchange([b"x" * 300, b"x" * 300])
    await gate(max_bytes=10_000)(scope(), streamed.receive, streamed.send)
    assert streamed.status == 413


async def test_predict_bodies_reach_the_app_as_opaque_bytes() -> None:
    seen: list[Scope] = []

    async def spy(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await ok_app(scope, receive, send)

    exchange = Exchange([b'{"instances"', b": []}"])
    await gate(spy)(
        scope(content_type="application/json", ce_specversion="1.0"), exchange.receive, exchange.send
    )
    assert exchange.headers["x-body"] == str(len(b'{"instances": []}'))
    headers = dict(seen[0]["headers"])
    assert headers[b"content-type"] == OPAQUE_CONTENT_TYPE
    assert b"ce-specversion" not in headers


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", "probe"),
        ("GET", "/metrics", "probe"),
        ("GET", "/v1/models/logo-detection", "probe"),
        ("GET", "/v2/models/nsfw-detection/ready", "probe"),
        ("GET", "/v2/health/ready", "probe"),
        ("POST", "/v1/models/nsfw-detection:predict", "predict"),
        ("POST", "/v2/repository/models/nsfw-detection/unload", 404),
        ("POST", "/v2/repository/index", 404),
        ("POST", "/v1/models/logo-detection:explain", 501),
        ("POST", "/v2/models/logo-detection/infer", 404),
        ("POST", "/v1/models/other:predict", 404),
        ("GET", "/v1/models/logo-detection:predict", 405),
        ("DELETE", "/v1/models/logo-detection", 405),
        ("POST", "/", 405),
        ("GET", "/docs", 404),
    ],
)
def test_routes(method: str, path: str, expected: str | int) -> None:
    route = gate().route(method, path)
    assert (route if isinstance(route, str) else route.status) == expected


def _body(data: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": data, "more_body": False}

    return receive
