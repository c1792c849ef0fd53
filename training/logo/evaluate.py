"""Evaluate the exported logo model on the test split, exactly as the service would run it.

    python -m training.logo.evaluate --out docs/model-cards/logo-detection

Re-renders every test-split item from the registry packages (rendering is seeded per item,
so these are the build's own test files), decodes each file's bytes as the transformer does
(``decode_image`` + ``logo_tensor``) and scores it with ``model.onnx`` on ONNX Runtime. The
training framework's scores from the build are compared item by item, so the served graph
is shown to reproduce the reported metrics. Every metric is also given per kind
(``data.KINDS``); the operating threshold (precision >= 0.97) is chosen on the validation
split and applied to test; calibration is a reliability table and its ECE. Writes
``report.json``, ``roc.png``, ``pr.png``, ``reliability.png`` and one ``worst_<kind>.png``
contact sheet per kind (its worst false positives or false negatives) to ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import typer

from training.logo import LABELS, data, metrics, plots, probes, train
from training.logo.export import INPUT, session
from training.logo.fetch import fetch_all
from training.logo.imaging import serving_tensor

WORST = 16
SHEET = 16  # thumbnails per kind on the contact sheets of the worst items
BATCH = 64


def score(model: Path, images: np.ndarray) -> np.ndarray:
    """P(logo) from the exported graph, in batches as Triton would send them."""
    ort_session = session(model)
    batches = [ort_session.run(None, {INPUT: images[i : i + BATCH]})[0]
               for i in range(0, len(images), BATCH)]
    return np.concatenate(batches)[:, LABELS.index("logo")]


def evaluate(build: Path, downloads: Path, out: Path, baselines: list[Path] = ()) -> dict:
    model = build / "model.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    tasks = [task for task in data.plan(fetch_all(downloads)) if task.items[0].split == "test"]
    rendered = [r for r in data.render_all(tasks) if r.image is not None]
    images = np.stack([r.image for r in rendered])
    labels = np.array([r.item.label for r in rendered])
    kinds = np.array([r.item.kind for r in rendered])
    scores = score(model, images)

    with np.load(build / train.SCORES) as saved:
        framework = dict(zip(saved["test_ids"].tolist(), saved["test"].tolist()))
        val_ids, val_scores = saved["val_ids"].tolist(), saved["val"]
    ids = [r.item.id for r in rendered]
    if set(ids) != set(framework):
        raise RuntimeError(f"the test split differs from the build's: rebuild {build}")
    framework_scores = np.array([framework[i] for i in ids])
    manifest = {}
    with (build / "manifest.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            manifest[row["id"]] = row
    val_labels = np.array([manifest[i]["label"] for i in val_ids])
    val_kinds = np.array([manifest[i]["kind"] for i in val_ids])

    # The operating threshold is chosen on validation, then applied to test unchanged.
    val_point = metrics.operating_point(val_scores, val_labels)
    threshold = val_point["threshold"]
    summary = metrics.summary(scores, labels)
    build_metrics = json.loads((build / "metrics.json").read_text())
    report = {
        "model": {"path": str(model), **{key: metadata.get(key) for key in (
            "model_version", "data_digest", "weights_digest")}},
        "test": summary,
        "test_by_kind": metrics.by_kind(scores, labels, kinds, threshold),
        "test_flat_graphics": metrics.flat_graphics(scores, labels, kinds, threshold),
        "test_logos_by_variant": by_variant(rendered, scores, labels, threshold),
        "threshold": {
            "target_precision": metrics.TARGET_PRECISION,
            "chosen_on": "validation split (framework scores of the build)",
            "validation": val_point,
            "test_at_validation_threshold": metrics.at_threshold(scores, labels, threshold),
            "test_at_0.5": metrics.at_threshold(scores, labels, 0.5),
            "test_own_operating_point": summary["operating_point"],
        },
        "calibration": {"test": metrics.calibration(scores, labels),
                        "validation": metrics.calibration(val_scores, val_labels)},
        "validation": {**metrics.summary(val_scores, val_labels),
                       "by_kind": metrics.by_kind(val_scores, val_labels, val_kinds, threshold),
                       "flat_graphics": metrics.flat_graphics(val_scores, val_labels, val_kinds, threshold)},
        "frozen_vs_tuned": build_metrics.get("frozen_vs_tuned"),
        "training": build_metrics.get("training"),
        "counts_by_kind": counts_by_kind(manifest),
        "agreement_with_training_framework": {
            "max_abs_diff": float(np.abs(scores - framework_scores).max()),
            "same_decisions_at_0.5": bool(((scores >= 0.5) == (framework_scores >= 0.5)).all()),
            "framework_metrics": metrics.summary(framework_scores, labels),
        },
        "by_source": by_source(rendered, scores, threshold),
        "probes": probe_scores(model, threshold),
        "worst_by_kind": {kind: worst(rendered, scores, kinds, kind) for kind in data.KINDS if (kinds == kind).any()},
    }
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("contact_sheet.png", *(p.name for p in out.glob("worst_*.png"))):
        (out / stale).unlink(missing_ok=True)
    write_figures(out, rendered, scores, labels, kinds, summary, report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for baseline in baselines:
        comparison = compare_baseline(baseline, images, labels, kinds, rendered)
        (out / f"baseline_v{comparison['model']['model_version']}.json").write_text(
            json.dumps(comparison, indent=2) + "\n")
    return report


def _variant_group(item: data.Item) -> str:
    """plain / on_photo / lowres marks; Latin or other-script wordmarks."""
    if item.kind == "wordmark" and item.variant not in ("plain", "on_photo", "lowres"):
        return "wordmark " + ("latin (brand names)" if item.variant == "latin" else "other scripts")
    return f"{item.kind} {item.variant}"


def by_variant(rendered: list[data.Rendered], scores: np.ndarray, labels: np.ndarray,
               threshold: float | None) -> dict:
    """The logos again, split by how they were made: plain, on a photograph, low resolution."""
    groups = np.array([_variant_group(r.item) if r.item.label == 1 else r.item.kind for r in rendered])
    table = metrics.by_kind(scores, labels, groups, threshold)
    return {name: row for name, row in sorted(table.items()) if row["label"] == "logo"}


def compare_baseline(baseline: Path, images: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
                     rendered: list[data.Rendered]) -> dict:
    """A previous model scored on this test split, per kind: is anything worse than before?"""
    metadata = {p.key: p.value for p in onnx.load(str(baseline), load_external_data=False).metadata_props}
    scores = score(baseline, images)
    return {"model": {"path": str(baseline), **{key: metadata.get(key) for key in (
                "model_version", "data_digest", "weights_digest")}},
            "test": metrics.summary(scores, labels),
            "test_by_kind": metrics.by_kind(scores, labels, kinds),
            "test_flat_graphics": metrics.flat_graphics(scores, labels, kinds),
            "test_logos_by_variant": by_variant(rendered, scores, labels, None)}


def counts_by_kind(manifest: dict[str, dict]) -> dict:
    """Items and sources per kind and split, from the build's manifest."""
    result: dict = {}
    for row in manifest.values():
        entry = result.setdefault(row["kind"], {}).setdefault(row["split"], {"items": 0, "sources": set()})
        entry["items"] += 1
        entry["sources"].add(row["group"])
    return {kind: {split: {"items": v["items"], "sources": len(v["sources"])}
                   for split, v in sorted(splits.items())}
            for kind, splits in sorted(result.items(), key=lambda kv: data.KINDS.index(kv[0]))}


def by_source(rendered: list[data.Rendered], scores: np.ndarray, threshold: float | None) -> dict:
    """Accuracy per package and kind (and per synthetic kind): where the errors come from."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rendered):
        name = r.item.package if r.item.package != "synthetic" else r.item.id.split("#")[0]
        groups.setdefault(f"{name} ({r.item.kind}, {r.item.variant})" if r.item.label == 1 else f"{name} ({r.item.kind})",
                          []).append(i)
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


def _hardest(scores: np.ndarray, kinds: np.ndarray, kind: str, label: int, n: int = WORST) -> np.ndarray:
    """Rows of ``kind``, most wrong first: highest P(logo) for non-logos, lowest for logos."""
    rows = np.flatnonzero(kinds == kind)
    return rows[np.argsort(-scores[rows] if label == 0 else scores[rows], kind="stable")][:n]


def worst(rendered: list[data.Rendered], scores: np.ndarray, kinds: np.ndarray, kind: str) -> list[dict]:
    label = 1 if kind in data.POSITIVE_KINDS else 0
    return [{"id": rendered[i].item.id, "package": rendered[i].item.package, "variant": rendered[i].item.variant,
             "licence": rendered[i].item.licence, "score": round(float(scores[i]), 5),
             "error": bool((scores[i] >= 0.5) != (label == 1)), "render": rendered[i].params}
            for i in _hardest(scores, kinds, kind, label, n=SHEET)]


def write_figures(out: Path, rendered: list[data.Rendered], scores: np.ndarray, labels: np.ndarray,
                  kinds: np.ndarray, summary: dict, report: dict) -> None:
    point = report["threshold"]["test_at_validation_threshold"]
    fpr, tpr = metrics.roc_curve(scores, labels)
    plots.curve(out / "roc.png", fpr, tpr, title=f"ROC, test split (AUC {summary['roc_auc']:.4f})",
                xlabel="false positive rate", ylabel="true positive rate (logo recall)",
                point=(point["confusion"][0][1] / max(1, sum(point["confusion"][0])), point["recall"]),
                point_label=f"validation threshold {point['threshold']:.3f}", zoom=((-0.005, 0.2), (0.9, 1.002)))
    precision, recall, _ = metrics.precision_recall(scores, labels)
    plots.curve(out / "pr.png", np.r_[0, recall], np.r_[1, precision],
                title=f"Precision-recall, test split (AP {summary['pr_auc']:.4f})",
                xlabel="recall (logo)", ylabel="precision (logo)",
                point=(point["recall"], point["precision"]),
                point_label=f"validation threshold {point['threshold']:.3f} (precision >= "
                            f"{metrics.TARGET_PRECISION} on validation)",
                zoom=((0.9, 1.002), (0.9, 1.002)))
    plots.reliability(out / "reliability.png", report["calibration"])

    def caption(i: int) -> str:
        item = rendered[i].item
        parts = Path(item.id.split(":", 1)[-1]).parts
        # Plasma wallpapers all share the file name 2560x1600.jpg; their folder names them.
        plasma = parts[:3] == ("usr", "share", "wallpapers")
        name = parts[3] + parts[-1][parts[-1].find("#"):] if plasma else parts[-1]
        return f"{scores[i]:.3f} {item.variant[:8]}\n{name}"

    for kind in data.KINDS:
        if not (kinds == kind).any():
            continue
        label = 1 if kind in data.POSITIVE_KINDS else 0
        rows = _hardest(scores, kinds, kind, label, n=SHEET)
        errors = int(((scores[kinds == kind] >= 0.5) != (label == 1)).sum())
        title = (f"{kind}: the {len(rows)} lowest P(logo) of {int((kinds == kind).sum())} test logos "
                 f"({errors} below 0.5: false negatives)" if label else
                 f"{kind}: the {len(rows)} highest P(logo) of {int((kinds == kind).sum())} test non-logos "
                 f"({errors} at or above 0.5: false positives)")
        plots.contact_sheet(out / f"worst_{kind}.png", [(title, [(rendered[i].image, caption(i)) for i in rows])])


def print_report(report: dict) -> None:
    test = report["test"]
    (tn, fp), (fn, tp) = test["confusion"]
    print(f"logo-detection v{report['model']['model_version']} on the test split ({test['count']} items)")
    print(f"  accuracy {test['accuracy']:.4f}  PR-AUC {test['pr_auc']:.4f}  ROC-AUC {test['roc_auc']:.4f}  "
          f"loss {test['loss']:.4f}  ECE {report['calibration']['test']['ece']:.4f}")
    print(f"  confusion at 0.5 (rows: true): out_of_domain {tn} right, {fp} called logo; logo {tp} right, {fn} missed")
    flat = report["test_flat_graphics"]
    print(f"  flat-graphic negatives: {flat['count']} items, FPR at 0.5 {flat['fpr']:.4f} "
          f"({flat['false_positives']}), at the threshold {flat['fpr_at_threshold']:.4f}")
    print(f"  {'kind':<13} {'n':>5} {'accuracy':>9} {'ROC-AUC':>8} {'FPR/FNR@0.5':>12} {'@threshold':>11}")
    for kind, row in report["test_by_kind"].items():
        rate = row.get("fpr", row.get("fnr"))
        at_t = row.get("fpr_at_threshold", row.get("fnr_at_threshold"))
        print(f"  {kind:<13} {row['count']:>5} {row['accuracy']:>9.4f} {row.get('roc_auc', float('nan')):>8.4f} "
              f"{rate:>12.4f} {at_t:>11.4f}")
    for name, row in report["test_logos_by_variant"].items():
        print(f"  logos: {name:<28} {row['count']:>5} FNR at 0.5 {row['fnr']:.4f}")
    t = report["threshold"]
    print(f"  threshold for precision >= {t['target_precision']} on validation: {t['validation']['threshold']} "
          f"(val precision {t['validation']['precision']}, recall {t['validation']['recall']}); on test: "
          f"precision {t['test_at_validation_threshold']['precision']}, recall "
          f"{t['test_at_validation_threshold']['recall']}, accuracy {t['test_at_validation_threshold']['accuracy']}")
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
    baseline: list[Path] = typer.Option([], help="A previous model.onnx to score on the same test split "
                                                   "(writes baseline_v<version>.json); may be repeated."),
) -> None:
    print_report(evaluate(build, downloads, out, baseline))
    print(f"wrote {out}/report.json, roc.png, pr.png, reliability.png, worst_<kind>.png")


if __name__ == "__main__":
    typer.run(main)
