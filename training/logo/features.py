"""Render the data set once and keep what training needs of each item (cached in build/).

The trunk is frozen on CPU below its top MBConv block (``model.TOP_BLOCKS``), so training
needs only two things per item, both computed once by ONNX Runtime on the exported trunk graph
(about 5x faster than eager torch on two cores; the very graph, normalisation included, the
service runs): the pooled features ``[1280]`` the head trains on, and the input of the top
block ``[192, 7, 7]`` (float16) from which ``tune`` fine-tunes that block and the 1x1 head
convolution with the head.

Augmentation (``augment``) cannot run per step on fixed features; each training item may
get ``AUG_VIEWS`` augmented views, seeded by the item, of which training draws one per epoch.
The v2 to v4 builds use none: on the v1 data, views made validation worse (loss 0.053 with none,
0.064 / 0.066 / 0.072 with 1 / 2 / 3) and each cost ~85 s of the build's time budget, which
the hard negatives and the fine-tuning now use. Validation and test items are never augmented.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from preprocessing import decode, tensor
from training.logo import LABELS, augment, data
from training.logo.export import INPUT, export_onnx, session
from training.logo.fetch import Package
from training.logo.model import FEATURES, Backbone, Trunk

BATCH = 64
# See the module docstring and the model card: views cost time and did not help.
AUG_VIEWS = 0
# How many test items per class are kept as images, for the parity and separation tests.
SAMPLE_PER_CLASS = 32

# Everything that changes the pixels or the features; a change invalidates the cache.
_INPUTS = [
    *(Path(data.__file__).parent / name for name in (
        "__init__.py", "data.py", "logos.py", "photos.py", "synthetic.py", "imaging.py", "sources.py",
        "figures.py", "wordmarks.py", "structures.py",
        "augment.py", "model.py", "export.py", "features.py", "package-lock.json")),
    Path(decode.__file__),
    Path(tensor.__file__),
]


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32 [N, 1280]: the clean (serving) view of every item
    labels: np.ndarray  # int64 [N]
    splits: np.ndarray  # str [N]: "train", "val" or "test"
    groups: np.ndarray  # str [N]: the source each item was made from
    ids: np.ndarray  # str [N]: the manifest id of each item
    views: np.ndarray  # float32 [N_train, AUG_VIEWS, 1280]: augmented views of the train rows, in order
    data_digest: str  # sha256 of every item's id, label, split and pixels, augmented views included
    kinds: np.ndarray | None = None  # str [N]: data.KINDS
    blocks: np.ndarray | None = None  # float16 [N, 192, 7, 7]: the top MBConv block's input

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == name
        return self.features[mask], self.labels[mask]

    def subset(self, mask: np.ndarray) -> Dataset:
        """The items where ``mask`` is true (without the block inputs). Its digest names the
        parent's and the mask, so a checkpoint of one is never resumed for the other."""
        rows = {name: getattr(self, name)[mask] for name in ("features", "labels", "splits", "groups", "ids")}
        views = self.views[mask[self.splits == "train"]]
        kinds = None if self.kinds is None else self.kinds[mask]
        digest = hashlib.sha256(self.data_digest.encode() + np.packbits(mask).tobytes()).hexdigest()
        return Dataset(**rows, views=views, data_digest=digest, kinds=kinds)


def load_or_build(out: Path, packages: dict[str, Package]) -> Dataset:
    """The cached data set when it is current, else render, extract and cache it."""
    key = _cache_key(packages)
    cache = out / "features.npz"
    if cache.exists():
        with np.load(cache) as saved:
            if str(saved["cache_key"]) == key:
                arrays = {name: saved[name] for name in saved.files
                          if name not in ("data_digest", "cache_key")}
                return Dataset(**arrays, data_digest=str(saved["data_digest"]))
    dataset = _build(out, data.plan(packages))
    np.savez(cache, features=dataset.features, labels=dataset.labels, splits=dataset.splits,
             groups=dataset.groups, ids=dataset.ids, views=dataset.views, kinds=dataset.kinds,
             blocks=dataset.blocks, data_digest=dataset.data_digest, cache_key=key)
    return dataset


class _Extractor:
    """Feeds images to the trunk in batches of ``BATCH``; its outputs come out in order."""

    def __init__(self, extractor: ort.InferenceSession, keep_blocks: bool = True) -> None:
        self._session = extractor
        self._keep_blocks = keep_blocks
        self._pending: list[np.ndarray] = []
        self.features: list[np.ndarray] = []
        self.blocks: list[np.ndarray] = []

    def add(self, images: np.ndarray) -> None:
        self._pending.extend(images)
        while len(self._pending) >= BATCH:
            self._run(self._pending[:BATCH])
            self._pending = self._pending[BATCH:]

    def result(self) -> np.ndarray:
        if self._pending:
            self._run(self._pending)
            self._pending = []
        return np.concatenate(self.features) if self.features else np.zeros((0, FEATURES), np.float32)

    def _run(self, images: list[np.ndarray]) -> None:
        features, blocks = self._session.run(None, {INPUT: np.stack(images)})
        self.features.append(features)
        if self._keep_blocks:
            self.blocks.append(blocks.astype(np.float16))


def augmented_views(image: np.ndarray, seed: int, views: int = AUG_VIEWS) -> np.ndarray:
    """The ``views`` augmented uint8 views of one item, from its seed alone."""
    if views == 0:
        return np.zeros((0, *image.shape), np.uint8)
    params = augment.draw([np.random.default_rng([seed, view]) for view in range(views)])
    batch = torch.from_numpy(np.repeat(image[None], views, axis=0))
    return augment.augment(batch, params).numpy()


def _build(out: Path, tasks: list[data.Task]) -> Dataset:
    out.mkdir(parents=True, exist_ok=True)
    backbone_path = out / "backbone.onnx"
    export_onnx(Trunk(Backbone()), backbone_path, ("features", "block"))
    extractor = session(backbone_path)
    clean, views = _Extractor(extractor), _Extractor(extractor, keep_blocks=False)
    sample_ids = _pick_sample([item for task in tasks for item in task.items])
    digest = hashlib.sha256()

    items, sample, skipped = [], [], []
    with (out / "manifest.jsonl").open("w") as manifest:
        for rendered in data.render_all(tasks):
            item = rendered.item
            if rendered.image is None:
                skipped.append(item.id)
                continue
            manifest.write(json.dumps(data.manifest_row(rendered)) + "\n")
            digest.update(f"{item.id}\0{item.label}\0{item.split}\0".encode())
            digest.update(rendered.image.tobytes())
            clean.add(rendered.image[None])
            if item.split == "train" and AUG_VIEWS:
                augmented = augmented_views(rendered.image, item.seed)
                digest.update(augmented.tobytes())
                views.add(augmented)
            items.append(item)
            if item.id in sample_ids:
                sample.append(rendered)
    (out / "skipped.json").write_text(json.dumps(skipped, indent=1))
    np.savez_compressed(
        out / "test_sample.npz",
        images=np.stack([r.image for r in sample]),
        labels=np.array([r.item.label for r in sample]),
        ids=np.array([r.item.id for r in sample]),
    )
    features = clean.result()
    n_train = sum(item.split == "train" for item in items)
    return Dataset(
        features, np.array([i.label for i in items]), np.array([i.split for i in items]),
        np.array([i.group for i in items]), np.array([i.id for i in items]),
        views.result().reshape(n_train, AUG_VIEWS, features.shape[1]), digest.hexdigest(),
        kinds=np.array([i.kind for i in items]), blocks=np.concatenate(clean.blocks),
    )


def _pick_sample(items: list[data.Item]) -> set[str]:
    rng = np.random.default_rng(data.SEED)
    picked: set[str] = set()
    for label in range(len(LABELS)):
        ids = sorted(item.id for item in items if item.split == "test" and item.label == label)
        picked.update(rng.choice(ids, size=min(SAMPLE_PER_CLASS, len(ids)), replace=False).tolist())
    return picked


def _cache_key(packages: dict[str, Package]) -> str:
    h = hashlib.sha256()
    for path in _INPUTS:
        h.update(path.read_bytes())
    h.update(json.dumps(sorted((p.name, p.version) for p in packages.values())).encode())
    return h.hexdigest()
