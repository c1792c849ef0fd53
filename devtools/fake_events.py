"""A local stand-in for Wikimedia EventStreams, speaking its SSE format.

The upload watcher's tests need a stream that can be steered: events published on cue,
connections dropped mid-event, the resume header checked. So this is a real HTTP server on
127.0.0.1 serving ``GET /v2/stream/<streams>`` as EventStreams (KafkaSSE) does: a chunked
``text/event-stream`` that opens with an ``:ok`` comment, then ``event: message`` events
whose ``id`` is the JSON list of per-partition positions just past the event (Kafka
timestamps + 1, the datacenter without events at offset -1) and whose ``data`` is the
event in its real schema (``mediawiki/revision/create`` for ``mediawiki.page-create``,
``mediawiki/recentchange`` for ``mediawiki.recentchange``). It resumes from
``Last-Event-ID`` (timestamps or offsets) or ``?since=`` (ISO 8601 or Unix ms), else
starts at the newest event; it sends ``:ok`` keepalives while idle. Knobs: `drop_after`
(hang up after N events, optionally in the middle of the next), `fail` (answer the next
connections with an error status). Every request is logged in `requests`.

Use it as a context manager::

    with FakeEventStreams() as fake:
        fake.publish("Cat.jpg")  # a File page on commonswiki
        ...  # fake.base_url, fake.requests

or from a shell, publishing each title read from standard input::

    python devtools/fake_events.py --port 8092
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from devtools.local_server import LocalServer, LoggedRequest, Server

STREAM_PATH = "/v2/stream/"
STREAMS = ("mediawiki.page-create", "mediawiki.recentchange")
# The legacy names EventStreams still serves.
_ALIASES = {"page-create": "mediawiki.page-create", "recentchange": "mediawiki.recentchange"}
_SCHEMAS = {
    "mediawiki.page-create": "/mediawiki/revision/create/2.0.0",
    "mediawiki.recentchange": "/mediawiki/recentchange/1.0.0",
}
_NAMESPACES = {0: "", 2: "User:", 4: "Commons:", 6: "File:", 14: "Category:"}
_DOMAINS = {"commonswiki": "commons.wikimedia.org", "enwiki": "en.wikipedia.org"}
_COMMENT = "Uploaded a work by a fake"
_PERFORMER = {
    "user_text": "Fake uploader",
    "user_groups": ["*", "user", "autoconfirmed"],
    "user_is_bot": False,
    "user_id": 4242,
    "user_registration_dt": "2020-01-01T00:00:00Z",
    "user_edit_count": 1000,
}


@dataclass(frozen=True)
class _Event:
    stream: str
    offset: int
    timestamp: int  # Kafka's, Unix ms; unique and increasing per stream here
    data: dict[str, Any]

    def sse_id(self) -> str:
        """KafkaSSE's id: each partition's position past this event."""
        return json.dumps(
            [
                {"topic": f"eqiad.{self.stream}", "partition": 0, "timestamp": self.timestamp + 1},
                {"topic": f"codfw.{self.stream}", "partition": 0, "offset": -1},
            ],
            separators=(",", ":"),
        )

    def lines(self) -> bytes:
        data = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"event: message\nid: {self.sse_id()}\ndata: {data}\n\n".encode()


@dataclass(frozen=True)
class _Page:
    title: str  # without the namespace
    namespace: int
    wiki: str
    redirect: bool
    when: datetime
    page_id: int  # the revision's id too

    @property
    def prefix(self) -> str:
        return _NAMESPACES.get(self.namespace, f"Ns{self.namespace}:")

    @property
    def domain(self) -> str:
        return _DOMAINS.get(self.wiki, f"{self.wiki}.example.org")


@dataclass(frozen=True)
class _Drop:
    after: int
    mid_event: bool


class BadPosition(ValueError):
    """A Last-Event-ID or since KafkaSSE would answer 400 for."""


class FakeEventStreams(LocalServer):
    """EventStreams on ``127.0.0.1`` and an ephemeral port. Knobs, safe to use while it
    runs: `publish`, `drop_after`, `fail`, ``keepalive_s`` (seconds between keepalives)."""

    def __init__(self, *, port: int = 0, keepalive_s: float = 0.2) -> None:
        self._lock = threading.Condition()
        self._events: dict[str, list[_Event]] = {stream: [] for stream in STREAMS}
        self._drops: list[_Drop] = []
        self._failures: list[tuple[int, float | None]] = []
        self._closing = False
        self._ids = 0
        self.keepalive_s = keepalive_s
        self.requests: list[LoggedRequest] = []
        super().__init__(_Handler, port)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        super().__exit__(*exc_info)

    @property
    def stream_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path.startswith(STREAM_PATH)]

    def ids(self, stream: str = STREAMS[0]) -> list[str]:
        """The SSE id sent with each event of ``stream`` so far, in order."""
        with self._lock:
            return [event.sse_id() for event in self._events[stream]]

    def publish(
        self,
        title: str,
        *,
        namespace: int = 6,
        wiki: str = "commonswiki",
        redirect: bool = False,
        at: datetime | None = None,
    ) -> None:
        """A page ``title`` (without its namespace) created on ``wiki`` at ``at`` (now),
        as MediaWiki announces it: a ``mediawiki.page-create`` event and a
        ``mediawiki.recentchange`` one (an upload log entry for a file, else a new page)."""
        with self._lock:
            self._ids += 1
            page = _Page(
                title, namespace, wiki, redirect, at or datetime.now(UTC), 1000 + self._ids
            )
            for stream in STREAMS:
                events = self._events[stream]
                previous = events[-1].timestamp if events else 0
                timestamp = max(round(time.time() * 1000), previous + 1)
                build = _page_create if stream == "mediawiki.page-create" else _recent_change
                events.append(_Event(stream, len(events), timestamp, build(page, len(events))))
            self._lock.notify_all()

    def drop_after(self, events: int, *, times: int = 1, mid_event: bool = True) -> None:
        """The next ``times`` connections hang up after ``events`` events; with
        ``mid_event``, half-way through sending the next one (if one comes)."""
        with self._lock:
            self._drops += [_Drop(events, mid_event)] * times

    def fail(self, times: int = 1, status: int = 503, *, retry_after: float | None = None) -> None:
        """The next ``times`` connections are answered ``status`` (with Retry-After)."""
        with self._lock:
            self._failures += [(status, retry_after)] * times

    def _start(self, stream: str, last_event_id: str | None, since: str | None) -> int:
        """The index of the first event a connection gets."""
        with self._lock:
            events = list(self._events[stream])
        if last_event_id is not None:
            return _resume(events, stream, last_event_id)
        if since is not None:
            after = _since_ms(since)
            return next((e.offset for e in events if e.timestamp >= after), len(events))
        return len(events)

    def _next(self, stream: str, index: int) -> _Event | None:
        """Event ``index`` of ``stream``, waiting up to ``keepalive_s`` for it; None if
        none came (or the server is closing)."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._closing or index < len(self._events[stream]), self.keepalive_s
            )
            events = self._events[stream]
            return events[index] if index < len(events) and not self._closing else None

    def _pop(self, queue: list[Any]) -> Any:
        with self._lock:
            return queue.pop(0) if queue else None


def page_create(
    title: str,
    *,
    namespace: int = 6,
    wiki: str = "commonswiki",
    redirect: bool = False,
    at: datetime | None = None,
    page_id: int = 1001,
    offset: int = 0,
) -> dict[str, Any]:
    """One ``mediawiki.page-create`` event as `FakeEventStreams.publish` makes it (and as
    the Kafka topics carry it)."""
    page = _Page(title, namespace, wiki, redirect, at or datetime.now(UTC), page_id)
    return _page_create(page, offset)


def _resume(events: list[_Event], stream: str, last_event_id: str) -> int:
    """Where KafkaSSE resumes for a ``Last-Event-ID``: the offset or timestamp given for
    the topic with events (``eqiad.*``); -1 means the end."""
    try:
        assignments = json.loads(last_event_id)
        mine = [a for a in assignments if a["topic"] == f"eqiad.{stream}" and a["partition"] == 0]
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPosition(f"invalid Last-Event-ID: {last_event_id!r}") from exc
    if not mine:
        return len(events)
    if "offset" in mine[0]:
        offset = int(mine[0]["offset"])
        return len(events) if offset < 0 else min(offset, len(events))
    if "timestamp" in mine[0]:
        after = int(mine[0]["timestamp"])
        return next((e.offset for e in events if e.timestamp >= after), len(events))
    raise BadPosition(f"no offset or timestamp in {mine[0]}")


def _since_ms(since: str) -> int:
    if since.isdigit():
        return int(since)
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise BadPosition(f"invalid since: {since!r}") from exc
    return round((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def _meta(page: _Page, stream: str, offset: int, key: str) -> dict[str, Any]:
    return {
        "uri": f"https://{page.domain}/wiki/{quote(key, safe=':/')}",
        "request_id": str(uuid.uuid4()),
        "id": str(uuid.uuid4()),
        "domain": page.domain,
        "stream": stream,
        "dt": _iso(page.when, millis=True),
        "topic": f"eqiad.{stream}",
        "partition": 0,
        "offset": offset,
    }


def _page_create(page: _Page, offset: int) -> dict[str, Any]:
    # page_title is the prefixed DB key: namespace name, underscores for spaces.
    key = page.prefix + page.title.replace(" ", "_")
    sha1 = _base36_sha1(key)
    return {
        "$schema": _SCHEMAS["mediawiki.page-create"],
        "meta": _meta(page, "mediawiki.page-create", offset, key),
        "database": page.wiki,
        "page_id": page.page_id,
        "page_title": key,
        "page_namespace": page.namespace,
        "rev_id": page.page_id,
        "rev_timestamp": _iso(page.when),
        "rev_sha1": sha1,
        "rev_minor_edit": False,
        "rev_len": 1172,
        "rev_content_model": "wikitext",
        "rev_content_format": "text/x-wiki",
        "performer": _PERFORMER,
        "page_is_redirect": page.redirect,
        "comment": _COMMENT,
        "parsedcomment": _COMMENT,
        "dt": _iso(page.when),
        "rev_slots": {
            "main": {
                "rev_slot_content_model": "wikitext",
                "rev_slot_sha1": sha1,
                "rev_slot_size": 1172,
                "rev_slot_origin_rev_id": page.page_id,
            }
        },
    }


def _recent_change(page: _Page, offset: int) -> dict[str, Any]:
    # recentchange titles are the prefixed text form: spaces, not underscores.
    text = page.prefix + page.title.replace("_", " ")
    key = text.replace(" ", "_")
    event: dict[str, Any] = {
        "$schema": _SCHEMAS["mediawiki.recentchange"],
        "meta": _meta(page, "mediawiki.recentchange", offset, key),
        "id": 3_000_000 + page.page_id,
        "namespace": page.namespace,
        "title": text,
        "title_url": f"https://{page.domain}/wiki/{quote(key, safe=':/')}",
        "comment": _COMMENT,
        "timestamp": int(page.when.timestamp()),
        "user": _PERFORMER["user_text"],
        "bot": False,
        "server_url": f"https://{page.domain}",
        "server_name": page.domain,
        "server_script_path": "/w",
        "wiki": page.wiki,
        "parsedcomment": _COMMENT,
    }
    if page.namespace == 6 and not page.redirect:
        return event | {
            "type": "log",
            "log_id": 500_000 + page.page_id,
            "log_type": "upload",
            "log_action": "upload",
            "log_params": {
                "img_sha1": hashlib.sha1(key.encode()).hexdigest(),
                "img_timestamp": _iso(page.when, compact=True),
            },
            "log_action_comment": f"uploaded &quot;[[{text}]]&quot;",
        }
    return event | {
        "type": "new",
        "minor": False,
        "patrolled": False,
        "length": {"new": 1172},
        "revision": {"new": page.page_id},
    }


def _iso(when: datetime, *, millis: bool = False, compact: bool = False) -> str:
    when = when.astimezone(UTC)
    if compact:
        return when.strftime("%Y%m%d%H%M%S")
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond // 1000:03d}Z" if millis else f"{text}Z"


def _base36_sha1(text: str) -> str:
    """MediaWiki's revision SHA-1: base 36, 31 digits."""
    value = int(hashlib.sha1(text.encode()).hexdigest(), 16)
    digits = ""
    while value:
        value, rest = divmod(value, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
    return digits.rjust(31, "0")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `FakeEventStreams.requests`

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake.requests.append(LoggedRequest("GET", url.path, params, headers, time.monotonic()))
        if not url.path.startswith(STREAM_PATH):
            return self._json(404, {"title": "Not Found", "detail": f"no route {url.path}"})
        names = unquote(url.path.removeprefix(STREAM_PATH)).split(",")
        streams = [_ALIASES.get(name, name) for name in names]
        if len(streams) != 1 or streams[0] not in STREAMS:
            # The real one serves several at once; the watcher reads one.
            return self._json(404, {"title": "Not Found", "detail": f"unknown stream {names}"})
        if failure := fake._pop(fake._failures):
            status, retry_after = failure
            extra = {} if retry_after is None else {"Retry-After": str(round(retry_after))}
            return self._json(status, {"title": "Service Unavailable"}, extra)
        try:
            index = fake._start(streams[0], headers.get("last-event-id"), params.get("since"))
        except BadPosition as exc:
            return self._json(400, {"title": "Bad Request", "detail": str(exc)})
        self._stream(streams[0], index, fake._pop(fake._drops))

    def _stream(self, stream: str, index: int, drop: _Drop | None) -> None:
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(b":ok\n\n")
        sent = 0
        while not fake._closing:
            event = fake._next(stream, index)
            if event is None:
                self._chunk(b":ok\n\n")  # keepalive: a comment, then an empty event
                continue
            body = event.lines()
            if drop and sent == drop.after:  # mid_event: half of the event after them
                self._chunk(body[: len(body) // 2])
                return self._hang_up()
            self._chunk(body)
            sent += 1
            index += 1
            if drop and sent == drop.after and not drop.mid_event:
                return self._hang_up()
        self._hang_up()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _hang_up(self) -> None:
        """Close without the last chunk: the client sees the body cut off."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve a fake EventStreams; each line of standard input is published "
        "as a new file (a File page created on commonswiki)."
    )
    parser.add_argument("--port", type=int, default=8092)
    args = parser.parse_args(argv)
    with FakeEventStreams(port=args.port) as fake:
        print(f"fake EventStreams at {fake.base_url}{STREAM_PATH}{STREAMS[0]}", flush=True)
        try:
            for line in sys.stdin:
                if title := line.strip():
                    fake.publish(title)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
