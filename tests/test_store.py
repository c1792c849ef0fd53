"""The score store, the backfill's job log and the watcher's state, on SQLite and on a real
PostgreSQL server (`store_url` runs each test on both)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect

from store import JobLog, Key, Record, ScoreStore, StoreError, WatchState, open_store
from store.migrate import config
from store.schema import Base

TABLES = {
    "scores",
    "titles",
    "backfill_jobs",
    "backfill_items",
    "watch_positions",
    "watch_pending",
    "verdicts",
    "review_sessions",
}


def sha1(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


@pytest.fixture
def store(store_url: str) -> Iterator[ScoreStore]:
    opened = open_store(store_url)
    yield opened
    opened.dispose()


def test_migrating_again_changes_nothing(store: ScoreStore) -> None:
    key = Key(sha1(1), "logo-detection", "2")
    store.put([Record(key, {"logo": 0.5})])
    store.migrate()
    assert store.get([key])[key].scores == {"logo": 0.5}
    head = ScriptDirectory.from_config(config(store.url)).get_current_head()
    with store.transaction(write=False) as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
        assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}


def test_schema_matches_migrations(store: ScoreStore) -> None:
    with store.transaction(write=False) as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_round_trip(store: ScoreStore) -> None:
    video = Record(
        Key(sha1(1), "nsfw-video-detection", "1"),
        {"nsfw": 0.25, "out_of_domain": 0.75},
        mime="video/webm",
        size=12_345_678_901,
        video={"frames": 12, "peak": {"nsfw": 0.9, "at_s": 3.5}, "codec": "vp8"},
        scored_at=datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        titles=("File:B.webm", "File:A.webm"),
    )
    before = datetime.now(UTC)
    image = Record(Key(sha1(2), "logo-detection", "2"), {"logo": 0.93}, mime="image/png")
    store.put([video, image])
    got = store.get([video.key, image.key])

    assert got[video.key] == dataclasses.replace(
        video,
        scored_at=datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        titles=("File:A.webm", "File:B.webm"),
    )
    assert got[video.key].scored_at.tzinfo == UTC
    stamped = got[image.key]
    assert stamped.scored_at is not None
    assert before <= stamped.scored_at <= datetime.now(UTC)
    assert stamped == dataclasses.replace(image, scored_at=stamped.scored_at)
    assert stamped.video is None and stamped.size is None


def test_another_model_version_is_a_miss(store: ScoreStore) -> None:
    key = Key(sha1(1), "logo-detection", "2")
    store.put([Record(key, {"logo": 0.9})])
    newer = dataclasses.replace(key, version="3")
    other_model = dataclasses.replace(key, model="nsfw-detection")
    assert store.get([newer]) == {}
    assert store.get([other_model]) == {}
    assert set(store.get([key, newer, other_model])) == {key}


def test_upsert_keeps_what_the_new_record_lacks(store: ScoreStore) -> None:
    key = Key(sha1(1), "nsfw-video-detection", "1")
    first = datetime(2024, 1, 1, tzinfo=UTC)
    store.put(
        [Record(key, {"nsfw": 0.1}, "video/mp4", 2048, {"frames": 4}, first, ("File:Old.mp4",))]
    )
    later = first + timedelta(days=1)
    store.put([Record(key, {"nsfw": 0.2}, scored_at=later, titles=("File:New.mp4",))])

    got = store.get([key])[key]
    assert (got.scores, got.scored_at) == ({"nsfw": 0.2}, later)
    assert (got.mime, got.size, got.video) == ("video/mp4", 2048, {"frames": 4})
    assert got.titles == ("File:New.mp4", "File:Old.mp4")

    store.put([Record(key, {"nsfw": 0.3}, mime="video/webm", video={"frames": 9})])
    got = store.get([key])[key]
    assert (got.mime, got.size, got.video) == ("video/webm", 2048, {"frames": 9})
    # Titles belong to the file, whichever model scored it.
    other = Key(key.sha1, "logo-detection", "2")
    store.put([Record(other, {"logo": 0.4})])
    assert store.get([other])[other].titles == ("File:New.mp4", "File:Old.mp4")


def test_put_without_replace_keeps_the_stored_scores_and_adds_titles(store: ScoreStore) -> None:
    key = Key(sha1(3), "logo-detection", "2")
    first = datetime(2024, 1, 1, tzinfo=UTC)
    store.put([Record(key, {"logo": 0.7}, scored_at=first, titles=("File:A.png",))])
    store.put(
        [
            Record(key, {"logo": 0.1}, titles=("File:B.png",)),
            Record(Key(sha1(4), "logo-detection", "2"), {"logo": 0.2}),
        ],
        replace=False,
    )
    got = store.get([key, Key(sha1(4), "logo-detection", "2")])
    assert (got[key].scores, got[key].scored_at) == ({"logo": 0.7}, first)
    assert got[key].titles == ("File:A.png", "File:B.png")
    assert len(got) == 2, "a row not stored yet is inserted"


def test_a_statement_timeout_turns_a_held_lock_into_a_store_error(store_url: str) -> None:
    holder, waiter = open_store(store_url), open_store(store_url, statement_timeout_s=0.3)
    key = Key(sha1(5), "logo-detection", "2")
    holder.put([Record(key, {"logo": 0.5})])
    try:
        with holder.transaction() as conn:
            # Hold the row (PostgreSQL) or the database (SQLite) for write.
            conn.exec_driver_sql("UPDATE scores SET mime = 'x/y'")
            start = time.monotonic()
            with pytest.raises(StoreError):
                waiter.put([Record(key, {"logo": 0.6})])
            assert time.monotonic() - start < 5
    finally:
        holder.dispose()
        waiter.dispose()


def test_a_migration_is_not_held_to_the_statement_timeout(store_url: str) -> None:
    """Indexing a full table outlasts the serving statement timeout (the transformer opens
    the store with 1 s and may migrate it): here every index takes 0.5 s against 0.2 s."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has no statement timeout")
    store = ScoreStore(store_url, statement_timeout_s=0.2)

    @event.listens_for(store._engine, "before_cursor_execute")
    def slow_indexes(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("CREATE INDEX"):
            cursor.execute("SELECT pg_sleep(0.5)")

    try:
        store.migrate()
        assert TABLES <= set(inspect(store._engine).get_table_names())
    finally:
        store.dispose()


def test_note_titles(store: ScoreStore) -> None:
    key = Key(sha1(1), "logo-detection", "2")
    store.note_titles([(key.sha1, "File:X.png"), (key.sha1, "File:X.png"), (sha1(2), "File:Y.png")])
    assert store.get([Key(sha1(2), "logo-detection", "2")]) == {}
    store.put([Record(key, {"logo": 0.5}, titles=("File:Z.png",))])
    store.note_titles([(key.sha1, "File:X.png"), (key.sha1, "File:W.png")])
    assert store.get([key])[key].titles == ("File:W.png", "File:X.png", "File:Z.png")
    with pytest.raises(ValueError):
        store.note_titles([("ABC", "File:Bad.png")])


def test_get_1200_keys_in_one_call(store: ScoreStore) -> None:
    logo = [Key(sha1(n), "logo-detection", "2") for n in range(900)]
    nsfw = [Key(sha1(n), "nsfw-detection", "1") for n in range(300)]
    store.put(Record(key, {"score": n / 1200}) for n, key in enumerate(logo + nsfw))
    missing = [Key(sha1(n), "logo-detection", "3") for n in range(100)]
    got = store.get(logo + missing + nsfw)
    assert set(got) == set(logo + nsfw)
    assert got[nsfw[-1]].scores == {"score": 1199 / 1200}


def test_unreachable_postgres_fails_fast() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as sockets:
        # Nothing listens here: refused at once.
        url = f"postgresql+psycopg://postgres@/postgres?host={sockets}/none&port=5432"
        with pytest.raises(StoreError):
            open_store(url)
        # A socket that accepts but never answers: only the connect timeout ends the wait.
        with socket.socket(socket.AF_UNIX) as silent:
            silent.bind(f"{sockets}/.s.PGSQL.5432")
            silent.listen()
            started = time.monotonic()
            with pytest.raises(StoreError):
                open_store(f"postgresql+psycopg://postgres@/postgres?host={sockets}&port=5432")
            assert time.monotonic() - started < 5


def test_unusable_sqlite_path_is_a_store_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{not_a_dir}/store/scores.sqlite3")
    # A directory where the database file should be: SQLite cannot open it.
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{tmp_path}")


def test_job_start_and_spec_mismatch(store: ScoreStore) -> None:
    spec = {"category": "Logos", "depth": 2, "models": ["logo-detection"]}
    assert JobLog(store, "logos").start(spec) is True
    assert JobLog(store, "logos").start(dict(reversed(spec.items()))) is False
    with pytest.raises(ValueError):
        JobLog(store, "logos").start({**spec, "depth": 3})
    assert JobLog(store, "other").start({**spec, "depth": 3}) is True


def test_save_page_dedupes_and_keeps_order(store: ScoreStore) -> None:
    log = JobLog(store, "job")
    with pytest.raises(ValueError):
        log.save_page(["File:A.png"], None, done=False)
    log.start({})
    assert (log.cursor, log.enumerated) == (None, False)
    assert (
        log.save_page(
            ["File:C.png", "File:A.png", "File:C.png", "File:B.png"], {"c": 1}, done=False
        )
        == 3
    )
    assert log.save_page(["File:B.png", "File:D.png"], {"c": "x|y"}, done=False) == 1
    assert (log.cursor, log.enumerated) == ({"c": "x|y"}, False)
    assert log.pending(10) == [
        (0, "File:C.png"),
        (1, "File:A.png"),
        (2, "File:B.png"),
        (3, "File:D.png"),
    ]
    assert log.save_page([], None, done=True) == 0
    assert (log.cursor, log.enumerated) == (None, True)
    # Another job keeps its own titles and numbering.
    other = JobLog(store, "other")
    other.start({})
    assert other.save_page(["File:D.png"], None, done=True) == 1
    assert other.pending(10) == [(0, "File:D.png")]


def test_a_second_log_resumes_the_job(store: ScoreStore) -> None:
    first = JobLog(store, "job")
    first.start({"category": "Logos"})
    titles = [f"File:{n}.png" for n in range(10)]
    first.save_page(titles, {"gcmcontinue": "file|5"}, done=False)
    first.finish([(titles[0], sha1(0)), (titles[1], None)], [(titles[2], "timeout", "slow")])

    restarted = open_store(store.url)
    try:
        resumed = JobLog(restarted, "job")
        assert resumed.start({"category": "Logos"}) is False
        assert (resumed.cursor, resumed.enumerated) == ({"gcmcontinue": "file|5"}, False)
        assert resumed.pending(100) == [(n, titles[n]) for n in range(3, 10)]
        assert resumed.pending(3) == [(n, titles[n]) for n in range(3, 6)]
        assert resumed.pending(3, after_seq=5) == [(n, titles[n]) for n in range(6, 9)]
    finally:
        restarted.dispose()


def test_finish_counts_errors_and_retry(store: ScoreStore) -> None:
    log = JobLog(store, "job")
    log.start({})
    assert log.counts() == {"pending": 0, "done": 0, "error": 0}
    log.save_page(["a", "b", "c", "d", "e"], None, done=True)
    log.finish(
        [("a", sha1(1)), ("b", None)],
        [("d", "timeout", "took 30 s"), ("c", "http-404", "gone")],
    )
    assert log.counts() == {"pending": 1, "done": 2, "error": 2}
    assert log.errors() == [("c", "http-404", "gone"), ("d", "timeout", "took 30 s")]
    assert log.pending(10) == [(4, "e")]

    assert log.retry(["timeout"]) == 1
    assert log.errors() == [("c", "http-404", "gone")]
    assert log.pending(10) == [(3, "d"), (4, "e")]
    assert log.retry([]) == 0
    assert log.retry() == 1
    assert log.counts() == {"pending": 3, "done": 2, "error": 0}
    assert log.retry() == 0


def test_enqueue_dedupes_and_saves_position(store: ScoreStore) -> None:
    state = WatchState(store, "sse:https://stream.example/v2/stream/mediawiki.page-create")
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert state.position is None
    assert state.enqueue([("File:A.png", t), ("File:B.png", t), ("File:A.png", t)], "[1]") == 2
    assert state.position == "[1]"
    assert state.enqueue([("File:A.png", t - timedelta(hours=1)), ("File:C.png", t)], None) == 1
    assert state.position == "[1]"
    assert state.pending_count() == 3
    # A queued title keeps its first due time.
    assert state.due(t - timedelta(minutes=1), 10) == []
    assert state.enqueue([], '[{"offset": 7}]') == 0
    assert state.position == '[{"offset": 7}]'


def test_due_order_and_remove(store: ScoreStore) -> None:
    state = WatchState(store, "kafka:uploads")
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    state.enqueue(
        [
            ("File:Later.png", now + timedelta(minutes=5)),
            ("File:Now.png", now),
            # 13:00 at +02:00 is 11:00 UTC: the earliest.
            ("File:Earliest.png", datetime(2024, 6, 1, 13, tzinfo=plus_two)),
            ("File:Middle.png", now - timedelta(minutes=30)),
        ],
        None,
    )
    assert state.due(now, 10) == ["File:Earliest.png", "File:Middle.png", "File:Now.png"]
    assert state.due(now.astimezone(plus_two), 2) == ["File:Earliest.png", "File:Middle.png"]
    state.remove(["File:Middle.png", "File:Unknown.png"])
    assert state.due(now, 10) == ["File:Earliest.png", "File:Now.png"]
    assert state.pending_count() == 3
    with pytest.raises(ValueError):
        state.due(datetime(2024, 6, 1, 12), 10)


def test_claims_are_exclusive_until_the_lease_ends(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    try:
        first = WatchState(stores[0], "kafka:group/commonswiki")
        t = datetime(2024, 1, 1, tzinfo=UTC)
        first.enqueue([(f"File:{i:03d}.png", t) for i in range(200)], None)
        lease = timedelta(minutes=5)
        # Four replicas claiming at once get disjoint batches that cover the queue.
        with ThreadPoolExecutor(4) as pool:
            claims = list(pool.map(
                lambda s: [t2 for _ in range(5) for t2 in
                           WatchState(s, first.source).claim(t, 10, lease)],
                stores,
            ))  # fmt: skip
        claimed = [title for batch in claims for title in batch]
        assert len(claimed) == len(set(claimed)) == 200
        assert first.claim(t, 10, lease) == [], "every title is claimed"
        # Not removed within the lease (a crash, an upstream failure): due again after it.
        first.remove(claimed[:150])
        again = first.claim(t + lease, 100, lease)
        assert sorted(again) == sorted(claimed[150:])
        # Given back unattempted: due at once.
        first.release(again[:5], t + lease)
        assert first.claim(t + lease, 100, lease) == again[:5]
    finally:
        for s in stores:
            s.dispose()


def test_sources_are_independent(store: ScoreStore) -> None:
    sse, kafka = WatchState(store, "sse:a"), WatchState(store, "kafka:b")
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert sse.enqueue([("File:A.png", t)], "s1") == 1
    assert kafka.enqueue([("File:A.png", t), ("File:B.png", t)], "k1") == 2
    sse.remove(["File:A.png"])
    assert (sse.position, sse.pending_count(), sse.due(t, 10)) == ("s1", 0, [])
    assert (kafka.position, kafka.due(t, 10)) == ("k1", ["File:A.png", "File:B.png"])


def _together(*work: Callable[[], None]) -> None:
    """Run each callable in its own thread, all released at once; re-raise a failure."""
    start = threading.Barrier(len(work))

    def run(task: Callable[[], None]) -> None:
        start.wait(timeout=30)
        task()

    with ThreadPoolExecutor(len(work)) as pool:
        for future in [pool.submit(run, task) for task in work]:
            future.result(timeout=60)


def test_concurrent_puts_of_the_same_keys(store: ScoreStore) -> None:
    # Small puts, many rounds, each writer in its own key order: without a common lock
    # order PostgreSQL finds deadlocks here within a few rounds.
    keys = [Key(sha1(n), "logo-detection", "2") for n in range(50)]

    def writer(seed: int) -> Callable[[], None]:
        def write() -> None:
            order = random.Random(seed).sample(keys, len(keys))
            for _ in range(10):
                store.put(Record(key, {"logo": seed}, titles=(f"File:{seed}",)) for key in order)

        return write

    _together(*(writer(seed) for seed in range(4)))
    got = store.get(keys)
    assert set(got) == set(keys)
    assert all(record.titles == ("File:0", "File:1", "File:2", "File:3") for record in got.values())


def test_concurrent_pages_of_one_job(store: ScoreStore) -> None:
    JobLog(store, "job").start({})
    other = open_store(store.url, migrate=False)
    try:
        added: list[int] = []

        def save(log: JobLog, first: int) -> Callable[[], None]:
            page = [f"File:{n}" for n in range(first, first + 100)]
            return lambda: added.append(log.save_page(page, None, done=False))

        _together(save(JobLog(store, "job"), 0), save(JobLog(other, "job"), 50))
    finally:
        other.dispose()
    pending = JobLog(store, "job").pending(1000)
    assert sorted(added) == [50, 100]
    assert [seq for seq, _ in pending] == list(range(150))
    assert {title for _, title in pending} == {f"File:{n}" for n in range(150)}
