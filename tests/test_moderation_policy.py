"""The moderation policy file, its decisions, and the reviewers file."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import yaml

from moderation.policy import (
    DEFAULT_POLICY,
    STATES,
    Decision,
    Judgement,
    Policy,
    load_policy,
    undecided_counts,
)
from moderation.reviewers import Reviewers, hash_token, new_token
from preprocessing.specs import LOGO
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
    # The logo model card's validation threshold for precision >= 0.97, as `make logo-report` wrote it.
    report = json.loads((Path(__file__).parents[1] / "docs/model-cards/logo-detection/report.json").read_text())
    assert report["model"]["model_version"] == str(LOGO.version), "make logo-report for the served model"
    measured = report["threshold"]["validation"]["threshold"]
    assert policy.models["logo-detection"].thresholds == {"needs_review": round(measured, 3)}
    assert f"version {report['model']['model_version']} " in " ".join(policy.models["logo-detection"].basis.split())
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
    # Whatever a store row holds, what cannot be read is a ValueError, nothing else.
    with pytest.raises(ValueError, match="scores are list, not a mapping"):
        policy.decide("nsfw-detection", [0.9])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scores are NoneType, not a mapping"):
        policy.decide("nsfw-detection", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="video report is str, not a mapping"):
        policy.decide("nsfw-video-detection", {"nsfw": 0.5}, "prediction")  # type: ignore[arg-type]


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


def test_what_the_policy_cannot_read_is_stamped_undecided_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = Policy.model_validate({**GOOD, "version": "renamed-label-test"})
    # A model version that renamed its positive class: every result is unreadable.
    renamed = [
        Record(Key(hashlib.sha1(bytes([n])).hexdigest(), "nsfw-detection", "3"), {"porn": 0.99})
        for n in range(12)
    ]
    with caplog.at_level(logging.WARNING, logger="moderation"):
        stamped = [policy.stamp(record) for record in renamed]
    first = stamped[0]
    assert (first.state, first.policy_score, first.policy_version) == (
        None, None, "renamed-label-test"
    )
    assert first.reason == "not decided: nsfw-detection scores ['porn'] lack 'nsfw'"
    assert first.scores == {"porn": 0.99}
    assert undecided_counts()[("renamed-label-test", "nsfw-detection")] == 12
    # A warning for the 1st and the 10th, naming the model and the reason, never a file.
    warnings = [r.getMessage() for r in caplog.records if r.name == "moderation"]
    assert warnings == [
        f"policy renamed-label-test could not decide {n} result(s) of nsfw-detection so far "
        "(they wait in the review queue as undecided); the latest: not decided: "
        "nsfw-detection scores ['porn'] lack 'nsfw'"
        for n in (1, 10)
    ]
    assert not any(record.key.sha1 in text for record in renamed for text in warnings)
    # judge is what stamp and apply_policy share.
    assert policy.judge("nsfw-detection", {"nsfw": 0.95}) == Judgement(
        "withhold_all", "nsfw 0.950 ≥ withhold_all 0.9 (policy renamed-label-test)", 0.95
    )
    assert policy.judge("nsfw-detection", "garbage") == Judgement(  # type: ignore[arg-type]
        None, "not decided: nsfw-detection scores are str, not a mapping", None
    )


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
