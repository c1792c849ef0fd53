"""Binary metrics of the logo scores, reported the way gogologo's model card reports them.

``scores`` is P(logo) per item and ``labels`` is 1 for logos. Written with numpy alone (no
scikit-learn in the environment); ties are handled as scikit-learn does.
"""

from __future__ import annotations

import numpy as np

# Keras' epsilon: a confidently wrong score costs at most -log(1e-7) in the loss.
EPSILON = 1e-7
TARGET_PRECISION = 0.97


def summary(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy (at 0.5), PR-AUC, ROC-AUC, loss, confusion matrix and the operating point."""
    predicted = scores >= 0.5
    positive = labels == 1
    return {
        "accuracy": round(float((predicted == positive).mean()), 5),
        "pr_auc": round(average_precision(scores, labels), 5),
        "roc_auc": round(roc_auc(scores, labels), 5),
        "loss": round(log_loss(scores, labels), 5),
        "count": int(len(labels)),
        # rows: true out_of_domain, logo; columns: predicted out_of_domain, logo
        "confusion": [[int((~positive & ~predicted).sum()), int((~positive & predicted).sum())],
                      [int((positive & ~predicted).sum()), int((positive & predicted).sum())]],
        "operating_point": operating_point(scores, labels),
    }


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy of the two-class softmax, unweighted."""
    p_true = np.where(labels == 1, scores, 1 - scores)
    return float(-np.log(np.clip(p_true, EPSILON, 1)).mean())


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random logo outscores a random non-logo (Mann-Whitney U, ties half)."""
    order = np.argsort(scores, kind="stable")
    _, first, tied = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (tied + 1) / 2, tied)  # average 1-based rank of each tie
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of "logo if score >= t" for every distinct score t, descending."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_pos = np.cumsum(positive)[last_of_tie]
    predicted = last_of_tie + 1
    return true_pos / predicted, true_pos / positive.sum(), sorted_scores[last_of_tie]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates for every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_pos = np.cumsum(positive)[last_of_tie]
    false_pos = last_of_tie + 1 - true_pos
    return np.r_[0, false_pos / (~positive).sum()], np.r_[0, true_pos / positive.sum()]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the PR curve as a step function (scikit-learn's average_precision_score)."""
    precision, recall, _ = precision_recall(scores, labels)
    return float(np.sum(np.diff(recall, prepend=0) * precision))


def operating_point(scores: np.ndarray, labels: np.ndarray, target: float = TARGET_PRECISION) -> dict:
    """The lowest threshold whose precision on logos is >= ``target``: the most recall it allows."""
    precision, recall, thresholds = precision_recall(scores, labels)
    meets = np.flatnonzero(precision >= target)
    if not len(meets):
        return {"target_precision": target, "threshold": None}
    best = meets[-1]
    return {"target_precision": target, "threshold": round(float(thresholds[best]), 5),
            "precision": round(float(precision[best]), 5), "recall": round(float(recall[best]), 5)}


# Kinds whose negatives are flat graphics (everything but photographs); data.KINDS builds on it.
FLAT_KINDS = ("diagram", "plot", "screenshot", "illustration", "map", "page", "structure")


def by_kind(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray, threshold: float | None = None) -> dict:
    """Per kind: how many, accuracy and error rate at 0.5 (and at ``threshold``), and ROC-AUC
    of that kind against every item of the other class (a kind holds one class only)."""
    result = {}
    for kind in dict.fromkeys(kinds.tolist()):
        mask = kinds == kind
        label = int(labels[mask][0])
        called_logo = scores[mask] >= 0.5
        wrong = called_logo != (label == 1)
        row = {"label": "logo" if label else "out_of_domain", "count": int(mask.sum()),
               "accuracy": round(float(1 - wrong.mean()), 5),
               ("fnr" if label else "fpr"): round(float(wrong.mean()), 5),
               "errors": int(wrong.sum()), "median_score": round(float(np.median(scores[mask])), 5)}
        others = labels != label
        pair = mask | others
        if others.any():
            row["roc_auc"] = round(roc_auc(scores[pair], labels[pair]), 5)
        if threshold is not None:
            wrong_t = (scores[mask] >= threshold) != (label == 1)
            row[("fnr" if label else "fpr") + "_at_threshold"] = round(float(wrong_t.mean()), 5)
        result[kind] = row
    return result


def flat_negatives(labels: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Which items are flat-graphic negatives: every non-logo but the photographs."""
    return (labels == 0) & np.isin(kinds, FLAT_KINDS)


def flat_graphics(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray, threshold: float | None = None) -> dict:
    """The flat-graphic target: false-positive rate on the flat-graphic negatives, all kinds together."""
    mask = flat_negatives(labels, kinds)
    pair = mask | (labels == 1)
    result = {"count": int(mask.sum()), "fpr": round(float((scores[mask] >= 0.5).mean()), 5),
              "false_positives": int((scores[mask] >= 0.5).sum()),
              "roc_auc_vs_logos": round(roc_auc(scores[pair], labels[pair]), 5)}
    if threshold is not None:
        result["fpr_at_threshold"] = round(float((scores[mask] >= threshold).mean()), 5)
    return result


def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """Reliability of P(logo): per equal-width bin, the mean score and the share of logos;
    the expected calibration error (ECE) is their gap weighted by the bin's share of items."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1], right=False), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            rows.append({"bin": [round(edges[b], 2), round(edges[b + 1], 2)], "count": 0})
            continue
        mean_score, share_logo = float(scores[mask].mean()), float((labels[mask] == 1).mean())
        ece += mask.mean() * abs(mean_score - share_logo)
        rows.append({"bin": [round(edges[b], 2), round(edges[b + 1], 2)], "count": int(mask.sum()),
                     "mean_score": round(mean_score, 5), "share_logo": round(share_logo, 5)})
    return {"ece": round(float(ece), 5), "bins": rows}


# The two below step to the next representable value in the scores' own dtype, so that the
# threshold compares the same whether numpy compares it as float32 or float64.
def threshold_for_false_positives(negatives: np.ndarray, allowed: int) -> float:
    """The lowest threshold at which at most ``allowed`` of the ``negatives`` score >= it."""
    ordered = np.sort(negatives)[::-1]
    if allowed >= len(ordered):
        return float(ordered.min(initial=0.0))
    return float(np.nextafter(ordered[allowed], ordered.dtype.type(np.inf)))


def threshold_for_misses(positives: np.ndarray, allowed: int) -> float:
    """The highest threshold at which at most ``allowed`` of the ``positives`` score below it."""
    ordered = np.sort(positives)
    if allowed >= len(ordered):
        return float(np.nextafter(ordered.max(initial=1.0), ordered.dtype.type(np.inf)))
    return float(ordered[allowed])


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision, recall, accuracy and the confusion matrix of "logo if score >= threshold"."""
    predicted, positive = scores >= threshold, labels == 1
    tp, fp = int((predicted & positive).sum()), int((predicted & ~positive).sum())
    fn, tn = int((~predicted & positive).sum()), int((~predicted & ~positive).sum())
    return {"threshold": round(float(threshold), 5), "precision": round(tp / max(1, tp + fp), 5),
            "recall": round(tp / max(1, tp + fn), 5), "accuracy": round((tp + tn) / len(labels), 5),
            "confusion": [[tn, fp], [fn, tp]]}
