"""Reviewers' verdicts, the review queue and re-deciding stored results, on SQLite and on a
real PostgreSQL server (`store_url` runs each test on both)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from click.testing import Result
from typer.testing import CliRunner

from moderation.cli import app
from moderation.policy import Policy, load_policy
from moderation.reviewers import Reviewers, hash_token, new_token
from store import Key, Record, ScoreStore, open_store
from store.review import (
    AUDIT,
    MAX_PAGE,
    QUEUE_STATES,
    SAMPLES,
    STATES,
    UNDECIDED,
    VERDICTS,
    Verdict,
    add_verdict,
    apply_policy,
    end_sessions,
    labelled,
    review_queue,
    session_generation,
    verdicts,
    version_order,
)
from store.schema import (
    MODEL_LENGTH,
    POLICY_VERSION_LENGTH,
    SAMPLE_LENGTH,
    STATE_LENGTH,
    VERDICT_LENGTH,
    ReviewVerdict,
    Score,
)

NSFW, LOGO, VIDEO = "nsfw-detection", "logo-detection", "nsfw-video-detection"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sha1(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def policy(version: str = "p1", **nsfw: float) -> Policy:
    return Policy.model_validate(
        {
            "version": version,
            "models": {
                NSFW: {
                    "label": "nsfw",
                    "thresholds": nsfw or {"withhold_all": 0.9, "withhold_popular": 0.6},
                },
                VIDEO: {
                    "label": "nsfw",
                    "video_score": "max",
                    "thresholds": {"withhold_all": 0.9, "withhold_popular": 0.6},
                },
                LOGO: {"label": "logo", "thresholds": {"needs_review": 0.5}},
            },
        }
    )


def nsfw(n: int, score: float, version: str = "1", at: datetime = T0, **kw: object) -> Record:
    return Record(
        Key(sha1(n), NSFW, version),
        {"nsfw": score, "sfw": 1 - score},
        scored_at=at,
        **kw,  # type: ignore[arg-type]
    )


def logo(n: int, score: float, version: str = "2", at: datetime = T0) -> Record:
    return Record(Key(sha1(n), LOGO, version), {"logo": score, "out_of_domain": 1 - score},
                  scored_at=at)


def verdict(n: int, model: str = NSFW, value: str = "confirmed", **kw: object) -> Verdict:
    fields = {"reviewer": "alice", "at": T0 + timedelta(hours=1), **kw}
    return Verdict(sha1(n), model, value, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(store_url: str) -> Iterator[ScoreStore]:
    opened = open_store(store_url)
    yield opened
    opened.dispose()


def test_verdicts_are_validated() -> None:
    with pytest.raises(ValueError, match="SHA-1"):
        Verdict("ABC", NSFW, "confirmed", "alice", T0)
    with pytest.raises(ValueError, match="verdict must be one of confirmed, rejected"):
        Verdict(sha1(1), NSFW, "maybe", "alice", T0)
    with pytest.raises(ValueError, match="reviewer"):
        Verdict(sha1(1), NSFW, "confirmed", "  ", T0)
    with pytest.raises(ValueError, match="naive datetime"):
        Verdict(sha1(1), NSFW, "confirmed", "alice", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="note"):
        Verdict(sha1(1), NSFW, "confirmed", "alice", T0, note="x" * 2001)
    with pytest.raises(ValueError, match="model"):
        Verdict(sha1(1), "", "confirmed", "alice", T0)
    with pytest.raises(ValueError, match="sample must be one of queue, audit"):
        Verdict(sha1(1), NSFW, "confirmed", "alice", T0, sample="random")
    assert Verdict(sha1(1), NSFW, "confirmed", "alice", T0).sample == "queue"
    local = Verdict(sha1(1), NSFW, "rejected", "alice", datetime(2026, 1, 1, 3, tzinfo=timezone(
        timedelta(hours=3))))
    assert local.at == T0 and local.at.tzinfo == UTC


def test_a_verdict_needs_a_stored_result(store: ScoreStore) -> None:
    store.put([nsfw(1, 0.95)])
    with pytest.raises(ValueError, match=f"no stored result for file {sha1(2)}"):
        add_verdict(store, verdict(2))
    with pytest.raises(ValueError, match=f"and model {LOGO}"):
        add_verdict(store, verdict(1, LOGO))
    assert verdicts(store) == []


def test_verdicts_are_an_append_only_history(store: ScoreStore) -> None:
    store.put([nsfw(1, 0.95), logo(1, 0.7), nsfw(2, 0.1)])
    first = verdict(1, note="clearly explicit")
    other = verdict(1, LOGO, "rejected", sample=AUDIT)
    second = verdict(1, value="rejected", reviewer="bob", at=T0 + timedelta(hours=2))
    for v in (first, other, second):
        add_verdict(store, v)
    assert verdicts(store) == [first, other, second]
    assert verdicts(store, model=LOGO) == [other]
    (row,) = labelled(store, model=NSFW)
    assert row.verdict == second and row.scores == {"nsfw": 0.95, "sfw": pytest.approx(0.05)}
    assert not row.audited
    (audited,) = labelled(store, model=LOGO)
    assert audited.audited and audited.verdict == other


def test_the_latest_verdict_is_the_last_recorded_whatever_the_clocks_say(
    store: ScoreStore,
) -> None:
    store.put([nsfw(1, 0.95)])
    # Bob's verdict comes first, from a clock a day ahead; Alice's comes after it, from a
    # true clock: hers is the newer verdict, and it counts.
    ahead = verdict(1, value="rejected", reviewer="bob", at=T0 + timedelta(days=1))
    later = verdict(1, value="confirmed", reviewer="alice", at=T0 + timedelta(hours=1))
    add_verdict(store, ahead)
    add_verdict(store, later)
    assert verdicts(store) == [ahead, later]  # recorded order; each keeps its own time
    (row,) = labelled(store)
    assert row.verdict == later
    (item,) = review_queue(store, reviewed=True).items
    assert item.verdict == later


def test_queue_order_states_and_filters(store: ScoreStore) -> None:
    rules = policy()
    records = [
        nsfw(1, 0.95), nsfw(2, 0.99), nsfw(3, 0.7), nsfw(4, 0.2), nsfw(5, 0.6),
        logo(6, 0.8), logo(7, 0.3),
    ]
    store.put([rules.stamp(r) for r in records] + [
        Record(Key(sha1(8), NSFW, "1"), {"nsfw": 0.99}, scored_at=T0)  # never decided
    ])
    store.note_titles([(sha1(2), "File:B.jpg"), (sha1(2), "File:A.jpg")])

    page = review_queue(store)
    # Flagged, most severe first, then what no policy decided.
    assert [(i.sha1, i.state) for i in page.items] == [
        (sha1(2), "withhold_all"),
        (sha1(1), "withhold_all"),
        (sha1(3), "withhold_popular"),
        (sha1(5), "withhold_popular"),
        (sha1(6), "needs_review"),
        (sha1(8), UNDECIDED),
    ]
    assert page.total == 6 and (page.offset, page.limit) == (0, 50)
    undecided = page.items[-1]
    assert (undecided.score, undecided.policy_version) == (None, "")
    assert undecided.reason == "no policy has decided this result yet"
    assert [i.sha1 for i in review_queue(store, state=UNDECIDED).items] == [sha1(8)]
    assert [i.sha1 for i in review_queue(store, models=[LOGO]).items] == [sha1(6)]
    top = page.items[0]
    assert top.titles == ("File:A.jpg", "File:B.jpg")
    assert (top.score, top.model, top.model_version, top.policy_version) == (0.99, NSFW, "1", "p1")
    assert top.reason == "nsfw 0.990 ≥ withhold_all 0.9 (policy p1)"
    assert top.scored_at == T0 and top.verdict is None and top.mime is None

    assert [i.sha1 for i in review_queue(store, model=LOGO).items] == [sha1(6)]
    assert [i.sha1 for i in review_queue(store, state="withhold_popular").items] == [
        sha1(3), sha1(5)
    ]
    assert [i.sha1 for i in review_queue(store, state="ok").items] == [sha1(7), sha1(4)]
    second = review_queue(store, offset=1, limit=2)
    assert [i.sha1 for i in second.items] == [sha1(1), sha1(3)] and second.total == 6
    assert review_queue(store, limit=10_000).limit == MAX_PAGE == 100
    for bad in ({"state": "withheld"}, {"offset": -1}, {"limit": 0}, {"audit": True, "state": "ok"}):
        with pytest.raises(ValueError):
            review_queue(store, **bad)  # type: ignore[arg-type]


def test_reviewed_items_leave_the_queue(store: ScoreStore) -> None:
    rules = policy()
    store.put([rules.stamp(nsfw(n, 0.95)) for n in range(3)])
    add_verdict(store, verdict(1, note="seen"))
    assert [i.sha1 for i in review_queue(store).items] == sorted([sha1(0), sha1(2)])
    (done,) = review_queue(store, reviewed=True).items
    assert done.sha1 == sha1(1) and done.verdict == verdict(1, note="seen")
    add_verdict(store, verdict(1, value="rejected", at=T0 + timedelta(days=1)))
    (done,) = review_queue(store, reviewed=True).items
    assert done.verdict is not None and done.verdict.verdict == "rejected"


def test_the_queue_shows_the_newest_version_only(store: ScoreStore) -> None:
    rules = policy()
    old = nsfw(1, 0.95, version="1", at=T0)
    new = nsfw(1, 0.3, version="2", at=T0 + timedelta(days=1))
    still = nsfw(2, 0.7, version="1", at=T0)
    again = nsfw(2, 0.95, version="2", at=T0 + timedelta(days=1))
    store.put([rules.stamp(r) for r in (old, new, still, again)])
    # File 1's newest version is ok: its flagged older row is no longer the answer.
    assert [(i.sha1, i.model_version) for i in review_queue(store).items] == [(sha1(2), "2")]


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("9", "10"),
        ("9;inline", "10"),
        ("9", "10;inline"),
        ("2", "2;inline"),
        ("007", "8"),
        ("99", "100;frames=300"),
        ("beta", "1"),
        ("alpha", "beta"),
    ],
)
def test_a_tie_in_time_goes_to_the_newest_version_as_a_number(
    store: ScoreStore, older: str, newer: str
) -> None:
    """One put stamps all its records with one time: the version decides, as a number."""
    rules = policy()
    assert version_order(older) < version_order(newer)
    store.put([rules.stamp(nsfw(1, 0.95, version=older)), rules.stamp(nsfw(1, 0.7, version=newer))])
    (item,) = review_queue(store).items
    assert (item.model_version, item.state) == (newer, "withhold_popular")
    (item,) = review_queue(store, audit=True).items
    assert item.model_version == newer


def check_version_orders_agree(store: ScoreStore) -> None:
    versions = ["1", "2", "10", "10;inline", "10;a", "9;frames=300", "0010", "x", "x;1", "",
                "2;a", "2;Z", "2;é", "100", "B", "a"]
    pairs = list(itertools.combinations(versions, 2))
    rules = policy()
    # File n holds one pair of versions, both scored at one time.
    store.put([rules.stamp(nsfw(n, 0.95, version=v)) for n, pair in enumerate(pairs) for v in pair])
    shown = {}
    for offset in range(0, len(pairs), MAX_PAGE):
        for item in review_queue(store, audit=True, offset=offset, limit=MAX_PAGE).items:
            shown[item.sha1] = item.model_version
    assert shown == {sha1(n): max(pair, key=version_order) for n, pair in enumerate(pairs)}


def test_the_python_and_sql_version_orders_agree(store: ScoreStore) -> None:
    check_version_orders_agree(store)


def test_the_version_order_holds_under_a_language_collation(postgres_url: str) -> None:
    """On a database whose text sorts by language ("a" before "Z"), versions still compare
    by code point, as Python compares them."""
    admin = sqlalchemy.create_engine(
        postgres_url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "CREATE DATABASE versions_icu TEMPLATE template0 LOCALE_PROVIDER icu "
            "ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
        )
    url = sqlalchemy.make_url(postgres_url).set(database="versions_icu")
    store = open_store(url.render_as_string(hide_password=False))
    try:
        with store.transaction(write=False) as conn:
            assert conn.exec_driver_sql("SELECT 'Z' < 'a'").scalar() is False
        check_version_orders_agree(store)
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE versions_icu WITH (FORCE)")
        admin.dispose()


def test_a_policy_change_re_derives_states_and_keeps_scores_and_verdicts(
    store: ScoreStore,
) -> None:
    first = policy("p1")
    records = [nsfw(n, s) for n, s in enumerate([0.95, 0.75, 0.5, 0.2])]
    store.put([first.stamp(r) for r in records] + [logo(9, 0.8)])
    add_verdict(store, verdict(1, value="rejected"))
    before_scores = {k: r.scores for k, r in store.get([r.key for r in records]).items()}
    before_verdicts = verdicts(store)
    assert apply_policy(store, first) == 1  # only the undecided logo row

    stricter = policy("p2", withhold_all=0.7, withhold_popular=0.4)
    assert apply_policy(store, stricter) == 5
    got = store.get([r.key for r in records])
    assert [got[r.key].state for r in records] == [
        "withhold_all", "withhold_all", "withhold_popular", "ok"
    ]
    assert {got[r.key].policy_version for r in records} == {"p2"}
    assert got[records[1].key].reason == "nsfw 0.750 ≥ withhold_all 0.7 (policy p2)"
    assert {k: r.scores for k, r in got.items()} == before_scores
    assert all(got[r.key].scored_at == T0 for r in records)
    assert verdicts(store) == before_verdicts
    assert apply_policy(store, stricter) == 0
    assert [i.sha1 for i in review_queue(store, reviewed=True).items] == [sha1(1)]


def test_apply_policy_works_in_chunks_and_marks_unreadable_rows(store: ScoreStore) -> None:
    many = [nsfw(n, (n % 100) / 100) for n in range(1234)]
    broken = Record(Key(sha1(5000), NSFW, "1"), {"unsafe": 0.9}, scored_at=T0)
    other = Record(Key(sha1(5001), "another-model", "1"), {"x": 0.9}, scored_at=T0)
    store.put([*many, broken, other])
    assert apply_policy(store, policy()) == 1235
    got = store.get([broken.key, other.key, many[99].key])
    assert got[broken.key].state is None and got[broken.key].policy_version == "p1"
    assert "lack 'nsfw'" in (got[broken.key].reason or "")
    assert got[other.key].policy_version is None
    assert got[many[99].key].state == "withhold_all" and got[many[99].key].policy_score == 0.99
    # 0.6 to 0.99 in each full hundred, and the unreadable row, listed as undecided.
    assert review_queue(store, models=[NSFW]).total == 12 * 40 + 1
    undecided = review_queue(store, state=UNDECIDED).items
    assert [(i.sha1, i.reason) for i in undecided] == sorted([
        (sha1(5000), "not decided: nsfw-detection scores ['unsafe'] lack 'nsfw'"),
        (sha1(5001), "no policy has decided this result yet"),
    ])


def test_rescoring_keeps_verdicts(store: ScoreStore) -> None:
    rules = policy()
    store.put([rules.stamp(nsfw(1, 0.95))])
    add_verdict(store, verdict(1))
    # The same version scored again, then a new model version.
    store.put([rules.stamp(nsfw(1, 0.93, at=T0 + timedelta(days=1)))])
    store.put([rules.stamp(nsfw(1, 0.5, version="2", at=T0 + timedelta(days=2)))])
    assert verdicts(store) == [verdict(1)]
    rows = labelled(store)
    assert [(r.model_version, r.scores["nsfw"], r.verdict.verdict) for r in rows] == [
        ("1", 0.93, "confirmed"), ("2", 0.5, "confirmed")
    ]
    (item,) = review_queue(store, state="ok", reviewed=True).items
    assert (item.model_version, item.verdict) == ("2", verdict(1))


def test_a_put_without_a_decision_clears_the_old_one(store: ScoreStore) -> None:
    rules = policy()
    stamped = rules.stamp(nsfw(1, 0.95))
    store.put([stamped])
    assert store.get([stamped.key])[stamped.key] == dataclasses.replace(
        stamped, scored_at=T0
    )
    store.put([nsfw(1, 0.2)])
    got = store.get([stamped.key])[stamped.key]
    assert (got.state, got.reason, got.policy_version, got.policy_score) == (None,) * 4
    apply_policy(store, rules)
    assert store.get([stamped.key])[stamped.key].state == "ok"


def test_videos_are_decided_on_their_highest_frame(store: ScoreStore) -> None:
    report = {"prediction": 0.97, "nsfw_fraction": 0.1, "frames_scored": 10}
    video = Record(Key(sha1(1), VIDEO, "1;frames=300"), {"nsfw": 0.97, "sfw": 0.03},
                   video=report, scored_at=T0)
    store.put([policy().stamp(video)])
    (item,) = review_queue(store).items
    assert item.state == "withhold_all" and item.score == 0.97
    assert item.reason == "nsfw (highest frame) 0.970 ≥ withhold_all 0.9 (policy p1)"


def test_states_are_the_policy_states() -> None:
    from moderation import policy as moderation_policy

    assert moderation_policy.STATES is STATES
    assert load_policy().version == "2026-11-30.7"


def test_every_state_verdict_and_sample_fits_its_column() -> None:
    columns = {
        Score.__table__.c.state: (STATE_LENGTH, STATES),
        ReviewVerdict.__table__.c.verdict: (VERDICT_LENGTH, VERDICTS),
        ReviewVerdict.__table__.c.sample: (SAMPLE_LENGTH, SAMPLES),
    }
    for column, (length, values) in columns.items():
        assert column.type.length == length, column
        assert max(len(value) for value in values) <= length, (column, values)
    # "undecided" is never stored (it is a NULL state), but the queue's filter takes it.
    assert UNDECIDED in QUEUE_STATES and UNDECIDED not in STATES
    assert Score.__table__.c.model.type.length == ReviewVerdict.__table__.c.model.type.length
    assert Score.__table__.c.model.type.length == MODEL_LENGTH
    assert Score.__table__.c.policy_version.type.length == POLICY_VERSION_LENGTH
    long_name = "m" * (MODEL_LENGTH + 1)
    with pytest.raises(ValueError, match=f"must be 1 to {MODEL_LENGTH} characters"):
        Policy.model_validate(
            {"version": "v", "models": {long_name: {"label": "x", "thresholds": {"needs_review": 0.5}}}}
        )
    with pytest.raises(ValueError, match=f"model must be 1 to {MODEL_LENGTH} characters"):
        Verdict(sha1(1), long_name, "confirmed", "alice", T0)


def test_the_audit_sample_serves_every_state_in_sha1_order(store: ScoreStore) -> None:
    rules = policy()
    records = [nsfw(n, (n % 10) / 10 + 0.05) for n in range(30)] + [logo(n, 0.8) for n in (3, 4)]
    store.put([rules.stamp(r) for r in records] + [
        Record(Key(sha1(99), NSFW, "1"), {"unsafe": 0.5}, scored_at=T0)
    ])
    everything = review_queue(store, audit=True, limit=100)
    assert [(i.sha1, i.model) for i in everything.items] == sorted(
        [(r.key.sha1, r.key.model) for r in records] + [(sha1(99), NSFW)]
    )
    assert {i.state for i in everything.items} == {*STATES[:2], "ok", UNDECIDED, "needs_review"}
    # Pages are slices of one order.
    pages = [review_queue(store, audit=True, offset=o, limit=7).items for o in range(0, 33, 7)]
    assert [i for page in pages for i in page] == everything.items
    assert [i.sha1 for i in review_queue(store, audit=True, model=LOGO).items] == sorted(
        [sha1(3), sha1(4)]
    )

    top = everything.items[0]
    # A verdict from the flagged queue does not take a file out of the audit sample, and the
    # audit sample does not show it until the file's audit verdict is given.
    add_verdict(store, Verdict(top.sha1, top.model, "confirmed", "bob", T0))
    awaiting = review_queue(store, audit=True, limit=100)
    assert awaiting.items[0].sha1 == top.sha1 and awaiting.items[0].verdict is None
    audit_verdict = Verdict(top.sha1, top.model, "rejected", "alice", T0, sample=AUDIT)
    add_verdict(store, audit_verdict)
    assert [i.sha1 for i in review_queue(store, audit=True, limit=100).items] == [
        i.sha1 for i in everything.items[1:]
    ]
    (done,) = review_queue(store, audit=True, reviewed=True).items
    assert (done.sha1, done.verdict) == (top.sha1, audit_verdict)
    # An audit verdict takes the file out of the flagged queue like any other.
    assert top.sha1 not in {i.sha1 for i in review_queue(store, limit=100).items}


def test_session_generations(store: ScoreStore) -> None:
    assert session_generation(store, "alice") == 0
    assert end_sessions(store, "alice") == 1
    assert end_sessions(store, "alice") == 2
    assert (session_generation(store, "alice"), session_generation(store, "bob")) == (2, 0)
    with pytest.raises(ValueError, match="reviewer"):
        end_sessions(store, "")


@pytest.fixture
def reviewers_file(tmp_path: Path) -> tuple[Path, str]:
    token = new_token()
    path = tmp_path / "reviewers.yaml"
    path.write_text(yaml.safe_dump({"alice": hash_token(token)}))
    return path, token


def run(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env={"REVIEW_TOKEN": None, **env})


def test_the_cli_refuses_a_missing_or_unknown_token(
    store: ScoreStore, reviewers_file: tuple[Path, str], tmp_path: Path
) -> None:
    store.put([nsfw(1, 0.95)])
    path, token = reviewers_file
    base = ("verdict", "--sha1", sha1(1), "--model", NSFW, "--verdict", "confirmed",
            "--database-url", store.url)

    missing = run(*base, REVIEWERS_FILE=str(path))
    assert missing.exit_code == 2 and "no reviewer token" in missing.output
    unknown = run(*base, REVIEWERS_FILE=str(path), REVIEW_TOKEN="not-anyones-token-at-all")
    assert unknown.exit_code == 1 and "the token is not a reviewer's" in unknown.output
    no_file = run(*base, REVIEWERS_FILE=None, REVIEW_TOKEN=token)
    assert no_file.exit_code == 2 and "no reviewers file" in no_file.output
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    blank = run(*base, "--token-file", str(empty), REVIEWERS_FILE=str(path))
    assert blank.exit_code == 2 and "no reviewer token" in blank.output
    assert verdicts(store) == []

    bad = run("verdict", "--sha1", sha1(1), "--model", NSFW, "--verdict", "maybe",
              "--database-url", store.url, REVIEWERS_FILE=str(path), REVIEW_TOKEN=token)
    assert bad.exit_code == 2 and "--verdict must be one of confirmed, rejected" in bad.output
    elsewhere = run("verdict", "--sha1", sha1(2), "--model", NSFW, "--verdict", "rejected",
                    "--database-url", store.url, REVIEWERS_FILE=str(path), REVIEW_TOKEN=token)
    assert elsewhere.exit_code == 1 and "no stored result for file" in elsewhere.output
    assert verdicts(store) == []


def test_the_cli_records_verdicts_and_applies_policies(
    store: ScoreStore, reviewers_file: tuple[Path, str], tmp_path: Path
) -> None:
    store.put([nsfw(1, 0.95), nsfw(2, 0.5)])
    path, token = reviewers_file
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    given = run("verdict", "--sha1", sha1(1), "--model", NSFW, "--verdict", "rejected",
                "--note", "a classical statue", "--token-file", str(token_file),
                "--database-url", store.url, REVIEWERS_FILE=str(path))
    assert given.exit_code == 0, given.output
    (recorded,) = verdicts(store)
    assert (recorded.reviewer, recorded.verdict, recorded.note, recorded.sample) == (
        "alice", "rejected", "a classical statue", "queue"
    )
    audited = run("verdict", "--sha1", sha1(2), "--model", NSFW, "--verdict", "rejected",
                  "--sample", "audit", "--token-file", str(token_file),
                  "--database-url", store.url, REVIEWERS_FILE=str(path))
    assert audited.exit_code == 0, audited.output
    assert verdicts(store)[-1].sample == "audit"
    bad_sample = run("verdict", "--sha1", sha1(2), "--model", NSFW, "--verdict", "rejected",
                     "--sample", "random", "--token-file", str(token_file),
                     "--database-url", store.url, REVIEWERS_FILE=str(path))
    assert bad_sample.exit_code == 2 and "--sample must be one of queue, audit" in (
        bad_sample.output
    )

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy("p7").model_dump(exclude_defaults=True)))
    applied = run("apply-policy", "--policy", str(policy_file), "--database-url", store.url)
    assert applied.exit_code == 0 and "policy p7: 2 stored results re-decided" in applied.output
    assert store.get([nsfw(1, 0.95).key])[nsfw(1, 0.95).key].state == "withhold_all"
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: p8\nmodels: {}\n")
    refused = run("apply-policy", "--policy", str(broken), "--database-url", store.url)
    assert refused.exit_code == 2 and "models: Dictionary should have at least 1 item" in (
        refused.output
    )

    out = tmp_path / "report"
    reported = run("report", "--out", str(out), "--policy", str(policy_file),
                   "--database-url", store.url)
    assert reported.exit_code == 0, reported.output
    assert (
        "2 verdicts (0 confirmed, 2 rejected), 1 in the audit sample (0 confirmed, 1 rejected): "
        "too few verdicts to conclude"
    ) in reported.output
    assert (out / "report.md").exists()


def test_the_cli_migrates_an_empty_store(store_url: str) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from store.migrate import config

    migrated = run("migrate", "--database-url", store_url)
    assert migrated.exit_code == 0 and "schema is up to date" in migrated.output
    bare = ScoreStore(store_url)
    try:
        with bare.transaction(write=False) as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        bare.dispose()
    assert current == ScriptDirectory.from_config(config(store_url)).get_current_head()


def test_token_helpers(tmp_path: Path) -> None:
    token = new_token()
    hashed = CliRunner().invoke(app, ["hash-token"], input=token + "\n")
    assert hashed.exit_code == 0 and hashed.output.strip() == hash_token(token)
    short = CliRunner().invoke(app, ["hash-token"], input="short\n")
    assert short.exit_code == 2 and "at least 16 characters" in short.output
    made = CliRunner().invoke(app, ["new-token", "Bob Smith"])
    assert made.exit_code == 0
    entry = yaml.safe_load(made.stdout)
    path = tmp_path / "reviewers.yaml"
    path.write_text(made.stdout)
    reviewers = Reviewers.load(path)
    assert list(entry) == ["Bob Smith"] and reviewers.identify(made.stderr.strip()) == "Bob Smith"
