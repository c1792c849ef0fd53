"""The store's tables. The migrations in ``store/migrations`` create exactly these; a test
compares the two on SQLite and PostgreSQL.

Values are filled by the code, never by server defaults, so both databases hold the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SHA1_LENGTH = 40
TITLE_LENGTH = 512
# A model's name, a model version (with its scoring variant) and a policy version.
MODEL_LENGTH = 64
VERSION_LENGTH = 64
POLICY_VERSION_LENGTH = 64
# The longest moderation state, verdict and verdict sample (``store.review``) fit these; a
# test holds every value to them.
STATE_LENGTH = 16
VERDICT_LENGTH = 16
SAMPLE_LENGTH = 8
REVIEWER_LENGTH = 128


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused since its zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: give it a timezone")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases.

    SQLite keeps no offset, so values go in as UTC (and compare as text in UTC order) and
    come back naive, to be read as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Python None is SQL NULL, not JSON null, so COALESCE can keep an earlier value.
NullableJSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={"ix": "ix_%(table_name)s_%(column_0_N_name)s", "pk": "pk_%(table_name)s"}
    )


class Score(Base):
    """One model version's scores for one file's bytes, and the moderation policy's
    decision on them (NULL until a policy has decided)."""

    __tablename__ = "scores"
    # The review queue: rows in a given state, per model.
    __table_args__ = (Index(None, "state", "model"),)

    sha1: Mapped[str] = mapped_column(String(SHA1_LENGTH), primary_key=True)
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(VERSION_LENGTH), primary_key=True)
    scores: Mapped[dict[str, float]] = mapped_column(JSON)
    mime: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    video: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    reason: Mapped[str | None] = mapped_column(Text)
    policy_version: Mapped[str | None] = mapped_column(String(POLICY_VERSION_LENGTH))
    # The score the policy read (a label's score, or a video's maximum): the queue's order.
    policy_score: Mapped[float | None] = mapped_column(Float)


class ReviewVerdict(Base):
    """A reviewer's verdict on a file for one model: append-only, the latest one (by id,
    the order they were recorded in) counts. About the file, not a model version, so it
    outlives re-scoring and policy changes."""

    __tablename__ = "verdicts"
    __table_args__ = (Index(None, "sha1", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha1: Mapped[str] = mapped_column(String(SHA1_LENGTH))
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH))
    verdict: Mapped[str] = mapped_column(String(VERDICT_LENGTH))
    reviewer: Mapped[str] = mapped_column(String(REVIEWER_LENGTH))
    # The reviewer's clock, as recorded: never what decides which verdict is the latest.
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    # Where the verdict was given from: the flagged queue or the audit sample.
    sample: Mapped[str] = mapped_column(String(SAMPLE_LENGTH))


class ReviewSession(Base):
    """Per reviewer, the generation of their page sessions: a session cookie names the
    generation it was issued in, and logging out moves to the next one, so a copy of the
    cookie stops working too."""

    __tablename__ = "review_sessions"

    reviewer: Mapped[str] = mapped_column(String(REVIEWER_LENGTH), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)


class Title(Base):
    """A Commons title a file was seen under; several titles can share one file."""

    __tablename__ = "titles"
    __table_args__ = (Index(None, "title"),)

    sha1: Mapped[str] = mapped_column(String(SHA1_LENGTH), primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)


class BackfillJob(Base):
    __tablename__ = "backfill_jobs"

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    enumerated: Mapped[bool] = mapped_column(Boolean)
    next_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BackfillItem(Base):
    __tablename__ = "backfill_items"
    __table_args__ = (Index(None, "job", "state", "seq"),)

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(8))
    sha1: Mapped[str | None] = mapped_column(String(SHA1_LENGTH))
    code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WatchPosition(Base):
    __tablename__ = "watch_positions"

    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    position: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WatchPending(Base):
    __tablename__ = "watch_pending"
    __table_args__ = (Index(None, "source", "due_at"),)

    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
