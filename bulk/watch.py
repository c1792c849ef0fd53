"""``commons-watch``: score new Commons uploads with every model once they have settled.

An upload is queued when its event arrives and scored ``--delay`` after it was made (48 h
by default), so that files deleted meanwhile (copyright violations, vandalism) are skipped
instead of scored. Two tasks run together: one reads the event source (`bulk.events`:
EventStreams or its Kafka topics) and queues each batch's uploads together with the
source's position in one transaction, then acknowledges the batch (Kafka offsets are
committed only then); the other, every few seconds, scores the due titles in batches
through each model, puts the scores in the store, then takes the titles off the queue. A
restart resumes from the saved position (or the group's committed offsets) and keeps the
queue. SIGINT or SIGTERM stops reading and lets the batch being scored finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from confluent_kafka import KafkaException

from bulk.events import (
    KAFKA_TOPICS,
    PAGE_CREATE,
    RECENT_CHANGE,
    USER_AGENT,
    Batch,
    EventSource,
    EventStreams,
    KafkaEvents,
    StreamRefused,
    kafka_consumer,
)
from bulk.retry import pause
from bulk.service import (
    MAX_TITLES,
    RETRYABLE_CODES,
    ScoringService,
    ServiceError,
    ServiceUnavailable,
    records,
)
from moderation.policy import Policy, load_policy
from store import Record, StoreError, WatchState, open_store
from store.scores import DEFAULT_DATABASE_URL

log = logging.getLogger(__name__)

MODELS = ("logo-detection", "nsfw-detection")
# The service's code for a title with no file behind it: deleted since the upload.
DELETED = "file_not_found"
SCORE_EVERY_S = 5.0
# How long a claimed title is left to its claimant: one whose scoring failed upstream
# (Commons, Triton) waits this long before another try, so a few such titles cannot take
# every batch, and one whose watcher died comes due again after it.
RETRY_HOLD_S = 300.0
# How long a stop waits for the batch being scored.
STOP_GRACE_S = 30.0
MAX_BACKOFF_S = 300.0
EXIT_FAILED = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+|\d+(?:\.\d+)?")
_UNIT = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_T = TypeVar("_T")


def parse_duration(text: str) -> timedelta:
    """``48h``, ``30m``, ``10s``, ``2d``, ``1h30m``, or seconds (``0``, ``2.5``)."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r} (try 48h, 30m, 10s or 0)")
    if text[-1].isdigit():
        return timedelta(seconds=float(text))
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
    return sum((timedelta(**{_UNIT[unit]: float(n)}) for n, unit in parts), timedelta())


@dataclass
class Counts:
    events: int = 0  # read from the source
    uploads: int = 0  # of them, uploads on the wiki
    queued: int = 0  # of those, new to the queue
    scored: int = 0  # titles stored with at least one model's scores
    deleted: int = 0  # titles gone from Commons when due: skipped
    refused: int = 0  # titles no model could score (not an image, corrupt...): dropped
    retrying: int = 0  # scoring attempts that failed upstream: the title stays queued


class Watcher:
    """Queues what ``source`` announces in ``state`` and scores it with ``services`` into
    ``state.store`` once due. `run` until `stop`, or `run_once`."""

    def __init__(
        self,
        source: EventSource,
        state: WatchState,
        services: Sequence[ScoringService],
        *,
        delay: timedelta,
        batch: int = MAX_TITLES,
        score_every_s: float = SCORE_EVERY_S,
        retry_hold_s: float = RETRY_HOLD_S,
        stop_grace_s: float = STOP_GRACE_S,
        policy: Policy | None = None,
    ) -> None:
        """``policy`` decides each stored result's review state (the packaged one if None)."""
        self.counts = Counts()
        self._policy = load_policy() if policy is None else policy
        self._source = source
        self._state = state
        self._services = services
        self._delay = delay
        self._batch = batch
        self._score_every_s = score_every_s
        self._retry_hold_s = retry_hold_s
        self._stop_grace_s = stop_grace_s
        self._stop = asyncio.Event()
        self._reported = Counts()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Read and score until `stop`; a failure of either task (the store or the source
        gone for good, a service that refuses its requests) stops both and is raised."""
        tasks = {asyncio.create_task(self._consume(None)), asyncio.create_task(self._scoring())}
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            self._stop.set()
            await asyncio.wait(pending, timeout=self._stop_grace_s)
            for task in pending:
                if task.done():
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._report(force=True)

    async def run_once(self, idle_s: float) -> None:
        """Read until no upload came for ``idle_s`` seconds, then score what is due."""
        try:
            await self._consume(idle_s)
            await self.score_due()
        finally:
            self._report(force=True)

    async def score_due(self) -> None:
        """Score every title due now, a batch at a time, until none is left (or `stop`)."""
        # A claim is good for retry_hold_s: titles whose scoring failed upstream stay queued
        # and come due again then, as do those of a watcher that died mid-batch.
        lease = timedelta(seconds=self._retry_hold_s)
        while not self._stop.is_set():
            titles = await asyncio.to_thread(
                self._state.claim, datetime.now(UTC), self._batch, lease
            )
            if not titles:
                return
            try:
                await self._score(titles)
            except (ServiceUnavailable, StoreError):
                # Nothing was stored: the titles are due again, for the next round.
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(self._state.release, titles, datetime.now(UTC))
                raise

    async def _consume(self, idle_s: float | None) -> None:
        position = await self._durably(lambda: self._state.position)
        last_upload = time.monotonic()
        batches = self._source.batches(position)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if batch.events:
                    await self._queue(batch)
                    await self._source.stored(batch)
                if batch.uploads:
                    last_upload = time.monotonic()
                if self._stop.is_set():
                    return
                if idle_s is not None and time.monotonic() - last_upload >= idle_s:
                    return

    async def _queue(self, batch: Batch) -> None:
        items = [(u.title, u.uploaded_at + self._delay) for u in batch.uploads]
        added = await self._durably(lambda: self._state.enqueue(items, batch.position))
        self.counts.events += batch.events
        self.counts.uploads += len(batch.uploads)
        self.counts.queued += added

    async def _durably(self, call: Callable[[], _T]) -> _T:
        """``call`` in a thread, retried while the store fails (unless stopping): a batch
        not queued is not acknowledged, so giving up loses nothing either."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(call)
            except StoreError as exc:
                if self._stop.is_set():
                    raise
                wait = pause(attempt, None, backoff_s=1.0, max_s=MAX_BACKOFF_S)
                attempt += 1
                log.warning("store: %s; retrying in %.1f s", exc, wait)
                await self._sleep(wait)

    async def _scoring(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self.score_due()
                failures, wait = 0, self._score_every_s
            except (ServiceUnavailable, StoreError) as exc:
                wait = pause(failures, None, backoff_s=self._score_every_s, max_s=MAX_BACKOFF_S)
                failures += 1
                log.warning("scoring paused for %.0f s: %s", wait, exc)
            self._report()
            await self._sleep(wait)

    async def _score(self, titles: list[str]) -> None:
        """Score ``titles`` with every model, store the scores, then unqueue the titles
        each model scored or refused, and those deleted; the rest wait for another try."""
        deleted: set[str] = set()
        failed: set[str] = set()
        scored: set[str] = set()
        found: list[Record] = []
        known: list[Record] = []
        for service in self._services:
            todo = [t for t in titles if t not in deleted and t not in failed]
            if not todo:
                break
            outcomes = await service.score(todo)
            found += records(outcomes, service.model, cached=False, policy=self._policy)
            known += records(outcomes, service.model, cached=True, policy=self._policy)
            for outcome in outcomes:
                if outcome.ok:
                    scored.add(outcome.title)
                elif outcome.code == DELETED:
                    deleted.add(outcome.title)
                elif outcome.code in RETRYABLE_CODES:
                    failed.add(outcome.title)
                else:
                    log.info(
                        "%s: %s refused it: %s: %s",
                        outcome.title, service.model, outcome.code, outcome.message,
                    )  # fmt: skip
        await asyncio.to_thread(self._state.store.put, found)
        await asyncio.to_thread(partial(self._state.store.put, known, replace=False))
        await asyncio.to_thread(self._state.remove, [t for t in titles if t not in failed])
        finished = set(titles) - failed - deleted
        self.counts.scored += len(finished & scored)
        self.counts.refused += len(finished - scored)
        self.counts.deleted += len(deleted)
        self.counts.retrying += len(failed)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on `stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _report(self, *, force: bool = False) -> None:
        if force or self.counts != self._reported:
            self._reported = Counts(**asdict(self.counts))
            log.info(
                "%s",
                ", ".join(f"{name} {value}" for name, value in asdict(self.counts).items()),
            )


class Source(StrEnum):
    sse = "sse"
    kafka = "kafka"


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def watch(
    source: Source = typer.Option(
        Source.sse, help="sse: Wikimedia EventStreams; kafka: its Kafka topics (production)."
    ),
    stream_url: str = typer.Option("https://stream.wikimedia.org", help="EventStreams."),
    stream: str = typer.Option(PAGE_CREATE, help=f"Or {RECENT_CHANGE} (the upload log)."),
    since: str | None = typer.Option(
        None, help="sse, with no saved position: start here (ISO 8601 or Unix ms), not now."
    ),
    wiki: str = typer.Option("commonswiki", help="Only uploads on this wiki."),
    kafka_brokers: str | None = typer.Option(None, help="host:port[,host:port...]"),
    kafka_topic: list[str] = typer.Option(list(KAFKA_TOPICS), help="Topic (repeatable)."),
    kafka_group: str = typer.Option(
        "commons-moderation-watch", help="Consumer group: replicas in one share the topics."
    ),
    kafka_offset_reset: str = typer.Option(
        "earliest", help="Where a group without committed offsets starts: earliest, latest."
    ),
    kafka_setting: list[str] = typer.Option(
        [], help="librdkafka property KEY=VALUE (repeatable), e.g. security.protocol=SSL."
    ),
    delay: str = typer.Option("48h", help="Wait this long after an upload (48h, 30m, 10s, 0)."),
    model: list[str] = typer.Option(list(MODELS), help="Model to score with (repeatable)."),
    service: str = typer.Option("http://127.0.0.1:8080", help="The scoring service."),
    database_url: str = typer.Option(DEFAULT_DATABASE_URL, envvar="DATABASE_URL"),
    batch: int = typer.Option(MAX_TITLES, min=1, max=MAX_TITLES, help="Titles per request."),
    once: bool = typer.Option(
        False, "--once", help="Read until no upload came for --idle, score what is due, exit."
    ),
    idle: str = typer.Option("10s", help="With --once: how long without uploads ends reading."),
    user_agent: str = typer.Option(USER_AGENT, help="User-Agent for EventStreams and the service."),
    policy: Path | None = typer.Option(
        None, envvar="MODERATION_POLICY", help="Moderation policy file (default: the packaged one)."
    ),
) -> None:
    """Queue new uploads as they are announced and score each with every model once it is
    --delay old; started again, it resumes where it stopped."""
    try:
        wait, idle_s = parse_duration(delay), parse_duration(idle).total_seconds()
    except ValueError as exc:
        _usage(str(exc))
    if source is Source.kafka and not kafka_brokers:
        _usage("--source kafka needs --kafka-brokers")
    if since is not None and source is not Source.sse:
        _usage("--since is for --source sse; a Kafka group resumes from its commits")
    if any("=" not in item for item in kafka_setting):
        _usage("--kafka-setting takes KEY=VALUE")
    settings = dict(item.partition("=")[::2] for item in kafka_setting)
    try:
        moderation = load_policy(policy)
    except ValueError as exc:
        _usage(str(exc))
    if since is not None and not since.isdigit():
        try:
            datetime.fromisoformat(since)
        except ValueError:
            _usage(f"--since takes ISO 8601 or Unix milliseconds, not {since!r}")

    def event_source() -> EventSource:
        if source is Source.sse:
            return EventStreams(
                stream_url, stream=stream, wiki=wiki, since=since, user_agent=user_agent
            )
        assert kafka_brokers
        consumer = kafka_consumer(
            kafka_brokers, kafka_group, offset_reset=kafka_offset_reset, settings=settings
        )
        return KafkaEvents(consumer, kafka_topic, wiki=wiki, name=f"kafka:{kafka_group}/{wiki}")

    async def main() -> None:
        store = await asyncio.to_thread(open_store, database_url)
        async with AsyncExitStack() as stack:
            stack.callback(store.dispose)
            events = event_source()
            stack.push_async_callback(events.aclose)
            services = [
                await stack.enter_async_context(ScoringService(service, m, user_agent=user_agent))
                for m in dict.fromkeys(model)
            ]
            watcher = Watcher(
                events,
                WatchState(store, events.name),
                services,
                delay=wait,
                batch=batch,
                policy=moderation,
            )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, watcher.stop)
            log.info("watching %s; scoring with %s after %s", events.name, ", ".join(model), wait)
            await (watcher.run_once(idle_s) if once else watcher.run())

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        asyncio.run(main())
    except (StoreError, ServiceError, StreamRefused, KafkaException) as exc:
        typer.echo(f"commons-watch: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc


def _usage(message: str) -> NoReturn:
    typer.echo(f"commons-watch: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


if __name__ == "__main__":
    app()
