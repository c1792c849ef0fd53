"""Render the data set once and keep only its pooled backbone features (cached in build/).

The backbone is frozen, so the head trains on features alone. They are computed by
ONNX Runtime on the exported backbone graph (about 5x faster than eager torch on two
cores), i.e. by the very graph, normalisation included, that the service runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.logo import LABELS, data
from predictor.logo.export import INPUT, export_onnx, session
from predictor.logo.fetch import Package
from predictor.logo.model import Backbone

BATCH = 64
# How many test items per class are kept as images, for the parity and separation tests.
SAMPLE_PER_CLASS = 32

# Everything that changes the pixels or the features; a change invalidates the cache.
_INPUTS = [
    *(Path(data.__file__).parent / name for name in (
        "__init__.py", "data.py", "logos.py", "photos.py", "synthetic.py", "imaging.py", "sources.py",
        "model.py", "export.py", "features.py", "package-lock.json")),
    Path(data.__file__).parents[2] / "transformer" / "decode.py",
    Path(data.__file__).parents[2] / "transformer" / "tensor.py",
]


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32 [N, 1280]
    labels: np.ndarray  # int64 [N]
    splits: np.ndarray  # str [N]: "train", "val" or "test"
    groups: np.ndarray  # str [N]: the source each item was made from
    digest: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == name
        return self.features[mask], self.labels[mask]


def load_or_build(out: Path, packages: dict[str, Package]) -> Dataset:
    """The cached data set when it is current, else render, extract and cache it."""
    digest = _digest(packages)
    cache = out / "features.npz"
    if cache.exists():
        with np.load(cache) as saved:
            if str(saved["digest"]) == digest:
                return Dataset(saved["features"], saved["labels"], saved["splits"], saved["groups"], digest)
    dataset = _build(out, data.plan(packages), digest)
    np.savez(cache, features=dataset.features, labels=dataset.labels, splits=dataset.splits,
             groups=dataset.groups, digest=digest)
    return dataset


def _build(out: Path, tasks: list[data.Task], digest: str) -> Dataset:
    out.mkdir(parents=True, exist_ok=True)
    backbone_path = out / "backbone.onnx"
    export_onnx(Backbone(), backbone_path, "features")
    extractor = session(backbone_path)
    sample_ids = _pick_sample([item for task in tasks for item in task.items])

    features, labels, splits, groups, batch, sample, skipped = [], [], [], [], [], [], []
    with (out / "manifest.jsonl").open("w") as manifest:
        for rendered in data.render_all(tasks):
            if rendered.image is None:
                skipped.append(rendered.item.id)
                continue
            manifest.write(json.dumps(data.manifest_row(rendered)) + "\n")
            labels.append(rendered.item.label)
            splits.append(rendered.item.split)
            groups.append(rendered.item.group)
            batch.append(rendered.image)
            if rendered.item.id in sample_ids:
                sample.append(rendered)
            if len(batch) == BATCH:
                features.append(extractor.run(None, {INPUT: np.stack(batch)})[0])
                batch = []
        if batch:
            features.append(extractor.run(None, {INPUT: np.stack(batch)})[0])
    (out / "skipped.json").write_text(json.dumps(skipped, indent=1))
    np.savez_compressed(
        out / "test_sample.npz",
        images=np.stack([r.image for r in sample]),
        labels=np.array([r.item.label for r in sample]),
        ids=np.array([r.item.id for r in sample]),
    )
    return Dataset(np.concatenate(features), np.array(labels), np.array(splits), np.array(groups), digest)


def _pick_sample(items: list[data.Item]) -> set[str]:
    rng = np.random.default_rng(data.SEED)
    picked: set[str] = set()
    for label in range(len(LABELS)):
        ids = sorted(item.id for item in items if item.split == "test" and item.label == label)
        picked.update(rng.choice(ids, size=min(SAMPLE_PER_CLASS, len(ids)), replace=False).tolist())
    return picked


def _digest(packages: dict[str, Package]) -> str:
    h = hashlib.sha256()
    for path in _INPUTS:
        h.update(path.read_bytes())
    h.update(json.dumps(sorted((p.name, p.version) for p in packages.values())).encode())
    return h.hexdigest()
