"""Review over the score store: the queue of files a moderation policy flagged, an audit
sample of all files, reviewers' verdicts on them, re-deciding stored results under a new
policy, and the review page's session generations.

A verdict is about a file (its SHA-1) for one model, not about a model version or a policy
version, so it survives re-scoring and policy changes; the latest verdict (the last one
recorded, whatever its reviewer's clock said) counts.

The flagged queue serves the most severe, highest-scoring files first, so verdicts given
from it say little about files the policy let through. The audit sample serves every
file, whatever its state, in an order that is uniformly random (by SHA-1) and stable
across pages; each verdict records which of the two it was given from, and the quality
report measures recall and calibration on audit verdicts only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Row,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from store.schema import (
    MODEL_LENGTH,
    REVIEWER_LENGTH,
    ReviewSession,
    ReviewVerdict,
    Score,
    Title,
    utc,
)
from store.scores import CHUNK, ScoreStore, check_sha1, chunks, dialect_insert

# The moderation policy's states, review priority highest first (moderation.policy re-exports
# them; they live here because the queue orders by them).
STATES: tuple[str, ...] = ("withhold_all", "withhold_popular", "needs_review", "ok")
OK = "ok"
# Not a state a policy gives: a result no policy could decide (stored as no state). The
# flagged queue lists these after the flagged states, so a model whose scores the policy
# cannot read shows up there instead of vanishing.
UNDECIDED = "undecided"
# What the queue's state filter takes.
QUEUE_STATES: tuple[str, ...] = (*STATES, UNDECIDED)
# confirmed: the file is what the model looks for (a non-free logo, NSFW); rejected: it is not.
VERDICTS: tuple[str, ...] = ("confirmed", "rejected")
# Where a verdict was given from: the flagged queue, or the audit sample.
QUEUE, AUDIT = "queue", "audit"
SAMPLES: tuple[str, ...] = (QUEUE, AUDIT)
MAX_PAGE = 100
NOTE_LENGTH = 2000


class DecidingPolicy(Protocol):
    """What ``apply_policy`` needs of a ``moderation.policy.Policy``."""

    @property
    def version(self) -> str: ...

    @property
    def models(self) -> Mapping[str, Any]: ...

    def judge(
        self, model: str, scores: Any, video: Any = None
    ) -> tuple[str | None, str, float | None]:
        """(state, reason, score read); state and score None, and the reason why, for
        scores the policy cannot read."""
        ...


@dataclass(frozen=True)
class Verdict:
    sha1: str
    model: str
    verdict: str
    reviewer: str
    at: datetime
    note: str | None = None
    sample: str = QUEUE

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
        if self.sample not in SAMPLES:
            raise ValueError(f"sample must be one of {', '.join(SAMPLES)}, not {self.sample!r}")


@dataclass(frozen=True)
class QueueItem:
    sha1: str
    model: str
    model_version: str
    scores: dict[str, float]
    # The score the policy read; None when undecided.
    score: float | None
    # One of QUEUE_STATES.
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
    """One stored result of a file that has a verdict, with its latest verdict, and whether
    the file is in the audit sample (has a verdict given from it)."""

    sha1: str
    model: str
    model_version: str
    scores: dict[str, float]
    video: dict[str, Any] | None
    scored_at: datetime
    verdict: Verdict
    audited: bool


def version_order(version: str) -> tuple[int, int, str, str]:
    """Sorts model versions oldest first: by the Triton version before any ";" as a number
    ("9" before "10", "10;inline" after "9"), a non-numeric one as text before every
    numeric one, then the whole version as text. ``_version_order`` is the same in SQL."""
    base = version.split(";", 1)[0]
    if base and all("0" <= c <= "9" for c in base):
        digits = base.lstrip("0")
        return 1, len(digits), digits, version
    return 0, 0, base, version


class _base_version(FunctionElement[str]):
    """A model version's part before any ";"."""

    type = String()
    inherit_cache = True


@compiles(_base_version, "sqlite")
def _base_version_sqlite(element: _base_version, compiler: SQLCompiler, **kw: Any) -> str:
    v = compiler.process(element.clauses, **kw)
    return f"CASE WHEN instr({v}, ';') > 0 THEN substr({v}, 1, instr({v}, ';') - 1) ELSE {v} END"


@compiles(_base_version, "postgresql")
def _base_version_postgresql(element: _base_version, compiler: SQLCompiler, **kw: Any) -> str:
    return f"split_part({compiler.process(element.clauses, **kw)}, ';', 1)"


class _bytewise(FunctionElement[str]):
    """Text compared by code point, as Python compares it, whatever the database's locale."""

    type = String()
    inherit_cache = True


@compiles(_bytewise, "sqlite")
def _bytewise_sqlite(element: _bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))  # SQLite's default is BINARY


@compiles(_bytewise, "postgresql")
def _bytewise_postgresql(element: _bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


def _version_order(version: Any) -> tuple[Any, ...]:
    """``version_order`` of a model-version column, in SQL."""
    base = _base_version(version)
    numeric = and_(base != "", func.ltrim(base, "0123456789") == "")
    digits = func.ltrim(base, "0")
    return (
        case((numeric, 1), else_=0),
        case((numeric, func.length(digits)), else_=0),
        _bytewise(case((numeric, digits), else_=base)),
        _bytewise(version),
    )


def _newest_version() -> Any:
    """True for the row of (sha1, model) scored last (ties, as when one write stamps many
    versions with one time: the newest version by ``version_order``): the one the service
    answers with now."""
    newer = aliased(Score)
    return ~exists().where(
        newer.sha1 == Score.sha1,
        newer.model == Score.model,
        tuple_(newer.scored_at, *_version_order(newer.model_version))
        > tuple_(Score.scored_at, *_version_order(Score.model_version)),
    )


def _latest_verdict(verdict: Any) -> Any:
    """True for the verdict recorded last on its file and model. By id, the order the
    database recorded them in: a reviewer whose clock is behind cannot overturn a newer
    verdict, nor one whose clock is ahead pin theirs."""
    later = aliased(ReviewVerdict)
    return ~exists().where(
        later.sha1 == verdict.sha1, later.model == verdict.model, later.id > verdict.id
    )


def _audited() -> Any:
    """True for a score row whose file has a verdict given from the audit sample."""
    given = aliased(ReviewVerdict)
    return exists().where(
        given.sha1 == Score.sha1, given.model == Score.model, given.sample == AUDIT
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
            ("sample", verdict.sample),
        )
    ]


def _verdict(row: Any) -> Verdict:
    return Verdict(row.sha1, row.model, row.verdict, row.reviewer, row.at, row.note, row.sample)


def _joined_verdict(row: Any) -> Verdict | None:
    if row.v_id is None:
        return None
    return Verdict(
        row.sha1, row.model, row.v_verdict, row.v_reviewer, row.v_at, row.v_note, row.v_sample
    )


def review_queue(
    store: ScoreStore,
    *,
    model: str | None = None,
    models: Collection[str] | None = None,
    state: str | None = None,
    reviewed: bool = False,
    audit: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> QueuePage:
    """Files to review: each (sha1, model)'s newest result, of ``model`` (or any of
    ``models``, or all).

    The flagged queue (``audit`` false): results in ``state`` (one of QUEUE_STATES; default
    the flagged states, then undecided ones), without a verdict (with one when
    ``reviewed``), most severe state first, then highest score, then SHA-1.

    The audit sample (``audit``): results in every state, without a verdict from the audit
    sample (with one when ``reviewed``), by SHA-1: a uniformly random order, stable across
    pages and over time, so the files reviewed from its top are a random sample of all.
    It takes no state filter (a sample of one state is no sample of all), and while a file
    awaits its audit verdict an earlier verdict on it is not shown, so it cannot sway the
    reviewer. ``limit`` is capped at MAX_PAGE.
    """
    if state is not None and state not in QUEUE_STATES:
        raise ValueError(f"state must be one of {', '.join(QUEUE_STATES)}, not {state!r}")
    if audit and state is not None:
        raise ValueError(
            "the audit sample takes no state filter: it samples every state, and one state's "
            "files are no sample of all"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, not {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, not {limit!r}")
    limit = min(limit, MAX_PAGE)
    verdict = aliased(ReviewVerdict)
    conditions = [_newest_version()]
    if model is not None:
        conditions.append(Score.model == model)
    if models is not None:
        conditions.append(Score.model.in_(sorted(models)))
    if audit:
        conditions.append(_audited() if reviewed else ~_audited())
        order = [Score.sha1, Score.model]
    else:
        flagged = [s for s in STATES if s != OK]
        conditions += [
            verdict.id.is_not(None) if reviewed else verdict.id.is_(None),
            or_(Score.state.in_(flagged), Score.state.is_(None))
            if state is None
            else Score.state.is_(None)
            if state == UNDECIDED
            else Score.state == state,
        ]
        priority = case({s: i for i, s in enumerate(STATES)}, value=Score.state, else_=len(STATES))
        order = [priority, Score.policy_score.desc().nulls_last(), Score.sha1, Score.model]
    joined = and_(
        verdict.sha1 == Score.sha1, verdict.model == Score.model, _latest_verdict(verdict)
    )
    base = (
        select(*Score.__table__.c, *_verdict_columns(verdict))
        .select_from(Score)
        .outerjoin(verdict, joined)
        .where(*conditions)
    )
    page = base.order_by(*order).offset(offset).limit(limit)
    with store.transaction(write=False) as conn:
        total = conn.scalar(select(func.count()).select_from(base.subquery())) or 0
        rows = conn.execute(page).all()
        titles: dict[str, list[str]] = {}
        for sha1s in chunks(sorted({row.sha1 for row in rows})):
            found = select(Title.sha1, Title.title).where(Title.sha1.in_(sha1s))
            for sha1, title in conn.execute(found.order_by(Title.sha1, Title.title)):
                titles.setdefault(sha1, []).append(title)
    blind = audit and not reviewed
    items = [_queue_item(row, titles, show_verdict=not blind) for row in rows]
    return QueuePage(items, total, offset, limit)


def _queue_item(row: Row[Any], titles: dict[str, list[str]], *, show_verdict: bool) -> QueueItem:
    return QueueItem(
        sha1=row.sha1,
        model=row.model,
        model_version=row.model_version,
        scores=row.scores,
        score=row.policy_score,
        state=UNDECIDED if row.state is None else row.state,
        reason=row.reason or "no policy has decided this result yet",
        policy_version=row.policy_version or "",
        titles=tuple(titles.get(row.sha1, ())),
        mime=row.mime,
        scored_at=row.scored_at,
        verdict=_joined_verdict(row) if show_verdict else None,
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
                sample=verdict.sample,
            )
        )


def verdicts(store: ScoreStore, *, model: str | None = None) -> list[Verdict]:
    """Every verdict given (for ``model``, or all), in the order they were recorded."""
    query = select(ReviewVerdict).order_by(ReviewVerdict.id)
    if model is not None:
        query = query.where(ReviewVerdict.model == model)
    with store.transaction(write=False) as conn:
        return [_verdict(row) for row in conn.execute(query)]


def labelled(store: ScoreStore, *, model: str | None = None) -> list[Labelled]:
    """Every stored result (all model versions) of the files that have a verdict for that
    model, each with the file's latest verdict and whether it is in the audit sample: what
    a quality report measures."""
    verdict = aliased(ReviewVerdict)
    query = (
        select(*Score.__table__.c, *_verdict_columns(verdict), _audited().label("audited"))
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
            r.sha1,
            r.model,
            r.model_version,
            r.scores,
            r.video,
            r.scored_at,
            _verdict_of(r),
            bool(r.audited),
        )
        for r in rows
    ]


def _verdict_of(row: Any) -> Verdict:
    found = _joined_verdict(row)
    assert found is not None  # an inner join
    return found


def apply_policy(store: ScoreStore, policy: DecidingPolicy) -> int:
    """Re-decide the stored results of the policy's models that another policy version (or
    none) decided, from their stored scores; returns how many rows were re-decided.

    Works through the table in primary-key order, one transaction per chunk of rows, so a
    large store is never locked for long and an interrupted run resumes where it stopped.
    A row whose scores the policy cannot read is stamped with the policy version, no state
    and the reason (as ``Policy.stamp`` stamps a new one), so it is not retried until the
    policy changes again; the flagged queue lists it as undecided.
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
    state, reason, score = policy.judge(row.model, row.scores, row.video)
    return {
        "k_sha1": row.sha1,
        "k_model": row.model,
        "k_version": row.model_version,
        "state": state,
        "reason": reason,
        "policy_version": policy.version,
        "policy_score": score,
    }


def session_generation(store: ScoreStore, reviewer: str) -> int:
    """The generation ``reviewer``'s page sessions must carry to be valid (0 until they
    first log out)."""
    query = select(ReviewSession.generation).where(ReviewSession.reviewer == reviewer)
    with store.transaction(write=False) as conn:
        return conn.scalar(query) or 0


def end_sessions(store: ScoreStore, reviewer: str) -> int:
    """End every page session of ``reviewer``'s, copies of their cookies included, by
    moving to the next generation; returns it."""
    if not isinstance(reviewer, str) or not 0 < len(reviewer) <= REVIEWER_LENGTH:
        raise ValueError(f"reviewer must be a name of 1 to {REVIEWER_LENGTH} characters")
    table = ReviewSession.__table__.c
    with store.transaction() as conn:
        upsert = dialect_insert(conn, ReviewSession).values(reviewer=reviewer, generation=1)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[table.reviewer], set_={"generation": table.generation + 1}
            )
        )
        return int(conn.scalar(select(table.generation).where(table.reviewer == reviewer)))
