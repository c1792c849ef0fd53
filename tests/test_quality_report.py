"""The quality report: its numbers against hand-computed values on a small fixed set, the
audit sample against the flagged queue's verdicts, the too-few-verdicts and
not-with-95%-confidence paths, and the report written from a real store (SQLite and
PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import typer

from devtools.seed_verdicts import main as seed_verdicts_main
from moderation.policy import Policy, load_policy
from moderation.quality import (
    Sample,
    among_flagged,
    at_threshold,
    average_precision,
    bootstrap_threshold,
    calibration,
    evaluate,
    markdown,
    target_threshold,
    wilson,
    write_report,
)
from preprocessing.specs import LOGO
from store import Key, Record, ScoreStore, open_store
from store.review import AUDIT, Verdict, add_verdict

seed_verdicts_app = typer.Typer()
seed_verdicts_app.command()(seed_verdicts_main)

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


def sample(audited: np.ndarray | None = None) -> Sample:
    """The eight files, all in the audit sample unless ``audited`` says otherwise."""
    return Sample(
        NSFW,
        "1",
        tuple(sha1(n) for n in range(8)),
        SCORES,
        LABELS,
        np.ones(8, dtype=bool) if audited is None else audited,
    )


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
    # A resample reaches precision 0.97 exactly when its highest score is a confirmed file's
    # (at most 8 files: anything below 1 is below 0.97). The top is file k when the k files
    # above it are not drawn and it is: P = ((8-k)/8)^8 - ((7-k)/8)^8, summed over the
    # confirmed k = 0, 1, 3, 5.
    reached = sum(((8 - k) / 8) ** 8 - ((7 - k) / 8) ** 8 for k in (0, 1, 3, 5))
    assert reached == pytest.approx(0.9196, abs=1e-4)
    assert boot["resamples"] == 500
    assert boot["reached"] == pytest.approx(reached, abs=0.04)  # 3 standard errors of 500
    # The lowest threshold, 0.45, comes up whenever neither rejected 0.85 nor 0.65 is drawn
    # and 0.45 is: (6/8)^8 - (5/8)^8 = 7.7% of resamples, more than 2.5%. No threshold at
    # all in 8% of resamples, more than 2.5%: the upper bound is "none".
    assert boot["ci95"] == [0.45, None]
    # Every verdict here is in the audit sample: among the reviewed flagged files is the
    # same precision.
    flagged = result["among_reviewed_flagged"]["withhold_all"]
    assert (flagged["reviewed"], flagged["confirmed"], flagged["precision"]) == (2, 2, 1.0)


def test_recall_and_thresholds_come_from_the_audit_sample_only() -> None:
    # Files 0 to 3 (the highest scores) were reviewed from the flagged queue; 4 to 7 are the
    # audit sample, all below the withhold_popular threshold but one confirmed.
    audited = np.array([False] * 4 + [True] * 4)
    result = evaluate(sample(audited), THRESHOLDS, min_per_class=1, resamples=200)
    assert (result["verdicts"], result["confirmed"], result["rejected"]) == (8, 4, 4)
    assert result["audit"] == {"verdicts": 4, "confirmed": 1, "rejected": 3}
    popular = result["at_policy_thresholds"]["withhold_popular"]
    # Audit: 0.65 rejected (FP), 0.45 confirmed and missed (FN), 0.35 and 0.15 (TN).
    assert (popular["tp"], popular["fp"], popular["fn"], popular["tn"]) == (0, 1, 1, 2)
    assert (popular["precision"], popular["recall"], popular["f1"]) == (0.0, 0.0, 0.0)
    # Among every reviewed file at or above 0.6: 0.95, 0.92, 0.75 confirmed; 0.85, 0.65 not.
    flagged = result["among_reviewed_flagged"]["withhold_popular"]
    assert {k: flagged[k] for k in ("reviewed", "confirmed", "rejected", "precision")} == {
        "reviewed": 5, "confirmed": 3, "rejected": 2, "precision": 0.6
    }
    assert flagged["precision_ci95"] == pytest.approx(wilson(3, 5))
    # Average precision and the target threshold: the audit sample's one confirmed file
    # ranks second of four.
    assert result["average_precision"] == 0.5
    assert result["target"]["threshold"] is None
    assert result["calibration"]["ece"] == pytest.approx((0.65 + 0.55 + 0.35 + 0.15) / 4)


def test_met_but_not_with_95_percent_confidence() -> None:
    result = evaluate(sample(), THRESHOLDS, target=0.97, min_per_class=4, resamples=200)
    result["figures"] = {"pr": "pr.png", "reliability": "reliability.png"}
    report = {
        "policy_version": "q1",
        "target_precision": 0.97,
        "min_per_class": 4,
        "bootstrap_resamples": 200,
        "models": [result],
        "skipped": [],
    }
    text = markdown(report)
    # 0.92 has precision 2/2 = 1 >= 0.97, but Wilson's lower bound for 2 of 2 is 0.342.
    assert wilson(2, 2)[0] == pytest.approx(0.3424, abs=1e-4)
    assert (
        "The target is met on these verdicts but not with 95% confidence (the precision's "
        "lower bound is 0.342): more verdicts near the threshold would settle it."
    ) in text
    assert "Lowest threshold with precision ≥ 0.97 on the audit sample: **0.9200**" in text
    assert "Not a recommendation" not in text
    # With enough verdicts that the lower bound clears the target, the caveat goes.
    many = Sample(
        NSFW,
        "1",
        tuple(sha1(n) for n in range(300)),
        np.r_[np.full(200, 0.9), np.full(100, 0.1)],
        np.r_[np.ones(200, dtype=int), np.zeros(100, dtype=int)],
        np.ones(300, dtype=bool),
    )
    confident = evaluate(many, THRESHOLDS, target=0.97, min_per_class=4, resamples=100)
    assert confident["target"]["at_threshold"]["precision_ci95"][0] > 0.97
    confident["figures"] = result["figures"]
    assert "not with 95% confidence" not in markdown({**report, "models": [confident]})


def test_too_few_verdicts_to_conclude() -> None:
    result = evaluate(sample(), THRESHOLDS, min_per_class=5)
    assert not result["conclusive"]
    assert result["conclusion"] == (
        "too few verdicts to conclude: the audit sample has 4 confirmed and 4 rejected; at "
        "least 5 of each are needed"
    )
    # The figures are still given, but no threshold is recommended.
    assert result["at_policy_thresholds"]["withhold_all"]["precision"] == 1.0
    assert result["target"]["threshold"] == 0.92
    assert result["target"]["recommended"] is None and result["target"]["bootstrap"] is None
    # Verdicts from the flagged queue, however many, do not make the audit sample enough.
    queue_only = evaluate(sample(np.zeros(8, dtype=bool)), THRESHOLDS, min_per_class=1)
    assert not queue_only["conclusive"] and queue_only["audit"]["verdicts"] == 0
    assert queue_only["at_policy_thresholds"]["withhold_all"]["recall"] is None
    assert queue_only["average_precision"] is None and queue_only["target"]["threshold"] is None
    assert queue_only["among_reviewed_flagged"]["withhold_all"]["precision"] == 1.0


def test_among_flagged_by_hand() -> None:
    row = among_flagged(SCORES, LABELS, 0.8)
    assert (row["reviewed"], row["confirmed"], row["rejected"]) == (3, 2, 1)
    assert row["precision"] == pytest.approx(2 / 3)
    assert row["precision_ci95"] == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert among_flagged(SCORES, LABELS, 0.99)["precision"] is None


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
    # Two files reviewed from the flagged queue only: high scores, one rejected.
    records += [
        POLICY.stamp(Record(Key(sha1(n), NSFW, "1"), {"nsfw": 0.97, "sfw": 0.03}, scored_at=T0))
        for n in (20, 21)
    ]
    store.put(records)
    for n, label in enumerate(LABELS):
        # An earlier, opposite verdict from the queue: only the latest counts, and the file
        # is in the audit sample.
        first = "rejected" if label else "confirmed"
        add_verdict(store, Verdict(sha1(n), NSFW, first, "bob", T0))
        add_verdict(store, Verdict(sha1(n), NSFW, "confirmed" if label else "rejected", "alice",
                                   T0 + timedelta(hours=1), sample=AUDIT))
    add_verdict(store, Verdict(sha1(20), NSFW, "confirmed", "bob", T0))
    add_verdict(store, Verdict(sha1(21), NSFW, "rejected", "bob", T0))
    out = tmp_path / "report"
    report = write_report(store, POLICY, out, min_per_class=4, resamples=200)

    assert [(r["model"], r["model_version"]) for r in report["models"]] == [
        (NSFW, "1"), (NSFW, "2")
    ]
    v1, v2 = report["models"]
    row = v1["at_policy_thresholds"]["withhold_all"]
    # File 0 now reads 0.5 (its newest version-1 row): one confirmed file fewer above 0.9.
    # Files 20 and 21 are not in the audit sample: not here.
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (1, 0, 3, 4)
    assert v1["conclusive"] and v1["verdicts"] == 10
    assert v1["audit"] == {"verdicts": 8, "confirmed": 4, "rejected": 4}
    # Among the reviewed files at or above 0.9: 0.92 (confirmed), 20 and 21 at 0.97.
    flagged = v1["among_reviewed_flagged"]["withhold_all"]
    assert (flagged["reviewed"], flagged["confirmed"], flagged["rejected"]) == (3, 2, 1)
    assert (v2["verdicts"], v2["confirmed"], v2["rejected"], v2["conclusive"]) == (2, 1, 1, False)
    assert v2["at_policy_thresholds"]["withhold_all"]["precision"] == 0.5

    assert json.loads((out / "report.json").read_text())["models"][0]["verdicts"] == 10
    text = (out / "report.md").read_text()
    assert "## nsfw-detection, version 1" in text and "## nsfw-detection, version 2" in text
    assert "**Too few verdicts to conclude: the audit sample has 1 confirmed and 1 rejected" in (
        text
    )
    assert "Precision among reviewed flagged files (biased towards high scores):" in text
    assert "| withhold_all | 0.9 | 3 | 2 | 1 | 0.667 [0.208, 0.939] |" in text
    for result in report["models"]:
        for name in result["figures"].values():
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_report(store: ScoreStore, tmp_path: Path) -> None:
    report = write_report(store, POLICY, tmp_path)
    assert report["models"] == [] and "No verdicts yet." in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="target precision"):
        write_report(store, POLICY, tmp_path, target=1.0)


def test_the_seeded_example_prints_an_undefined_precision(tmp_path: Path) -> None:
    """A build whose test items all score below the policy's threshold: no file is called a
    logo, so precision there is undefined, and the tool says so."""
    from typer.testing import CliRunner

    build = tmp_path / "logo"
    build.mkdir()
    ids = [f"item-{n}" for n in range(6)]
    np.savez(build / "scores.npz", test_ids=np.array(ids), test=np.full(6, 0.1))
    (build / "manifest.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "split": "test", "label": n % 2, "kind": "k"}) + "\n"
            for n, i in enumerate(ids)
        )
    )
    out = tmp_path / "report" / "seeded"
    result = CliRunner().invoke(
        seed_verdicts_app,
        ["--build", str(build), "--out", str(out), "--verdicts", "4", "--queue-verdicts", "0"],
    )
    assert result.exit_code == 0, result.output
    threshold = load_policy().models["logo-detection"].thresholds["needs_review"]
    assert (
        f"logo-detection {LOGO.version} needs_review ≥ {threshold:.3f}, audit sample: precision undefined, "
        "recall 0.000, F1 0.000"
    ) in result.output
    assert len((out / "items.jsonl").read_text().splitlines()) == 4
