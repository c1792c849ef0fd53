"""The labelled logo data set: what goes in, how it is split, and how each item is made.

Class 1 (logo): one rendering of every SVG in the npm logo packages. Class 0
(out_of_domain): many random crops of each photograph, plus synthetic text pages and
charts. Splits are made per source (a logo brand, a photograph, a synthetic image),
never per crop, with seed 1984: test first, then validation out of the rest.

Every item ends as file bytes that go through the serving decode rule
(``imaging.serving_tensor``); each has its own seed, so results do not depend on which
worker process renders it or in what order.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from predictor.logo import LABELS, logos, photos, sources, synthetic
from predictor.logo.fetch import Package
from predictor.logo.imaging import serving_tensor

SEED = 1984
TEST_SHARE = 0.1
VAL_SHARE = 0.2
CROPS_PER_PHOTO = 64
SYNTHETIC_PER_KIND = 300
# Tasks handed to the render pool at a time (see render_all).
WINDOW = 256


@dataclass(frozen=True)
class Item:
    id: str
    label: int
    group: str
    split: str
    package: str
    version: str
    licence: str
    source_file: str
    seed: int


@dataclass(frozen=True)
class Task:
    """One unit of rendering work: a logo, every crop of one photo, or one synthetic image."""

    kind: str  # "logo", "photo" or one of synthetic.KINDS
    items: tuple[Item, ...]
    payload: logos.LogoSvg | Path | None = None


@dataclass(frozen=True)
class Rendered:
    item: Item
    image: np.ndarray | None  # uint8 224x224x3, None when the source could not be rendered
    params: dict


@dataclass(frozen=True)
class _Source:
    """One source before splitting: everything made from it lands in the same split."""

    kind: str
    label: int
    group: str
    items: list[dict]  # Item fields other than label, group, split and seed
    payload: logos.LogoSvg | Path | None = None


def plan(packages: dict[str, Package]) -> list[Task]:
    """Every rendering task of the data set, in a fixed order, with splits assigned."""
    found: list[_Source] = []
    for name in sources.npm_packages():
        package = packages[name]
        for logo in logos.read_logos(name, package.root):
            meta = dict(package=name, version=package.version, licence=logo.licence or package.licence,
                        source_file=logo.source_file, id=f"npm:{name}/{logo.source_file}")
            found.append(_Source("logo", 1, f"brand:{logo.brand}", [meta], logo))
    for photo in sources.PHOTOS:
        package = packages[photo.package]
        meta = dict(package=photo.package, version=package.version, licence=photo.licence,
                    source_file=photo.path)
        crops = [dict(meta, id=f"{photo.package}:{photo.path}#crop{i}") for i in range(CROPS_PER_PHOTO)]
        found.append(_Source("photo", 0, f"photo:{photo.package}/{photo.path}", crops,
                             package.root / photo.path))
    for kind in synthetic.KINDS:
        for i in range(SYNTHETIC_PER_KIND):
            meta = dict(package="synthetic", version="", licence="CC0-1.0 (generated here)",
                        source_file=f"predictor/logo/synthetic.py:{kind}", id=f"synthetic:{kind}#{i}")
            found.append(_Source(kind, 0, f"synthetic:{kind}#{i}", [meta]))

    splits = assign_splits({source.group for source in found})
    return [
        Task(source.kind, tuple(
            Item(label=source.label, group=source.group, split=splits[source.group], seed=_seed(meta["id"]), **meta)
            for meta in source.items
        ), source.payload)
        for source in found
    ]


def assign_splits(groups: set[str]) -> dict[str, str]:
    """Split source groups with ``SEED``, stratified by kind ("brand", "photo", "synthetic").

    Stratifying keeps the 44 photographs from being outnumbered by the synthetic images
    when the shares are drawn: each split gets its share of real photographs.
    """
    splits: dict[str, str] = {}
    rng = np.random.default_rng(SEED)
    for stratum in sorted({group.split(":", 1)[0] for group in groups}):
        names = sorted(group for group in groups if group.split(":", 1)[0] == stratum)
        order = [names[i] for i in rng.permutation(len(names))]
        n_test = round(len(order) * TEST_SHARE)
        n_val = round((len(order) - n_test) * VAL_SHARE)
        for i, group in enumerate(order):
            splits[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


def render_all(tasks: list[Task], workers: int | None = None) -> Iterator[Rendered]:
    """Render every item in ``tasks`` order, in parallel worker processes."""
    total = sum(len(task.items) for task in tasks)
    # spawn, not fork: the parent may already run torch/onnxruntime thread pools.
    with multiprocessing.get_context("spawn").Pool(workers or os.cpu_count()) as pool, \
            tqdm(total=total, desc="render", unit="img") as progress:
        # imap renders ahead of the consumer without limit; windows of tasks cap the images
        # waiting in memory (all of them would be 1.8 GB while the backbone catches up).
        for start in range(0, len(tasks), WINDOW):
            # Small chunks: a photo task holds CROPS_PER_PHOTO items and must not pile up on one worker.
            for results in pool.imap(render_task, tasks[start : start + WINDOW], chunksize=4):
                progress.update(len(results))
                yield from results


def render_task(task: Task) -> list[Rendered]:
    if task.kind == "photo":
        photo = photos.load_photo(task.payload)
        return [_render(item, lambda rng: photos.render_crop(photo, rng)) for item in task.items]
    (item,) = task.items
    if task.kind == "logo":
        return [_render(item, lambda rng: logos.render_logo(task.payload, rng))]
    return [_render(item, lambda rng: synthetic.render_synthetic(task.kind, rng))]


def manifest_row(rendered: Rendered) -> dict:
    return {**asdict(rendered.item), "label_name": LABELS[rendered.item.label], "render": rendered.params}


def _render(item: Item, make) -> Rendered:
    try:
        data, params = make(np.random.default_rng(item.seed))
    except logos.BlankRender as exc:
        return Rendered(item, None, {"skipped": str(exc)})
    return Rendered(item, serving_tensor(data), params)


def _seed(item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SEED}:{item_id}".encode()).digest()[:8], "little")
