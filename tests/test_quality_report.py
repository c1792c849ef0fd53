"""The quality report: its numbers against hand-computed values on a small fixed set, the
too-few-verdicts path, and the report written from a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from moderation.policy import Policy
from moderation.quality import (
    Sample,
    at_threshold,
    average_precision,
    bootstrap_threshold,
    calibration,
    evaluate,
    target_threshold,
    wilson,
    write_report,
)
from store import Key, Record, ScoreStore, open_store
from store.review import Verdict, add_verdict

NSFW = "nsfw-detection"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Eight files: scores, and whether reviewers confirmed them (1) or rejected them (0).
SCORES = np.array([0.95, 0.92, 0.85, 0.75, 0.65, 0.45, 0.35, 0.15])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0])
THRESHOLDS = {"withhold_all": 0.9, "withhold_popular": 0.6}
POLICY = Policy.model_validate(
    {"version": "q1", "models": {NSFW: {"label": "nsfw", "thresholds": THRESHOLDS}}}
)


def sha1(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def sample() -> Sample:
    return Sample(NSFW, "1", tuple(sha1(n) for n in range(8)), SCORES, LABELS)


def test_counts_precision_recall_f1_by_hand() -> None:
    # >= 0.8 calls the first three positive: two confirmed (TP), one rejected (FP); the
    # confirmed 0.75 and 0.45 are missed (FN); 0.65, 0.35, 0.15 are rejected and below (TN).
    row = at_threshold(SCORES, LABELS, 0.8)
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (2, 1, 2, 3)
    assert row["precision"] == pytest.approx(2 / 3)
    assert row["recall"] == pytest.approx(1 / 2)
    assert row["f1"] == pytest.approx(4 / 7)  # 2PR / (P + R) = (2/3) / (7/6)
    # Wilson's interval for 2 of 3 and 2 of 4 (z = 1.96), as published tables give them.
    assert row["precision_ci95"] == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert row["recall_ci95"] == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert wilson(0, 0) is None
    assert wilson(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    # Nothing called positive: precision undefined, recall 0.
    none = at_threshold(SCORES, LABELS, 0.99)
    assert (none["precision"], none["recall"], none["f1"]) == (None, 0.0, 0.0)


def test_average_precision_and_target_threshold_by_hand() -> None:
    # Recall steps of 1/4 at the confirmed files, precision there 1, 1, 3/4, 4/6.
    assert average_precision(SCORES, LABELS) == pytest.approx((1 + 1 + 0.75 + 4 / 6) / 4)
    # Precision at each threshold, from the top: 1, 1, 2/3, 3/4, 3/5, 4/6, 4/7, 4/8.
    assert target_threshold(SCORES, LABELS, 0.97) == 0.92
    assert target_threshold(SCORES, LABELS, 0.6) == 0.45
    assert target_threshold(SCORES, LABELS, 0.7) == 0.75
    assert target_threshold(SCORES, np.zeros(8, dtype=int), 0.5) is None


def test_calibration_by_hand() -> None:
    result = calibration(SCORES, LABELS)
    counts = [b["count"] for b in result["bins"]]
    assert counts == [0, 1, 0, 1, 1, 0, 1, 1, 1, 2]
    top = result["bins"][9]
    assert top["mean_score"] == pytest.approx(0.935) and top["share_confirmed"] == 1.0
    # |0.935 - 1| for two files, then |score - label| for each file alone.
    gaps = 2 * 0.065 + 0.85 + 0.25 + 0.65 + 0.55 + 0.35 + 0.15
    assert result["ece"] == pytest.approx(gaps / 8)


def test_evaluate_at_the_policy_thresholds() -> None:
    result = evaluate(sample(), THRESHOLDS, target=0.97, min_per_class=4, resamples=500)
    assert (result["verdicts"], result["confirmed"], result["rejected"]) == (8, 4, 4)
    assert result["conclusive"] and "conclusion" not in result
    withhold_all = result["at_policy_thresholds"]["withhold_all"]
    assert (withhold_all["tp"], withhold_all["fp"], withhold_all["fn"]) == (2, 0, 2)
    assert (withhold_all["precision"], withhold_all["recall"]) == (1.0, 0.5)
    assert withhold_all["f1"] == pytest.approx(2 / 3)
    popular = result["at_policy_thresholds"]["withhold_popular"]
    assert (popular["tp"], popular["fp"], popular["fn"], popular["tn"]) == (3, 2, 1, 2)
    assert popular["precision"] == pytest.approx(0.6) and popular["recall"] == 0.75
    assert popular["f1"] == pytest.approx(2 / 3)
    target = result["target"]
    assert target["threshold"] == target["recommended"] == 0.92
    boot = target["bootstrap"]
    assert boot["resamples"] == 500 and 0 < boot["reached"] <= 1
    low, _ = boot["ci95"]
    assert low is not None and low <= 0.92


def test_too_few_verdicts_to_conclude() -> None:
    result = evaluate(sample(), THRESHOLDS, min_per_class=5)
    assert not result["conclusive"]
    assert result["conclusion"] == (
        "too few verdicts to conclude: 4 confirmed and 4 rejected; at least 5 of each are needed"
    )
    # The figures are still given, but no threshold is recommended.
    assert result["at_policy_thresholds"]["withhold_all"]["precision"] == 1.0
    assert result["target"]["threshold"] == 0.92
    assert result["target"]["recommended"] is None and result["target"]["bootstrap"] is None


def test_the_bootstrap_interval() -> None:
    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(60, dtype=int), np.zeros(60, dtype=int)]
    scores = np.clip(np.r_[rng.normal(0.75, 0.15, 60), rng.normal(0.35, 0.15, 60)], 0, 1)
    point = target_threshold(scores, labels, 0.9)
    boot = bootstrap_threshold(scores, labels, 0.9, resamples=400)
    low, high = boot["ci95"]
    assert point is not None and low is not None and high is not None
    assert low < point < high and boot["reached"] == 1.0
    assert bootstrap_threshold(scores, labels, 0.9, resamples=400) == boot  # seeded
    # A target no threshold reaches (every confirmed file below every rejected one).
    unreachable = bootstrap_threshold(1 - scores.clip(0.01, 0.99), labels, 0.999, resamples=200)
    assert unreachable["ci95"][1] is None and unreachable["reached"] < 0.5


@pytest.fixture
def store(store_url: str) -> Iterator[ScoreStore]:
    opened = open_store(store_url)
    yield opened
    opened.dispose()


def test_the_report_from_a_store(store: ScoreStore, tmp_path: Path) -> None:
    records = [
        POLICY.stamp(Record(Key(sha1(n), NSFW, "1"), {"nsfw": float(s), "sfw": 1 - float(s)},
                            scored_at=T0))
        for n, s in enumerate(SCORES)
    ]
    # A newer scoring variant of version 1 stands for file 0; version 2 scores two files.
    records.append(Record(Key(sha1(0), NSFW, "1;inline"), {"nsfw": 0.5, "sfw": 0.5},
                          scored_at=T0 + timedelta(days=1)))
    records += [Record(Key(sha1(n), NSFW, "2"), {"nsfw": 0.99, "sfw": 0.01}, scored_at=T0)
                for n in (1, 2)]
    store.put(records)
    for n, label in enumerate(LABELS):
        # An earlier, opposite verdict: only the latest counts.
        first = "rejected" if label else "confirmed"
        add_verdict(store, Verdict(sha1(n), NSFW, first, "bob", T0))
        add_verdict(store, Verdict(sha1(n), NSFW, "confirmed" if label else "rejected", "alice",
                                   T0 + timedelta(hours=1)))
    out = tmp_path / "report"
    report = write_report(store, POLICY, out, min_per_class=4, resamples=200)

    assert [(r["model"], r["model_version"]) for r in report["models"]] == [
        (NSFW, "1"), (NSFW, "2")
    ]
    v1, v2 = report["models"]
    row = v1["at_policy_thresholds"]["withhold_all"]
    # File 0 now reads 0.5 (its newest version-1 row): one confirmed file fewer above 0.9.
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (1, 0, 3, 4)
    assert v1["conclusive"] and v1["verdicts"] == 8
    assert (v2["verdicts"], v2["confirmed"], v2["rejected"], v2["conclusive"]) == (2, 1, 1, False)
    assert v2["at_policy_thresholds"]["withhold_all"]["precision"] == 0.5

    assert json.loads((out / "report.json").read_text())["models"][0]["verdicts"] == 8
    text = (out / "report.md").read_text()
    assert "## nsfw-detection, version 1" in text and "## nsfw-detection, version 2" in text
    assert "**Too few verdicts to conclude: 1 confirmed and 1 rejected" in text
    for result in report["models"]:
        for name in result["figures"].values():
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_report(store: ScoreStore, tmp_path: Path) -> None:
    report = write_report(store, POLICY, tmp_path)
    assert report["models"] == [] and "No verdicts yet." in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="target precision"):
        write_report(store, POLICY, tmp_path, target=1.0)
