"""How good the models are at the policy's thresholds, measured on reviewers' verdicts.

For each model and model version (the Triton version: variants such as ``2;inline`` count as
version 2), every file with a verdict gives one (score, label) pair: the score the policy
reads from that version's newest result, and the file's latest verdict (confirmed = the
model's positive class).

Where the verdicts come from decides what they can measure. The flagged queue serves the
most severe, highest-scoring files first, so its verdicts sit on flagged high scores: the
files the policy let through, and the flagged ones near a threshold, are barely in them,
and recall, F1, average precision, calibration and any threshold chosen on them come out
inflated. The audit sample serves every file, whatever its state, in a uniformly random
order; the files with a verdict from it (the audit sample) are a random sample of all.
So:

- from the audit sample only: precision, recall and F1 at each policy threshold, average
  precision, a precision-recall curve, a reliability diagram, and the lowest threshold that
  reaches a target precision;
- from every verdict: precision at each policy threshold among the reviewed files at or
  above it, labelled as what it is (biased towards high scores, so optimistic).

Uncertainty, because verdicts are few:

- precision and recall at a threshold are binomial proportions: their 95% interval is
  Wilson's score interval, which keeps its coverage for small counts and for proportions
  near 1 (where the normal approximation's interval collapses to a point or passes 1);
- the threshold for a target precision is a statistic of the whole ranking with no closed
  form: its 95% interval is a percentile bootstrap over verdicts (resampling files with
  replacement, a seeded generator), counting a resample where no threshold reaches the
  target as "no threshold" (+inf), so an upper bound of "none" says the target is not
  reliably reachable. The point threshold is chosen on the same verdicts it is measured on,
  so its own precision is optimistic; the bootstrap interval is the honest figure.

Below ``min_per_class`` audit-sample verdicts of either kind the report gives the counts and
figures but says the verdicts are too few to conclude, and recommends no threshold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from moderation.policy import OK, Policy
from store import ScoreStore
from store.review import labelled, version_order

TARGET_PRECISION = 0.97
# Fewer verdicts of either kind than this and one verdict moves precision or recall by more
# than 3 points, and the 95% interval spans more than about ±0.15: too few to conclude.
MIN_PER_CLASS = 30
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 1984
Z95 = 1.959963984540054
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Sample:
    """One model version's verdicts: scores, labels (1 = confirmed) and whether the file is
    in the audit sample, by file."""

    model: str
    version: str
    sha1s: tuple[str, ...]
    scores: np.ndarray
    labels: np.ndarray
    audited: np.ndarray

    def audit(self) -> tuple[np.ndarray, np.ndarray]:
        """The audit sample's scores and labels."""
        return self.scores[self.audited], self.labels[self.audited]


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson's score interval for a binomial proportion; None without trials."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """The confusion counts of "positive if score >= threshold", precision, recall and F1
    (None where undefined), with Wilson intervals."""
    predicted, positive = scores >= threshold, labels == 1
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    tn = int((~predicted & ~positive).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else (0.0 if fp + fn else None)
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "precision_ci95": wilson(tp, tp + fp),
        "recall": recall,
        "recall_ci95": wilson(tp, tp + fn),
        "f1": f1,
    }


def among_flagged(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision among the reviewed files at or above ``threshold``, with its Wilson
    interval: all a set of verdicts biased towards high scores can say."""
    above = scores >= threshold
    confirmed = int((above & (labels == 1)).sum())
    reviewed = int(above.sum())
    return {
        "threshold": threshold,
        "reviewed": reviewed,
        "confirmed": confirmed,
        "rejected": reviewed - confirmed,
        "precision": confirmed / reviewed if reviewed else None,
        "precision_ci95": wilson(confirmed, reviewed),
    }


def precision_recall(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of "positive if score >= t" for every distinct score t,
    highest t first."""
    order = np.argsort(-scores, kind="stable")
    ranked, positive = scores[order], labels[order] == 1
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_pos = np.cumsum(positive)[last_of_tie]
    total = max(1, int(positive.sum()))
    return true_pos / (last_of_tie + 1), true_pos / total, ranked[last_of_tie]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if not (labels == 1).any():
        return None
    precision, recall, _ = precision_recall(scores, labels)
    return float(np.sum(np.diff(recall, prepend=0) * precision))


def target_threshold(scores: np.ndarray, labels: np.ndarray, target: float) -> float | None:
    """The lowest threshold whose precision is >= ``target`` (the most recall it allows);
    None when none is."""
    if not (labels == 1).any():
        return None
    precision, _, thresholds = precision_recall(scores, labels)
    meets = np.flatnonzero(precision >= target)
    return float(thresholds[meets[-1]]) if len(meets) else None


def bootstrap_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    target: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The 95% percentile interval of ``target_threshold`` over resampled verdicts; a
    resample where no threshold reaches the target counts as +inf (shown as None)."""
    rng = np.random.default_rng(seed)
    found = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, len(scores), len(scores))
        value = target_threshold(scores[pick], labels[pick], target)
        found[i] = math.inf if value is None else value
    # Order statistics, not interpolation: +inf stays +inf.
    low = float(np.percentile(found, 2.5, method="lower"))
    high = float(np.percentile(found, 97.5, method="higher"))
    return {
        "ci95": [None if math.isinf(low) else low, None if math.isinf(high) else high],
        "reached": float(np.isfinite(found).mean()),
        "resamples": resamples,
        "seed": seed,
    }


def calibration(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Per equal-width score bin: count, mean score and share confirmed; the expected
    calibration error weighs each bin's gap by its share of verdicts."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        row: dict[str, Any] = {
            "bin": [float(edges[b]), float(edges[b + 1])],
            "count": int(mask.sum()),
        }
        if mask.any():
            mean, share = float(scores[mask].mean()), float((labels[mask] == 1).mean())
            ece += float(mask.mean()) * abs(mean - share)
            row |= {"mean_score": mean, "share_confirmed": share}
        rows.append(row)
    return {"ece": ece if len(scores) else None, "bins": rows}


def samples(
    store: ScoreStore, policy: Policy, *, model: str | None = None
) -> tuple[list[Sample], list[str]]:
    """Each (model, version)'s verdicts with the policy's score, and what was left out."""
    newest: dict[tuple[str, str, str], Any] = {}
    skipped: list[str] = []
    for row in labelled(store, model=model):
        if row.model not in policy.models:
            skipped.append(f"{row.model}: the policy has no rule for it")
            continue
        key = (row.model, row.model_version.split(";")[0], row.sha1)
        if key not in newest or (row.scored_at, version_order(row.model_version)) > (
            newest[key].scored_at,
            version_order(newest[key].model_version),
        ):
            newest[key] = row
    grouped: dict[tuple[str, str], list[tuple[str, float, int, bool]]] = {}
    for (name, version, sha1), row in sorted(newest.items()):
        try:
            score = policy.score(name, row.scores, row.video)
        except ValueError as exc:
            skipped.append(f"{name} {version} {sha1}: {exc}")
            continue
        label = 1 if row.verdict.verdict == "confirmed" else 0
        grouped.setdefault((name, version), []).append((sha1, score, label, row.audited))
    result = [
        Sample(
            name,
            version,
            tuple(item[0] for item in items),
            np.array([item[1] for item in items], dtype=float),
            np.array([item[2] for item in items], dtype=int),
            np.array([item[3] for item in items], dtype=bool),
        )
        for (name, version), items in sorted(grouped.items())
    ]
    return result, sorted(set(skipped))


def evaluate(
    sample: Sample,
    thresholds: dict[str, float],
    *,
    target: float = TARGET_PRECISION,
    min_per_class: int = MIN_PER_CLASS,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """The report's figures for one model version: the audit sample's, and precision among
    every reviewed flagged file."""
    scores, labels = sample.audit()
    confirmed, rejected = int((labels == 1).sum()), int((labels == 0).sum())
    conclusive = confirmed >= min_per_class and rejected >= min_per_class
    result: dict[str, Any] = {
        "model": sample.model,
        "model_version": sample.version,
        "verdicts": len(sample.labels),
        "confirmed": int((sample.labels == 1).sum()),
        "rejected": int((sample.labels == 0).sum()),
        "audit": {"verdicts": len(labels), "confirmed": confirmed, "rejected": rejected},
        "conclusive": conclusive,
        "at_policy_thresholds": {
            state: at_threshold(scores, labels, value)
            for state, value in thresholds.items()
            if state != OK
        },
        "among_reviewed_flagged": {
            state: among_flagged(sample.scores, sample.labels, value)
            for state, value in thresholds.items()
            if state != OK
        },
        "average_precision": average_precision(scores, labels),
        "calibration": calibration(scores, labels),
    }
    if not conclusive:
        result["conclusion"] = (
            f"too few verdicts to conclude: the audit sample has {confirmed} confirmed and "
            f"{rejected} rejected; at least {min_per_class} of each are needed"
        )
    chosen = target_threshold(scores, labels, target)
    point = at_threshold(scores, labels, chosen) if chosen is not None else None
    result["target"] = {
        "precision": target,
        "threshold": chosen,
        "at_threshold": point,
        "bootstrap": (
            bootstrap_threshold(scores, labels, target, resamples=resamples)
            if len(labels) and conclusive
            else None
        ),
        # A threshold is recommended only from enough verdicts.
        "recommended": chosen if conclusive else None,
    }
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def _pr_figure(path: Path, sample: Sample, result: dict[str, Any]) -> None:
    figure = Figure(figsize=(5.5, 4.5), dpi=110)
    axes = figure.add_subplot()
    scores, labels = sample.audit()
    if (labels == 1).any():
        precision, recall, _ = precision_recall(scores, labels)
        axes.step(np.r_[0, recall], np.r_[1, precision], where="post", label="audit sample")
    for state, row in result["at_policy_thresholds"].items():
        if row["precision"] is not None and row["recall"] is not None:
            label = f"{state} ≥ {row['threshold']:g}"
            axes.plot(row["recall"], row["precision"], "o", label=label)
    target = result["target"]
    point = target["at_threshold"]
    if point is not None:
        axes.plot(
            point["recall"],
            point["precision"],
            "x",
            color="black",
            label=f"lowest threshold with precision ≥ {target['precision']:g}: "
            f"{target['threshold']:.3f}",
        )
    axes.axhline(
        target["precision"],
        color="grey",
        linestyle=":",
        linewidth=1,
        label=f"target precision {target['precision']:g}",
    )
    axes.set(
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        xlabel="recall",
        ylabel="precision",
        title=f"{sample.model} {sample.version}: audit sample of {len(labels)}",
    )
    axes.legend(loc="lower left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.savefig(path)


def _reliability_figure(path: Path, sample: Sample, result: dict[str, Any]) -> None:
    figure = Figure(figsize=(5.5, 4.5), dpi=110)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    bins = [b for b in result["calibration"]["bins"] if b["count"]]
    axes.plot(
        [b["mean_score"] for b in bins],
        [b["share_confirmed"] for b in bins],
        "o-",
        label="share confirmed per score bin (audit sample)",
    )
    for b in bins:
        axes.annotate(
            str(b["count"]),
            (b["mean_score"], b["share_confirmed"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, -10),
        )
    ece = result["calibration"]["ece"]
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="mean score in bin",
        ylabel="share confirmed",
        title=f"{sample.model} {sample.version}" + (f": ECE {ece:.3f}" if ece is not None else ""),
    )
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.savefig(path)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(ci: Sequence[float | None] | None) -> str:
    if ci is None:
        return "–"
    low, high = ci
    return f"[{_fmt(low)}, {'none' if high is None else _fmt(high)}]"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Model quality on reviewers' verdicts",
        "",
        (
            f"Policy {report['policy_version']}; target precision "
            f"{report['target_precision']:g}; conclusions need at least "
            f"{report['min_per_class']} confirmed and {report['min_per_class']} rejected "
            "verdicts in the audit sample per model version. Intervals are 95%: Wilson for "
            "precision and recall, a percentile bootstrap over verdicts "
            f"({report['bootstrap_resamples']} resamples) for the threshold."
        ),
        "",
        (
            "Recall, F1, average precision, calibration and the threshold come from the "
            "**audit sample** only: files drawn uniformly at random from every state, ok "
            "included. Verdicts from the flagged queue sit on the highest scores, so they "
            "only give precision among the reviewed flagged files, which is biased towards "
            "high scores."
        ),
        "",
    ]
    if not report["models"]:
        lines += ["No verdicts yet.", ""]
    for result in report["models"]:
        audit = result["audit"]
        lines += [
            f"## {result['model']}, version {result['model_version']}",
            "",
            (
                f"{result['verdicts']} files with a verdict: {result['confirmed']} confirmed, "
                f"{result['rejected']} rejected. In the audit sample: {audit['verdicts']} "
                f"({audit['confirmed']} confirmed, {audit['rejected']} rejected)."
            ),
            "",
        ]
        if not result["conclusive"]:
            lines += [f"**{result['conclusion'][0].upper()}{result['conclusion'][1:]}.**", ""]
        lines += [
            (
                "From the audit sample (unbiased): average precision "
                f"{_fmt(result['average_precision'])}; expected calibration error "
                f"{_fmt(result['calibration']['ece'])}."
            ),
            "",
            "| state | threshold | TP | FP | FN | TN | precision (95% CI) | recall (95% CI) | F1 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for state, row in result["at_policy_thresholds"].items():
            lines.append(
                f"| {state} | {row['threshold']:g} | {row['tp']} | {row['fp']} | {row['fn']} | "
                f"{row['tn']} | {_fmt(row['precision'])} {_interval(row['precision_ci95'])} | "
                f"{_fmt(row['recall'])} {_interval(row['recall_ci95'])} | {_fmt(row['f1'])} |"
            )
        target = result["target"]
        lines.append("")
        if target["threshold"] is None:
            lines.append(
                f"No threshold reaches precision {target['precision']:g} on the audit sample."
            )
        else:
            point = target["at_threshold"]
            text = (
                f"Lowest threshold with precision ≥ {target['precision']:g} on the audit "
                f"sample: **{target['threshold']:.4f}** (precision {_fmt(point['precision'])} "
                f"{_interval(point['precision_ci95'])}, recall {_fmt(point['recall'])} "
                f"{_interval(point['recall_ci95'])})"
            )
            boot = target["bootstrap"]
            if boot is not None:
                text += (
                    f"; bootstrap 95% interval of the threshold {_interval(boot['ci95'])}, "
                    f"reached in {boot['reached']:.1%} of resamples"
                )
            lines.append(text + ".")
            low = point["precision_ci95"][0]
            if target["recommended"] is None:
                lines.append("Not a recommendation: too few verdicts.")
            elif low < target["precision"]:
                lines.append(
                    f"The target is met on these verdicts but not with 95% confidence (the "
                    f"precision's lower bound is {low:.3f}): more verdicts near the threshold "
                    "would settle it."
                )
        lines += [
            "",
            "Precision among reviewed flagged files (biased towards high scores):",
            "",
            "| state | threshold | reviewed at or above | confirmed | rejected | precision (95% CI) |",
            "|---|---|---|---|---|---|",
        ]
        for state, row in result["among_reviewed_flagged"].items():
            lines.append(
                f"| {state} | {row['threshold']:g} | {row['reviewed']} | {row['confirmed']} | "
                f"{row['rejected']} | {_fmt(row['precision'])} "
                f"{_interval(row['precision_ci95'])} |"
            )
        lines += [
            "",
            (
                f"![precision-recall]({result['figures']['pr']}) "
                f"![reliability]({result['figures']['reliability']})"
            ),
            "",
        ]
    if report["skipped"]:
        lines += ["## Left out", "", *(f"- {line}" for line in report["skipped"]), ""]
    return "\n".join(lines)


def write_report(
    store: ScoreStore,
    policy: Policy,
    out: Path,
    *,
    model: str | None = None,
    target: float = TARGET_PRECISION,
    min_per_class: int = MIN_PER_CLASS,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Write report.md, report.json and two PNGs per model version into ``out``."""
    if not 0 < target < 1:
        raise ValueError(f"target precision must lie in (0, 1), not {target}")
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be at least 1, not {min_per_class}")
    out.mkdir(parents=True, exist_ok=True)
    found, skipped = samples(store, policy, model=model)
    results = []
    for sample in found:
        result = evaluate(
            sample,
            policy.models[sample.model].thresholds,
            target=target,
            min_per_class=min_per_class,
            resamples=resamples,
        )
        stem = _slug(f"{sample.model}_{sample.version}")
        result["figures"] = {"pr": f"pr_{stem}.png", "reliability": f"reliability_{stem}.png"}
        _pr_figure(out / result["figures"]["pr"], sample, result)
        _reliability_figure(out / result["figures"]["reliability"], sample, result)
        results.append(result)
    report = {
        "generated_at": datetime.now(UTC).isoformat(),
        "policy_version": policy.version,
        "target_precision": target,
        "min_per_class": min_per_class,
        "bootstrap_resamples": resamples,
        "models": results,
        "skipped": skipped,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report
