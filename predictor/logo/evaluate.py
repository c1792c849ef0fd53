"""Evaluate the exported logo model on the test split, exactly as the service would run it.

    python -m predictor.logo.evaluate --out docs/model-cards/logo-detection

Re-renders every test-split item from the registry packages (rendering is seeded per item,
so these are the build's own test files), decodes each file's bytes as the transformer does
(``decode_image`` + ``logo_tensor``) and scores it with ``model.onnx`` on ONNX Runtime. The
training framework's scores from the build are compared item by item, so the served graph
is shown to reproduce the reported metrics. Writes ``report.json``, ``roc.png``, ``pr.png``
and ``contact_sheet.png`` to ``--out`` and prints the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import typer

from predictor.logo import LABELS, data, metrics, plots, probes, train
from predictor.logo.export import INPUT, session
from predictor.logo.fetch import fetch_all
from predictor.logo.imaging import serving_tensor

WORST = 16
BATCH = 64


def score(model: Path, images: np.ndarray) -> np.ndarray:
    """P(logo) from the exported graph, in batches as Triton would send them."""
    ort_session = session(model)
    batches = [ort_session.run(None, {INPUT: images[i : i + BATCH]})[0]
               for i in range(0, len(images), BATCH)]
    return np.concatenate(batches)[:, LABELS.index("logo")]


def evaluate(build: Path, downloads: Path, out: Path) -> dict:
    model = build / "model.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    tasks = [task for task in data.plan(fetch_all(downloads)) if task.items[0].split == "test"]
    rendered = [r for r in data.render_all(tasks) if r.image is not None]
    images = np.stack([r.image for r in rendered])
    labels = np.array([r.item.label for r in rendered])
    scores = score(model, images)

    with np.load(build / train.SCORES) as saved:
        framework = dict(zip(saved["test_ids"].tolist(), saved["test"].tolist()))
    ids = [r.item.id for r in rendered]
    if set(ids) != set(framework):
        raise RuntimeError(f"the test split differs from the build's: rebuild {build}")
    framework_scores = np.array([framework[i] for i in ids])

    summary = metrics.summary(scores, labels)
    report = {
        "model": {"path": str(model), **{key: metadata.get(key) for key in (
            "model_version", "data_digest", "weights_digest")}},
        "test": summary,
        "agreement_with_training_framework": {
            "max_abs_diff": float(np.abs(scores - framework_scores).max()),
            "same_decisions_at_0.5": bool(((scores >= 0.5) == (framework_scores >= 0.5)).all()),
            "framework_metrics": metrics.summary(framework_scores, labels),
        },
        "by_source": by_source(rendered, scores, summary["operating_point"]["threshold"]),
        "probes": probe_scores(model, summary["operating_point"]["threshold"]),
        "worst_false_positives": worst(rendered, scores, label=0),
        "worst_false_negatives": worst(rendered, scores, label=1),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_figures(out, rendered, scores, labels, summary)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def by_source(rendered: list[data.Rendered], scores: np.ndarray, threshold: float | None) -> dict:
    """Accuracy per package (and per synthetic kind): where the errors come from."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rendered):
        name = r.item.package if r.item.package != "synthetic" else r.item.id.split("#")[0]
        groups.setdefault(name, []).append(i)
    result = {}
    for name, rows in sorted(groups.items()):
        label = rendered[rows[0]].item.label
        called_logo = scores[rows] >= 0.5
        result[name] = {"label": LABELS[label], "count": len(rows),
                        "accuracy": round(float((called_logo == (label == 1)).mean()), 4),
                        "logo_at_threshold": round(float((scores[rows] >= (threshold or 0.5)).mean()), 4)}
    return result


def probe_scores(model: Path, threshold: float | None) -> dict:
    """How often the failure-mode probes (``probes``) are called logos."""
    result = {}
    for kind in probes.KINDS:
        images = np.stack([serving_tensor(probes.render_probe(kind, np.random.default_rng([data.SEED, i])))
                           for i in range(probes.PER_KIND)])
        logo = score(model, images)
        result[kind] = {"count": len(logo), "logo_at_0.5": round(float((logo >= 0.5).mean()), 4),
                        "logo_at_threshold": round(float((logo >= (threshold or 0.5)).mean()), 4),
                        "median_score": round(float(np.median(logo)), 4)}
    return result


def _hardest(scores: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    """Rows of class ``label``, most wrong first: highest P(logo) for non-logos, lowest for logos."""
    rows = np.flatnonzero(labels == label)
    return rows[np.argsort(-scores[rows] if label == 0 else scores[rows], kind="stable")][:WORST]


def worst(rendered: list[data.Rendered], scores: np.ndarray, label: int) -> list[dict]:
    labels = np.array([r.item.label for r in rendered])
    return [{"id": rendered[i].item.id, "package": rendered[i].item.package,
             "licence": rendered[i].item.licence, "score": round(float(scores[i]), 5),
             "error": bool((scores[i] >= 0.5) != (label == 1)), "render": rendered[i].params}
            for i in _hardest(scores, labels, label)]


def write_figures(out: Path, rendered: list[data.Rendered], scores: np.ndarray, labels: np.ndarray,
                  summary: dict) -> None:
    point = summary["operating_point"]
    fpr, tpr = metrics.roc_curve(scores, labels)
    chosen = scores >= point["threshold"]
    plots.curve(out / "roc.png", fpr, tpr, title=f"ROC, test split (AUC {summary['roc_auc']:.4f})",
                xlabel="false positive rate", ylabel="true positive rate (logo recall)",
                point=(float(chosen[labels == 0].mean()), point["recall"]),
                point_label=f"threshold {point['threshold']:.3f}", zoom=((-0.005, 0.2), (0.9, 1.002)))
    precision, recall, _ = metrics.precision_recall(scores, labels)
    plots.curve(out / "pr.png", np.r_[0, recall], np.r_[1, precision],
                title=f"Precision-recall, test split (AP {summary['pr_auc']:.4f})",
                xlabel="recall (logo)", ylabel="precision (logo)",
                point=(point["recall"], point["precision"]),
                point_label=f"precision >= {point['target_precision']}: threshold {point['threshold']:.3f}",
                zoom=((0.9, 1.002), (0.9, 1.002)))

    def caption(i: int) -> str:
        parts = Path(rendered[i].item.id.split(":", 1)[-1]).parts
        # Plasma wallpapers all share the file name 2560x1600.jpg; their folder names them.
        plasma = parts[:3] == ("usr", "share", "wallpapers")
        name = parts[3] + parts[-1][parts[-1].find("#"):] if plasma else parts[-1]
        return f"{scores[i]:.3f}\n{name}"

    plots.contact_sheet(out / "contact_sheet.png", [
        ("Hardest out_of_domain (highest P(logo)); above 0.5 is a false positive",
         [(rendered[i].image, caption(i)) for i in _hardest(scores, labels, 0)]),
        ("Hardest logos (lowest P(logo)); below 0.5 is a false negative",
         [(rendered[i].image, caption(i)) for i in _hardest(scores, labels, 1)]),
    ])


def print_report(report: dict) -> None:
    test, point = report["test"], report["test"]["operating_point"]
    (tn, fp), (fn, tp) = test["confusion"]
    print(f"logo-detection v{report['model']['model_version']} on the test split ({test['count']} items)")
    print(f"  accuracy {test['accuracy']:.4f}  PR-AUC {test['pr_auc']:.4f}  ROC-AUC {test['roc_auc']:.4f}  "
          f"loss {test['loss']:.4f}")
    print("  confusion (rows: true, columns: predicted at 0.5)")
    print(f"    {'':>14} {'out_of_domain':>14} {'logo':>8}\n    {'out_of_domain':>14} {tn:>14} {fp:>8}\n"
          f"    {'logo':>14} {fn:>14} {tp:>8}")
    print(f"  threshold for precision >= {point['target_precision']}: {point['threshold']} "
          f"(precision {point['precision']}, recall {point['recall']})")
    agreement = report["agreement_with_training_framework"]
    print(f"  ONNX vs training framework: max |diff| {agreement['max_abs_diff']:.2e}, "
          f"same decisions: {agreement['same_decisions_at_0.5']}")
    for kind, probe in report["probes"].items():
        print(f"  probe {kind}: {probe['logo_at_0.5']:.0%} called logo at 0.5 "
              f"(median score {probe['median_score']})")


def main(
    out: Path = typer.Option(Path("docs/model-cards/logo-detection"),
                             help="Where the report and figures go."),
    build: Path = typer.Option(Path("build/logo"), help="The build's --out: model.onnx and scores.npz."),
    downloads: Path = typer.Option(Path("build"), help="Where the npm/, deb/ and pypi/ sources are."),
) -> None:
    print_report(evaluate(build, downloads, out))
    print(f"wrote {out}/report.json, roc.png, pr.png, contact_sheet.png")


if __name__ == "__main__":
    typer.run(main)
