"""Reviewers' verdicts, the review queue and re-deciding stored results, on SQLite and on a
real PostgreSQL server (`store_url` runs each test on both)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from moderation.cli import app
from moderation.policy import Policy, load_policy
from moderation.reviewers import Reviewers, hash_token, new_token
from store import Key, Record, ScoreStore, open_store
from store.review import (
    MAX_PAGE,
    STATES,
    Verdict,
    add_verdict,
    apply_policy,
    labelled,
    review_queue,
    verdicts,
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
    second = verdict(1, value="rejected", reviewer="bob", at=T0 + timedelta(hours=2))
    other = verdict(1, LOGO, "rejected")
    for v in (second, first, other):
        add_verdict(store, v)
    assert verdicts(store) == [first, other, second]
    assert verdicts(store, model=LOGO) == [other]
    # The latest verdict counts, whatever order they were added in.
    (row,) = labelled(store, model=NSFW)
    assert row.verdict == second and row.scores == {"nsfw": 0.95, "sfw": pytest.approx(0.05)}


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
    assert [(i.sha1, i.state) for i in page.items] == [
        (sha1(2), "withhold_all"),
        (sha1(1), "withhold_all"),
        (sha1(3), "withhold_popular"),
        (sha1(5), "withhold_popular"),
        (sha1(6), "needs_review"),
    ]
    assert page.total == 5 and (page.offset, page.limit) == (0, 50)
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
    assert [i.sha1 for i in second.items] == [sha1(1), sha1(3)] and second.total == 5
    assert review_queue(store, limit=10_000).limit == MAX_PAGE
    for bad in ({"state": "withheld"}, {"offset": -1}, {"limit": 0}):
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
    assert review_queue(store).total == 12 * 40  # 0.6 to 0.99 in each full hundred


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
    assert load_policy().version


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
    assert (recorded.reviewer, recorded.verdict, recorded.note) == (
        "alice", "rejected", "a classical statue"
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
    assert "1 verdicts (0 confirmed, 1 rejected): too few verdicts to conclude" in reported.output
    assert (out / "report.md").exists()


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
