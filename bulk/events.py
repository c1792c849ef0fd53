"""Where the upload watcher hears of new uploads: Wikimedia EventStreams over SSE (small
deployments, development) or the Kafka topics behind it (production).

Both give the same thing: `Batch`es of the Commons uploads among the events read, with what
it takes to resume after them. The watcher stores each batch, then calls `stored`: an SSE
batch carries the stream position to save with its uploads (sent back as ``Last-Event-ID``
on reconnecting or restarting); a Kafka batch carries the offsets to commit once its uploads
are stored, so a crash re-delivers rather than loses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from httpx_sse import SSEError, aconnect_sse

from bulk.retry import pause, retry_after
from bulk.titles import canonical_title

log = logging.getLogger(__name__)

USER_AGENT = (
    "commons-moderation-watch/0.1 "
    "(https://wikitech.wikimedia.org/wiki/Machine_Learning/LiftWing; ml@wikimedia.org) httpx"
)
FILE_NAMESPACE = 6
PAGE_CREATE = "mediawiki.page-create"
RECENT_CHANGE = "mediawiki.recentchange"
KAFKA_TOPICS = ("eqiad.mediawiki.page-create", "codfw.mediawiki.page-create")
# A batch closes after this many events or this many seconds, whichever comes first; a
# quiet source yields an empty batch every FLUSH_S, so the consumer can stop or idle out.
MAX_EVENTS = 500
FLUSH_S = 1.0


@dataclass(frozen=True)
class Upload:
    title: str  # canonical: "File:Name with spaces.jpg"
    uploaded_at: datetime


@dataclass(frozen=True)
class Batch:
    uploads: list[Upload]
    events: int  # events read, uploads or not
    position: str | None = None  # SSE: saved with the uploads; None: nothing to save
    # Kafka: (topic, partition, next offset) to commit once the uploads are stored.
    offsets: tuple[tuple[str, int, int], ...] = ()


class EventSource(Protocol):
    name: str  # keys the watcher's saved position and pending uploads

    def batches(self, position: str | None) -> AsyncGenerator[Batch, None]:
        """Batches from ``position`` (a saved `Batch.position`; None: where the source
        starts by itself) on, forever; an empty one at least every `FLUSH_S`."""
        ...

    async def stored(self, batch: Batch) -> None:
        """``batch``'s uploads are stored: what it read need not be read again."""
        ...

    async def aclose(self) -> None: ...


class StreamRefused(Exception):
    """The stream answered a client error (an unknown stream, an unusable position):
    retrying would not help."""


def upload_from(event: Mapping[str, Any], wiki: str) -> Upload | None:
    """The upload an event announces, if it is one on ``wiki``: a page creation in the File
    namespace (``mediawiki.page-create``: new files), or an upload log entry
    (``mediawiki.recentchange``: new files and new versions). Redirects (left behind by
    moves) and unreadable titles are no uploads."""
    schema = str(event.get("$schema", ""))
    if schema.startswith("/mediawiki/revision/create/"):
        if (
            event.get("database") != wiki
            or event.get("page_namespace") != FILE_NAMESPACE
            or event.get("page_is_redirect")
        ):
            return None
        title, at = event.get("page_title"), event.get("rev_timestamp")
    elif schema.startswith("/mediawiki/recentchange/"):
        if (
            event.get("wiki") != wiki
            or event.get("namespace") != FILE_NAMESPACE
            or event.get("type") != "log"
            or event.get("log_type") != "upload"
        ):
            return None
        title, at = event.get("title"), event.get("timestamp")
    else:
        return None
    canonical = canonical_title(title) if isinstance(title, str) else None
    if canonical is None:
        return None
    meta = event.get("meta")
    dt = meta.get("dt") if isinstance(meta, dict) else None
    return Upload(canonical, _when(at) or _when(dt) or datetime.now(UTC))


def _when(value: Any) -> datetime | None:
    """An event time: ISO 8601 (``rev_timestamp``, ``meta.dt``) or Unix seconds
    (recentchange's ``timestamp``); None when absent or unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            when = datetime.fromisoformat(value)
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


class EventStreams:
    """Wikimedia EventStreams (``GET {base_url}/v2/stream/{stream}``) as an `EventSource`.

    Its SSE ids are JSON lists of per-partition Kafka offsets or timestamps, each already
    past the event it came with: sent back as ``Last-Event-ID``, the stream continues right
    after it. Without one, ``since`` (ISO 8601 or Unix milliseconds) says where to start,
    else the stream starts now. A dropped connection, a 429 or a 5xx is retried after the
    Retry-After or a jittered backoff, from the last id received; an event cut off by the
    drop is discarded whole and comes again.
    """

    def __init__(
        self,
        base_url: str,
        *,
        stream: str = PAGE_CREATE,
        wiki: str = "commonswiki",
        since: str | None = None,
        user_agent: str = USER_AGENT,
        flush_s: float = FLUSH_S,
        max_events: int = MAX_EVENTS,
        backoff_s: float = 1.0,
        max_pause_s: float = 60.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        self.name = f"sse:{urlsplit(base_url).netloc}/{stream}/{wiki}"
        self._url = f"{base_url.rstrip('/')}/v2/stream/{stream}"
        self._wiki = wiki
        self._since = since
        self._flush_s = flush_s
        self._max_events = max_events
        self._backoff_s = backoff_s
        self._max_pause_s = max_pause_s
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(10.0, read=read_timeout_s),
        )

    async def batches(self, position: str | None) -> AsyncGenerator[Batch, None]:
        queue: asyncio.Queue[tuple[Upload | None, str | None]] = asyncio.Queue(self._max_events)
        reader = asyncio.create_task(self._read(position, queue))
        try:
            while True:
                uploads: list[Upload] = []
                events, last_id = 0, None
                deadline = time.monotonic() + self._flush_s
                while events < self._max_events:
                    if reader.done():
                        reader.result()  # the reader's fatal error, raised here
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        upload, last_id = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    events += 1
                    if upload:
                        uploads.append(upload)
                yield Batch(uploads, events, last_id)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def stored(self, batch: Batch) -> None:
        pass  # the position went into the store with the uploads

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _read(
        self, last_id: str | None, queue: asyncio.Queue[tuple[Upload | None, str | None]]
    ) -> None:
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            params = {}
            if last_id:
                headers["Last-Event-ID"] = last_id
            elif self._since:
                params["since"] = self._since
            asked = None
            try:
                async with aconnect_sse(
                    self._http, "GET", self._url, headers=headers, params=params
                ) as source:
                    response = source.response
                    if response.status_code == 429 or response.status_code >= 500:
                        failure, asked = f"HTTP {response.status_code}", retry_after(response)
                    elif response.status_code != 200:
                        await response.aread()
                        raise StreamRefused(
                            f"{self._url} answered HTTP {response.status_code}: "
                            f"{response.text[:300]}"
                        )
                    else:
                        async for sse in source.aiter_sse():
                            if sse.event == "error":
                                # KafkaSSE reports a failed consumer so, then hangs up.
                                failure = f"the stream reported an error: {sse.data[:300]}"
                                break
                            if not sse.data:
                                continue  # a keepalive's empty event
                            last_id = sse.id or last_id
                            await queue.put((self._upload(sse.data), last_id))
                            attempt = 0
                        else:
                            failure = "the stream ended"
            except (httpx.TransportError, SSEError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            wait = pause(attempt, asked, backoff_s=self._backoff_s, max_s=self._max_pause_s)
            attempt += 1
            log.warning("%s: %s; reconnecting in %.1f s", self._url, failure, wait)
            await asyncio.sleep(wait)

    def _upload(self, data: str) -> Upload | None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("skipped an event that is not JSON: %r", data[:200])
            return None
        return upload_from(event, self._wiki) if isinstance(event, dict) else None


def kafka_consumer(
    brokers: str,
    group: str,
    *,
    offset_reset: str = "earliest",
    settings: Mapping[str, str] | None = None,
) -> Consumer:
    """A consumer in ``group``: the replicas of a group share the partitions, and offsets
    are committed by `KafkaEvents` only once the uploads they cover are stored. ``settings``
    adds librdkafka properties (TLS, timeouts) but cannot turn auto-commit back on."""
    return Consumer(
        {
            "client.id": "commons-moderation-watch",
            **(settings or {}),
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": offset_reset,
            "enable.auto.commit": False,
        }
    )


class KafkaEvents:
    """The event topics in Kafka (``eqiad.mediawiki.page-create``, ...) as an `EventSource`.

    The position lives in Kafka as the group's committed offsets, so nothing is saved in the
    store (`Batch.position` is None). The consumer is used from one thread: every call,
    and the rebalance callbacks that run inside `poll`, are serialised there. A revoked
    partition's messages still in the batch being collected are dropped: nothing of theirs
    was stored, and the partition's new owner reads them from the last commit.
    """

    def __init__(
        self,
        consumer: Consumer,
        topics: list[str],
        *,
        wiki: str = "commonswiki",
        name: str = "kafka",
        flush_s: float = FLUSH_S,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._topics = topics
        self._wiki = wiki
        self._flush_s = flush_s
        self._max_events = max_events
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._collecting: list[Message] = []

    async def batches(self, position: str | None) -> AsyncGenerator[Batch, None]:
        await self._call(
            self._consumer.subscribe,
            self._topics,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        while True:
            yield await self._call(self._collect)

    async def stored(self, batch: Batch) -> None:
        if batch.offsets:
            await self._call(self._commit, batch.offsets)

    async def aclose(self) -> None:
        try:
            await self._call(self._consumer.close)
        finally:
            self._thread.shutdown()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: fn(*args, **kwargs)
        )

    def _collect(self) -> Batch:
        self._collecting = []
        deadline = time.monotonic() + self._flush_s
        while len(self._collecting) < self._max_events:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            message = self._consumer.poll(min(left, 0.5))
            if message is None:
                continue
            if error := message.error():
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka: %s", error)  # librdkafka retries these by itself
                continue
            self._collecting.append(message)
        messages, self._collecting = self._collecting, []
        uploads = [u for m in messages if (u := self._upload(m))]
        return Batch(uploads, len(messages), offsets=_next_offsets(messages))

    def _commit(self, offsets: tuple[tuple[str, int, int], ...]) -> None:
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False
            )
        except KafkaException as exc:
            # A partition lost to a rebalance: its new owner reads these again, and the
            # pending table already holds their uploads.
            log.warning("Kafka: commit failed (%s); the new owner re-reads", exc.args[0])

    def _assigned(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("Kafka: assigned %s", _describe(partitions))

    def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._collecting[:] = [
            m for m in self._collecting if (m.topic(), m.partition()) not in gone
        ]
        log.info("Kafka: revoked %s", _describe(partitions))

    def _upload(self, message: Message) -> Upload | None:
        try:
            event = json.loads(message.value() or b"")
        except ValueError:
            log.warning(
                "skipped a message that is not JSON at %s/%d@%d",
                message.topic(), message.partition(), message.offset(),
            )  # fmt: skip
            return None
        return upload_from(event, self._wiki) if isinstance(event, dict) else None


def _next_offsets(messages: list[Message]) -> tuple[tuple[str, int, int], ...]:
    """Per partition, the offset after the last message: what a commit names."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        last[key] = max(last.get(key, -1), m.offset())
    return tuple((t, p, offset + 1) for (t, p), offset in sorted(last.items()))


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}/{p.partition}" for p in partitions) or "nothing"
