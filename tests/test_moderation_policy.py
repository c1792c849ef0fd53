"""The moderation policy file, its decisions, and the reviewers file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from moderation.policy import DEFAULT_POLICY, STATES, Decision, Policy, load_policy
from moderation.reviewers import Reviewers, hash_token, new_token
from store import Key, Record

GOOD = {
    "version": "2026-01-01.1",
    "models": {
        "nsfw-detection": {
            "label": "nsfw",
            "thresholds": {"withhold_popular": 0.6, "withhold_all": 0.9},
        },
        "logo-detection": {"label": "logo", "thresholds": {"needs_review": 0.471}},
    },
}


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def with_model(**fields: object) -> dict:
    return {**GOOD, "models": {"nsfw-detection": {"label": "nsfw", **fields}}}


def test_the_packaged_policy() -> None:
    policy = load_policy()
    assert load_policy(DEFAULT_POLICY) == policy
    assert STATES == ("withhold_all", "withhold_popular", "needs_review", "ok")
    assert set(policy.models) == {"logo-detection", "nsfw-detection", "nsfw-video-detection"}
    # The logo model card's validation threshold for precision >= 0.97.
    assert policy.models["logo-detection"].thresholds == {"needs_review": 0.471}
    for name in ("nsfw-detection", "nsfw-video-detection"):
        assert set(policy.models[name].thresholds) == {"withhold_all", "withhold_popular"}
        assert "not measured" in policy.models[name].basis
    assert policy.models["nsfw-video-detection"].video_score == "max"


def test_decisions_at_and_around_the_thresholds(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    # Listed in any order, applied most severe first.
    assert list(policy.models["nsfw-detection"].thresholds) == ["withhold_all", "withhold_popular"]
    cases = [(0.95, "withhold_all"), (0.9, "withhold_all"), (0.89, "withhold_popular"),
             (0.6, "withhold_popular"), (0.59, "ok"), (0.0, "ok")]
    for score, state in cases:
        assert policy.decide("nsfw-detection", {"nsfw": score, "sfw": 1 - score}).state == state
    assert policy.decide("nsfw-detection", {"nsfw": 0.93}) == Decision(
        "withhold_all", "nsfw 0.930 ≥ withhold_all 0.9 (policy 2026-01-01.1)"
    )
    assert policy.decide("logo-detection", {"logo": 0.47, "out_of_domain": 0.53}) == Decision(
        "ok", "logo 0.470 < needs_review 0.471 (policy 2026-01-01.1)"
    )
    assert policy.decide("logo-detection", {"logo": 0.471}).state == "needs_review"
    assert policy.score("logo-detection", {"logo": 0.25, "out_of_domain": 0.75}) == 0.25


def test_a_video_is_read_at_its_highest_frame() -> None:
    policy = load_policy()
    report = {"prediction": 0.99, "nsfw_fraction": 0.05}
    assert policy.score("nsfw-video-detection", {"nsfw": 0.99, "sfw": 0.01}, report) == 0.99
    assert policy.score("nsfw-video-detection", {"nsfw": 0.1}, {"prediction": 0.99}) == 0.99
    # Without a report, the stored score.
    assert policy.score("nsfw-video-detection", {"nsfw": 0.1}) == 0.1
    # Image models ignore a report.
    assert policy.score("nsfw-detection", {"nsfw": 0.1}, report) == 0.1


def test_scores_the_policy_cannot_read() -> None:
    policy = load_policy()
    with pytest.raises(ValueError, match="no rule for model 'other'"):
        policy.decide("other", {"x": 1.0})
    with pytest.raises(ValueError, match="lack 'nsfw'"):
        policy.decide("nsfw-detection", {"unsafe": 0.9})
    with pytest.raises(ValueError, match="not a finite number"):
        policy.decide("nsfw-detection", {"nsfw": float("nan")})
    with pytest.raises(ValueError, match="not a finite number"):
        policy.decide("nsfw-video-detection", {"nsfw": 0.5}, {"prediction": "high"})


def test_stamp() -> None:
    policy = load_policy()
    record = Record(Key("a" * 40, "nsfw-detection", "1"), {"nsfw": 0.99, "sfw": 0.01})
    stamped = policy.stamp(record)
    assert (stamped.state, stamped.policy_version, stamped.policy_score) == (
        "withhold_all", policy.version, 0.99
    )
    assert stamped.reason == policy.decide("nsfw-detection", record.scores).reason
    other = Record(Key("a" * 40, "another-model", "1"), {"nsfw": 0.99})
    assert policy.stamp(other) is other
    unreadable = Record(Key("a" * 40, "nsfw-detection", "1"), {"x": 0.99})
    assert policy.stamp(unreadable) is unreadable


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"models": GOOD["models"]}, r"version: Field required"),
        ({**GOOD, "version": 3}, r"version must be a quoted string"),
        ({**GOOD, "version": "has space"}, r"version: String should match pattern"),
        ({**GOOD, "models": {}}, r"models: Dictionary should have at least 1 item"),
        ({**GOOD, "owner": "x"}, r"owner: Extra inputs are not permitted"),
        (with_model(thresholds={"withheld": 0.5}),
         r"models.nsfw-detection.thresholds: Value error, unknown state 'withheld'"),
        (with_model(thresholds={"ok": 0.5}), r"unknown state 'ok'"),
        (with_model(thresholds={"withhold_all": 1.5}),
         r"threshold of withhold_all is 1.5, not within \[0, 1\]"),
        (with_model(thresholds={"withhold_all": 0.5, "withhold_popular": 0.8}),
         r"withhold_all \(0.5\) must not be below withhold_popular \(0.8\)"),
        (with_model(thresholds={"withhold_all": "0.9"}),
         r"models.nsfw-detection.thresholds.withhold_all: Input should be a valid number"),
        (with_model(thresholds={}), r"thresholds: Dictionary should have at least 1 item"),
        (with_model(thresholds={"needs_review": 0.5}, treshold=0.4),
         r"models.nsfw-detection.treshold: Extra inputs are not permitted"),
        (with_model(thresholds={"needs_review": 0.5}, video_score="mean"),
         r"models.nsfw-detection.video_score: Input should be 'max'"),
        ({**GOOD, "models": {"nsfw-detection": {"thresholds": {"needs_review": 0.5}}}},
         r"models.nsfw-detection.label: Field required"),
        ("- just\n- a list\n", r"must be a mapping with version and models"),
        ("version: [unclosed\n", r"is not valid YAML"),
    ],
)
def test_bad_policy_files_are_rejected_naming_the_field(
    tmp_path: Path, content: object, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_a_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"policy file .*absent.yaml: No such file"):
        load_policy(tmp_path / "absent.yaml")


def test_policies_are_immutable() -> None:
    policy = load_policy()
    with pytest.raises(ValueError):
        policy.version = "changed"  # type: ignore[misc]
    assert isinstance(policy, Policy)


def test_reviewers_identify_by_token(tmp_path: Path) -> None:
    alice, bob = new_token(), new_token()
    path = tmp_path / "reviewers.yaml"
    path.write_text(yaml.safe_dump({"alice": hash_token(alice), "Bob Smith": hash_token(bob)}))
    reviewers = Reviewers.load(path)
    assert reviewers.names == ("Bob Smith", "alice")
    assert reviewers.identify(alice) == "alice"
    assert reviewers.identify(bob) == "Bob Smith"
    assert reviewers.identify(alice + "x") is None
    assert reviewers.identify("") is None
    # The file holds hashes: the hash itself is not a token.
    assert reviewers.identify(hash_token(alice)) is None
    assert hash_token(alice) == hashlib.sha256(alice.encode()).hexdigest()
    assert Reviewers.load(write(tmp_path, "")).identify(alice) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"alice": "not-a-hash"}, r"reviewer 'alice': token hash must be 64 lowercase hex"),
        ({"alice": "A" * 64}, r"token hash must be 64 lowercase hex"),
        ({"alice": "a" * 64, "bob": "a" * 64}, r"two reviewers share one token hash"),
        ({" alice": "a" * 64}, r"reviewer name ' alice'"),
        ({"a:b": "a" * 64}, r"without colons"),
        ("- alice\n", r"must map reviewer names to token hashes"),
    ],
)
def test_bad_reviewers_files(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Reviewers.load(write(tmp_path, content))


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        hash_token("secret")
    with pytest.raises(ValueError, match="No such file"):
        Reviewers.load("/nonexistent/reviewers.yaml")
