"""Scores keyed by the file's SHA-1 and the model version, on SQLite or PostgreSQL.

A file's bytes, not its title, decide its scores: a re-upload under another title, or a
rename, is a cache hit, and a new model version is always a miss.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby, islice
from pathlib import Path
from typing import Any, TypeVar

from alembic.util import CommandError
from sqlalchemy import Connection, Table, and_, create_engine, event, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from store.migrate import upgrade
from store.schema import Score, Title, utc

# The embedded store every command and the review page use unless told another.
DEFAULT_DATABASE_URL = "sqlite:///build/store/scores.sqlite3"
# Rows or keys per statement: well inside every bind-parameter limit, and a query plan
# the databases handle without fuss.
CHUNK = 500
# How long a SQLite writer waits for another one's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_SHA1 = re.compile(r"[0-9a-f]{40}")
_T = TypeVar("_T")


class StoreError(Exception):
    """The database failed: unreachable, unwritable, or refused a statement."""


def check_sha1(sha1: str) -> str:
    if not _SHA1.fullmatch(sha1):
        raise ValueError(f"not a lowercase hex SHA-1: {sha1!r}")
    return sha1


@dataclass(frozen=True)
class Key:
    sha1: str
    model: str
    version: str

    def __post_init__(self) -> None:
        check_sha1(self.sha1)


@dataclass(frozen=True)
class Record:
    key: Key
    scores: dict[str, float]
    mime: str | None = None
    size: int | None = None
    video: dict[str, Any] | None = None
    scored_at: datetime | None = None
    titles: tuple[str, ...] = ()
    # The moderation policy's decision on these scores (``moderation.policy``), when one
    # was made: the state, why, which policy version, and the score it read.
    state: str | None = None
    reason: str | None = None
    policy_version: str | None = None
    policy_score: float | None = None


def chunks(items: Iterable[_T], size: int = CHUNK) -> Iterator[list[_T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _key_order(key: Key) -> tuple[str, str, str]:
    return key.model, key.version, key.sha1


def dialect_insert(conn: Connection, table: type[Any] | Table) -> Any:
    """An INSERT with the dialect's ON CONFLICT clauses."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


class ScoreStore:
    def __init__(
        self, url: str, *, connect_timeout_s: float = 2.0, statement_timeout_s: float | None = None
    ) -> None:
        """``statement_timeout_s`` bounds each statement and each wait for a lock (SQLite's
        busy timeout, else 30 s; PostgreSQL's statement and lock timeouts, else none): a
        caller that must answer quickly gets a StoreError instead of a thread stuck waiting."""
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            # Not the parser's message: it quotes the URL, password and all.
            raise StoreError("not a database URL") from exc
        self._name = parsed.render_as_string(hide_password=True)
        try:
            if parsed.get_backend_name() == "sqlite":
                busy_ms = (
                    SQLITE_BUSY_TIMEOUT_MS
                    if statement_timeout_s is None
                    else max(1, round(statement_timeout_s * 1000))
                )
                self._engine = self._sqlite_engine(url, parsed.database, busy_ms)
            elif parsed.get_backend_name() == "postgresql":
                # libpq takes whole seconds and treats anything below 2 as 2.
                timeout = max(2, round(connect_timeout_s))
                connect_args: dict[str, Any] = {"connect_timeout": timeout}
                if statement_timeout_s is not None:
                    ms = max(1, round(statement_timeout_s * 1000))
                    connect_args["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms}"
                self._engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
            else:
                raise StoreError(f"{self._name}: only sqlite and postgresql URLs are supported")
        except (SQLAlchemyError, OSError, ImportError) as exc:
            # ImportError: a driver that is not installed (postgresql+psycopg2://, ...).
            raise StoreError(f"{self._name}: {exc}") from exc

    @staticmethod
    def _sqlite_engine(url: str, database: str | None, busy_ms: int) -> Engine:
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy, not the driver, issues BEGIN: writers need BEGIN IMMEDIATE, or two
            # read-then-write transactions fail at once instead of waiting on the lock.
            dbapi_connection.isolation_level = None
            dbapi_connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            # Readers (the API's lookups) then never wait on the backfill's writes.
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("store_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction, committed on success; database errors come out as StoreError.

        ``write``: SQLite takes its write lock at the start rather than midway.
        """
        try:
            with self._engine.connect() as conn:
                conn.execution_options(store_write=write)
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
            raise StoreError(f"{self._name}: {type(orig).__name__}: {orig}") from exc

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a no-op when it is there already."""
        try:
            with self.transaction() as conn:
                if conn.dialect.name == "postgresql":
                    # A migration may index or rewrite a whole table, which outlasts a serving
                    # statement timeout: it runs without one. The session's lock_timeout stays:
                    # one that cannot get its lock soon fails and is retried later. Once it
                    # holds the lock, writes to that table wait for it (DEPLOY.md).
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                upgrade(self.url, connection=conn)
        except CommandError as exc:
            raise StoreError(f"{self._name}: {exc}") from exc

    def get(self, keys: Iterable[Key]) -> dict[Key, Record]:
        """The stored records among ``keys``, with their titles; missing keys are absent."""
        wanted = sorted(set(keys), key=_key_order)
        if not wanted:
            return {}
        rows: list[Any] = []
        with self.transaction(write=False) as conn:
            for chunk in chunks(wanted):
                rows.extend(conn.execute(select(Score).where(_matching(chunk))).all())
            titles: dict[str, list[str]] = {}
            for sha1s in chunks(sorted({row.sha1 for row in rows})):
                found = select(Title.sha1, Title.title).where(Title.sha1.in_(sha1s))
                for sha1, title in conn.execute(found.order_by(Title.sha1, Title.title)):
                    titles.setdefault(sha1, []).append(title)
        records = {}
        for row in rows:
            key = Key(row.sha1, row.model, row.model_version)
            records[key] = Record(
                key=key,
                scores=row.scores,
                mime=row.mime,
                size=row.size,
                video=row.video,
                scored_at=row.scored_at,
                titles=tuple(titles.get(row.sha1, ())),
                state=row.state,
                reason=row.reason,
                policy_version=row.policy_version,
                policy_score=row.policy_score,
            )
        return records

    def put(self, records: Iterable[Record], *, replace: bool = True) -> None:
        """Upsert ``records`` in one transaction.

        A stored row takes the new scores, scored_at and video, but keeps its mime, size
        and video where the new record has None; titles add to those already seen. The
        decision (state, reason, policy version and score) always comes with the new
        scores, None included: one made on the old scores no longer applies. With
        ``replace=False`` a stored row is left as it is (scores someone else already had
        scored: their time scored stays theirs) and only its titles are added.
        """
        now = datetime.now(UTC)
        latest: dict[Key, Record] = {}
        pairs: set[tuple[str, str]] = set()
        for record in records:
            latest[record.key] = record
            pairs.update((record.key.sha1, title) for title in record.titles)
        rows = [
            {
                "sha1": r.key.sha1,
                "model": r.key.model,
                "model_version": r.key.version,
                "scores": r.scores,
                "mime": r.mime,
                "size": r.size,
                "video": r.video,
                "scored_at": now if r.scored_at is None else utc(r.scored_at),
                "state": r.state,
                "reason": r.reason,
                "policy_version": r.policy_version,
                "policy_score": r.policy_score,
            }
            for r in (latest[key] for key in sorted(latest, key=_key_order))
        ]
        with self.transaction() as conn:
            # Sorted rows lock in one order, so concurrent puts of the same keys queue
            # behind each other instead of deadlocking.
            table = Score.__table__.c
            for chunk in chunks(rows):
                insert = dialect_insert(conn, Score).values(chunk)
                if not replace:
                    conn.execute(insert.on_conflict_do_nothing())
                    continue
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[table.sha1, table.model, table.model_version],
                        set_={
                            "scores": insert.excluded.scores,
                            "scored_at": insert.excluded.scored_at,
                            "mime": func.coalesce(insert.excluded.mime, table.mime),
                            "size": func.coalesce(insert.excluded.size, table.size),
                            "video": func.coalesce(insert.excluded.video, table.video),
                            "state": insert.excluded.state,
                            "reason": insert.excluded.reason,
                            "policy_version": insert.excluded.policy_version,
                            "policy_score": insert.excluded.policy_score,
                        },
                    )
                )
            _add_titles(conn, pairs, now)

    def note_titles(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Remember that file ``sha1`` was seen under ``title``, for each (sha1, title)."""
        checked = {(check_sha1(sha1), title) for sha1, title in pairs}
        with self.transaction() as conn:
            _add_titles(conn, checked, datetime.now(UTC))

    def dispose(self) -> None:
        self._engine.dispose()


def _matching(keys: Sequence[Key]) -> Any:
    """A WHERE clause for ``keys``, sorted by model version: per model version, an IN list
    of SHA-1s, which both databases answer from the primary key."""
    return or_(
        *(
            and_(
                Score.model == model,
                Score.model_version == version,
                Score.sha1.in_([key.sha1 for key in group]),
            )
            for (model, version), group in groupby(keys, lambda key: (key.model, key.version))
        )
    )


def _add_titles(conn: Connection, pairs: set[tuple[str, str]], now: datetime) -> None:
    rows = [{"sha1": sha1, "title": title, "first_seen": now} for sha1, title in sorted(pairs)]
    for chunk in chunks(rows):
        conn.execute(dialect_insert(conn, Title).values(chunk).on_conflict_do_nothing())


def open_store(
    url: str, *, migrate: bool = True, statement_timeout_s: float | None = None
) -> ScoreStore:
    """A store on ``url``, its schema migrated to the newest version unless told not to."""
    store = ScoreStore(url, statement_timeout_s=statement_timeout_s)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.dispose()
            raise
    return store
