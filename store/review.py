"""Review over the score store: the queue of files a moderation policy flagged, reviewers'
verdicts on them, and re-deciding stored results under a new policy.

A verdict is about a file (its SHA-1) for one model, not about a model version or a policy
version, so it survives re-scoring and policy changes; the latest verdict counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, and_, bindparam, case, exists, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import aliased

from store.schema import MODEL_LENGTH, REVIEWER_LENGTH, ReviewVerdict, Score, Title, utc
from store.scores import CHUNK, ScoreStore, check_sha1, chunks

# The moderation policy's states, review priority highest first (moderation.policy re-exports
# them; they live here because the queue orders by them).
STATES: tuple[str, ...] = ("withhold_all", "withhold_popular", "needs_review", "ok")
OK = "ok"
# confirmed: the file is what the model looks for (a non-free logo, NSFW); rejected: it is not.
VERDICTS: tuple[str, ...] = ("confirmed", "rejected")
MAX_PAGE = 200
NOTE_LENGTH = 2000


class DecidingPolicy(Protocol):
    """What ``apply_policy`` needs of a ``moderation.policy.Policy``."""

    @property
    def version(self) -> str: ...

    @property
    def models(self) -> Mapping[str, Any]: ...

    def decide(
        self, model: str, scores: dict[str, float], video: dict[str, Any] | None = None
    ) -> tuple[str, str]: ...

    def score(
        self, model: str, scores: dict[str, float], video: dict[str, Any] | None = None
    ) -> float: ...


@dataclass(frozen=True)
class Verdict:
    sha1: str
    model: str
    verdict: str
    reviewer: str
    at: datetime
    note: str | None = None

    def __post_init__(self) -> None:
        check_sha1(self.sha1)
        if not isinstance(self.model, str) or not 0 < len(self.model) <= MODEL_LENGTH:
            raise ValueError(f"model must be 1 to {MODEL_LENGTH} characters, not {self.model!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {self.verdict!r}")
        if (
            not isinstance(self.reviewer, str)
            or not self.reviewer.strip()
            or len(self.reviewer) > REVIEWER_LENGTH
        ):
            raise ValueError(f"reviewer must be a name of 1 to {REVIEWER_LENGTH} characters")
        if not isinstance(self.at, datetime):
            raise ValueError(f"at must be a datetime, not {self.at!r}")
        object.__setattr__(self, "at", utc(self.at))
        if self.note is not None and (
            not isinstance(self.note, str) or len(self.note) > NOTE_LENGTH
        ):
            raise ValueError(f"note must be text of at most {NOTE_LENGTH} characters")


@dataclass(frozen=True)
class QueueItem:
    sha1: str
    model: str
    model_version: str
    scores: dict[str, float]
    score: float
    state: str
    reason: str
    policy_version: str
    titles: tuple[str, ...]
    mime: str | None
    scored_at: datetime
    verdict: Verdict | None


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Labelled:
    """One stored result of a file that has a verdict, with its latest verdict."""

    sha1: str
    model: str
    model_version: str
    scores: dict[str, float]
    video: dict[str, Any] | None
    scored_at: datetime
    verdict: Verdict


def _newest_version() -> Any:
    """True for the row of (sha1, model) scored last (ties: the greatest version): the one
    the service answers with now."""
    newer = aliased(Score)
    return ~exists().where(
        newer.sha1 == Score.sha1,
        newer.model == Score.model,
        or_(
            newer.scored_at > Score.scored_at,
            and_(newer.scored_at == Score.scored_at, newer.model_version > Score.model_version),
        ),
    )


def _latest_verdict(verdict: Any) -> Any:
    later = aliased(ReviewVerdict)
    return ~exists().where(
        later.sha1 == verdict.sha1,
        later.model == verdict.model,
        or_(later.at > verdict.at, and_(later.at == verdict.at, later.id > verdict.id)),
    )


def _verdict_columns(verdict: Any) -> list[Any]:
    """The latest verdict's columns beside a score row's: ``v_`` and the column's name."""
    return [
        column.label(f"v_{name}")
        for name, column in (
            ("id", verdict.id),
            ("verdict", verdict.verdict),
            ("reviewer", verdict.reviewer),
            ("at", verdict.at),
            ("note", verdict.note),
        )
    ]


def _verdict(row: Any) -> Verdict:
    return Verdict(row.sha1, row.model, row.verdict, row.reviewer, row.at, row.note)


def _joined_verdict(row: Any) -> Verdict | None:
    if row.v_id is None:
        return None
    return Verdict(row.sha1, row.model, row.v_verdict, row.v_reviewer, row.v_at, row.v_note)


def review_queue(
    store: ScoreStore,
    *,
    model: str | None = None,
    state: str | None = None,
    reviewed: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> QueuePage:
    """Files to review: each (sha1, model)'s newest result, in ``state`` (default: every
    state but ok), without a verdict (with one when ``reviewed``), most severe state first,
    then highest score, then SHA-1. ``limit`` is capped at MAX_PAGE."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, not {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, not {limit!r}")
    limit = min(limit, MAX_PAGE)
    verdict = aliased(ReviewVerdict)
    conditions = [
        Score.state.in_([s for s in STATES if s != OK]) if state is None else Score.state == state,
        _newest_version(),
        verdict.id.is_not(None) if reviewed else verdict.id.is_(None),
    ]
    if model is not None:
        conditions.append(Score.model == model)
    joined = and_(
        verdict.sha1 == Score.sha1, verdict.model == Score.model, _latest_verdict(verdict)
    )
    base = (
        select(*Score.__table__.c, *_verdict_columns(verdict))
        .select_from(Score)
        .outerjoin(verdict, joined)
        .where(*conditions)
    )
    priority = case({s: i for i, s in enumerate(STATES)}, value=Score.state)
    page = (
        base.order_by(priority, Score.policy_score.desc().nulls_last(), Score.sha1, Score.model)
        .offset(offset)
        .limit(limit)
    )
    with store.transaction(write=False) as conn:
        total = conn.scalar(select(func.count()).select_from(base.subquery())) or 0
        rows = conn.execute(page).all()
        titles: dict[str, list[str]] = {}
        for sha1s in chunks(sorted({row.sha1 for row in rows})):
            found = select(Title.sha1, Title.title).where(Title.sha1.in_(sha1s))
            for sha1, title in conn.execute(found.order_by(Title.sha1, Title.title)):
                titles.setdefault(sha1, []).append(title)
    items = [_queue_item(row, titles) for row in rows]
    return QueuePage(items, total, offset, limit)


def _queue_item(row: Row[Any], titles: dict[str, list[str]]) -> QueueItem:
    return QueueItem(
        sha1=row.sha1,
        model=row.model,
        model_version=row.model_version,
        scores=row.scores,
        score=row.policy_score if row.policy_score is not None else float("nan"),
        state=row.state,
        reason=row.reason or "",
        policy_version=row.policy_version or "",
        titles=tuple(titles.get(row.sha1, ())),
        mime=row.mime,
        scored_at=row.scored_at,
        verdict=_joined_verdict(row),
    )


def add_verdict(store: ScoreStore, verdict: Verdict) -> None:
    """Append ``verdict`` to the history; ValueError when nothing is stored for its file
    and model (a verdict on a file no model scored would judge nothing)."""
    if not isinstance(verdict, Verdict):
        raise ValueError(f"not a Verdict: {verdict!r}")
    known = exists().where(Score.sha1 == verdict.sha1, Score.model == verdict.model)
    with store.transaction() as conn:
        if not conn.scalar(select(known)):
            raise ValueError(f"no stored result for file {verdict.sha1} and model {verdict.model}")
        conn.execute(
            insert(ReviewVerdict).values(
                sha1=verdict.sha1,
                model=verdict.model,
                verdict=verdict.verdict,
                reviewer=verdict.reviewer,
                at=verdict.at,
                note=verdict.note,
            )
        )


def verdicts(store: ScoreStore, *, model: str | None = None) -> list[Verdict]:
    """Every verdict given (for ``model``, or all), oldest first."""
    query = select(ReviewVerdict).order_by(ReviewVerdict.at, ReviewVerdict.id)
    if model is not None:
        query = query.where(ReviewVerdict.model == model)
    with store.transaction(write=False) as conn:
        return [_verdict(row) for row in conn.execute(query)]


def labelled(store: ScoreStore, *, model: str | None = None) -> list[Labelled]:
    """Every stored result (all model versions) of the files that have a verdict for that
    model, each with the file's latest verdict: what a quality report measures."""
    verdict = aliased(ReviewVerdict)
    query = (
        select(*Score.__table__.c, *_verdict_columns(verdict))
        .join(verdict, and_(verdict.sha1 == Score.sha1, verdict.model == Score.model))
        .where(_latest_verdict(verdict))
        .order_by(Score.model, Score.model_version, Score.sha1)
    )
    if model is not None:
        query = query.where(Score.model == model)
    with store.transaction(write=False) as conn:
        rows = conn.execute(query).all()
    return [
        Labelled(
            r.sha1, r.model, r.model_version, r.scores, r.video, r.scored_at, _joined_verdict(r)
        )
        for r in rows
    ]


def apply_policy(store: ScoreStore, policy: DecidingPolicy) -> int:
    """Re-decide the stored results of the policy's models that another policy version (or
    none) decided, from their stored scores; returns how many rows were re-decided.

    Works through the table in primary-key order, one transaction per chunk of rows, so a
    large store is never locked for long and an interrupted run resumes where it stopped.
    A row whose scores the policy cannot read is stamped with the policy version, no state
    and the reason, so it is not retried until the policy changes again.
    """
    key = tuple_(Score.sha1, Score.model, Score.model_version)
    models = sorted(policy.models)
    version = policy.version
    pending = and_(
        Score.model.in_(models),
        or_(Score.policy_version.is_(None), Score.policy_version != version),
    )
    changed = 0
    after: tuple[str, str, str] | None = None
    while True:
        query = (
            select(Score.sha1, Score.model, Score.model_version, Score.scores, Score.video)
            .where(pending)
            .order_by(Score.sha1, Score.model, Score.model_version)
            .limit(CHUNK)
        )
        if after is not None:
            query = query.where(key > tuple_(*after))
        with store.transaction() as conn:
            # Locked until the update, so a concurrent re-scoring is not overwritten with a
            # decision on the scores it replaced (SQLite's write transaction locks it all).
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            rows = conn.execute(query).all()
            if not rows:
                return changed
            updates = [_decided(policy, row) for row in rows]
            conn.execute(
                update(Score)
                .where(
                    Score.sha1 == bindparam("k_sha1"),
                    Score.model == bindparam("k_model"),
                    Score.model_version == bindparam("k_version"),
                )
                .values(
                    state=bindparam("state"),
                    reason=bindparam("reason"),
                    policy_version=bindparam("policy_version"),
                    policy_score=bindparam("policy_score"),
                ),
                updates,
            )
        changed += len(rows)
        last = rows[-1]
        after = (last.sha1, last.model, last.model_version)


def _decided(policy: DecidingPolicy, row: Row[Any]) -> dict[str, Any]:
    try:
        score = policy.score(row.model, row.scores, row.video)
        state, reason = policy.decide(row.model, row.scores, row.video)
    except (ValueError, TypeError, AttributeError) as exc:
        score, state, reason = None, None, f"not decided: {exc}"
    return {
        "k_sha1": row.sha1,
        "k_model": row.model,
        "k_version": row.model_version,
        "state": state,
        "reason": reason,
        "policy_version": policy.version,
        "policy_score": score,
    }
