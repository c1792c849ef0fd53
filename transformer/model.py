"""The KServe models: request → fetch → decode → tensor → Triton → scores → response.

KServe calls ``preprocess`` (parse, fetch, decode: everything up to the tensor),
``predict`` (Triton) and ``postprocess`` (the gogologo response), and times each stage
in its own Prometheus histograms.

One deadline, set when the request arrives, bounds its lookups, downloads and retries;
items that miss it get ``deadline_exceeded`` and the others are still scored. Each Triton
call has its own ``TRITON_TIMEOUT_S``.

Between the lookup and the download, the score store (``transformer.score_cache``) answers
for files already scored by this model version: a hit skips the download, the decode and
Triton. Each scored item's response carries its ``sha1`` and whether it was ``cached``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from preprocessing.decode import DecodeError, decode_image
from preprocessing.errors import CodedError
from preprocessing.specs import ModelSpec
from preprocessing.tensor import PREPARATIONS, Preparation
from store import Key, Record
from transformer import request_log
from transformer.commons import CommonsClient, CommonsFile
from transformer.config import Settings
from transformer.errors import ItemError
from transformer.metrics import DECODE_SECONDS, DOWNLOAD_BYTES_RESERVED
from transformer.request import Instance, parse_request_in
from transformer.responses import MODEL_VERSION_HEADER, error_prediction, respond
from transformer.score_cache import ScoreCache, commons_key, inline_variant
from transformer.scoring import score
from transformer.sources import IMAGES, Source, download, resolve_all
from transformer.tasks import ByteBudget, all_or_none, in_thread, known
from transformer.triton_model import TritonModel


@dataclass
class Batch:
    """One request in flight: its instances and, per instance, its source, its store key,
    and its result: a tensor, then scores; a stored record; or an error. ``debug``: the
    answer carries the stage timings."""

    instances: list[Instance]
    sources: list[Source]
    keys: list[Key | None]
    results: list[np.ndarray | Record | CodedError] = field(default_factory=list)
    debug: bool = False


def prepare(
    data: bytes, preparation: Preparation, settings: Settings, model: str
) -> np.ndarray | CodedError:
    """Decode and preprocess one image; runs in the thread pool, never on the event loop."""
    started = time.perf_counter()
    try:
        image = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            max_decode_bytes=settings.max_decode_bytes,
            min_side=preparation.min_side,
        )
        return preparation.to_tensor(image)
    except DecodeError as exc:
        return exc
    finally:
        DECODE_SECONDS.labels(model=model).observe(time.perf_counter() - started)


def download_budget(settings: Settings) -> ByteBudget:
    """The image downloads' byte budget, reported as ``transformer_download_bytes_reserved``."""
    return ByteBudget(settings.max_inflight_download_bytes, DOWNLOAD_BYTES_RESERVED.set)


class ImageModel(TritonModel):
    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        commons: CommonsClient,
        executor: Executor,
        parser: Executor,
        cache: ScoreCache | None = None,
        downloads: ByteBudget | None = None,
    ) -> None:
        """``executor`` decodes images; ``parser`` parses request bodies and hashes inline
        bytes; ``cache``, when given, is the score store; ``downloads`` bounds the bytes of
        downloads in flight (shared by the image models; by default one of their own)."""
        super().__init__(spec.name, return_response_headers=True)
        self.spec = spec
        self.version = str(spec.version)
        self.preparation = PREPARATIONS[spec.name]
        self.settings = settings
        self.commons = commons
        self.executor = executor
        self.parser = parser
        self.cache = cache
        self.downloads = downloads or download_budget(settings)

    async def preprocess(self, payload: dict | bytes, headers: dict | None = None) -> Batch:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_deadline_s
        request = await parse_request_in(
            self.parser,
            payload,
            max_instances=self.settings.max_instances,
            max_bytes=self.settings.max_image_bytes,
        )
        instances = request.instances
        sources = await resolve_all(instances, self.commons, deadline=deadline)
        # Hashing inline bytes is CPU work for a thread; names' keys are ready at once.
        if any(isinstance(source, bytes) for source in sources):
            keys = await loop.run_in_executor(self.parser, self._keys, sources)
        else:
            keys = self._keys(sources)
        stored = (
            await self.cache.lookup(self.name, keys, self.spec.labels)
            if self.cache
            else [None] * len(keys)
        )
        # One download and decode per distinct file: fifty names of one file hold its bytes once.
        shared: dict[CommonsFile, asyncio.Future] = {}

        def work(source: Source, record: Record | None) -> Awaitable[np.ndarray | CodedError | Record]:
            if record is not None:
                return known(record)
            if not isinstance(source, CommonsFile):
                return self._fetch_and_prepare(source, deadline)
            if source not in shared:
                shared[source] = asyncio.ensure_future(self._fetch_and_prepare(source, deadline))
            return shared[source]

        results = await all_or_none(
            work(source, record) for source, record in zip(sources, stored, strict=True)
        )
        return Batch(instances, sources, keys, results, debug=request.debug)

    def _keys(self, sources: list[Source]) -> list[Key | None]:
        """Store keys: Commons' SHA-1 for looked-up files, the bytes' own for inline data.

        The two never share scores: a looked-up file is scored from its thumbnail, inline
        bytes as sent, and a client's bytes must not decide what a Commons file scores.
        """
        keys: list[Key | None] = []
        for source in sources:
            if isinstance(source, CommonsFile) and IMAGES.accepts(source):
                keys.append(commons_key(source.sha1, self.name, self.version))
            elif isinstance(source, bytes) and source:
                digest = hashlib.sha1(source).hexdigest()
                keys.append(Key(digest, self.name, inline_variant(self.version)))
            else:
                keys.append(None)
        return keys

    async def _fetch_and_prepare(
        self, source: Source, deadline: float
    ) -> np.ndarray | CodedError:
        if not isinstance(source, CommonsFile) or not IMAGES.accepts(source):
            return await self._prepare(await download(self.commons, source, IMAGES, deadline=deadline))
        # The download's bytes are reserved before it starts and held until they are decoded.
        bound = self.commons.fetch_bound(source, original=IMAGES.original)
        reserved = await self.downloads.acquire(bound, deadline)
        if reserved is None:
            return ItemError(
                "deadline_exceeded",
                f"the request's {self.settings.request_deadline_s:g} s deadline passed while "
                f"downloads in flight held all {self.settings.max_inflight_download_bytes} bytes "
                f"allowed ({source.title} needs up to {bound})",
            )
        try:
            data = await download(self.commons, source, IMAGES, deadline=deadline)
        except BaseException:
            self.downloads.release(reserved)
            raise
        return await self._prepare(data, done=partial(self.downloads.release, reserved))

    async def _prepare(
        self, source: bytes | CodedError, done: Callable[[], None] = lambda: None
    ) -> np.ndarray | CodedError:
        """Decode in a thread; ``done`` once the bytes are no longer needed: when the thread
        has finished with them, even if this request was cancelled meanwhile."""
        if isinstance(source, CodedError):
            done()
            return source
        started = time.perf_counter()
        try:
            return await in_thread(
                self.executor, done, prepare, source, self.preparation, self.settings, self.name
            )
        finally:
            # Wall time from here, waiting for a decode thread included.
            request_log.add_stage("decode", time.perf_counter() - started)

    async def predict(
        self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None
    ) -> Batch:
        ready = [i for i, r in enumerate(batch.results) if isinstance(r, np.ndarray)]
        if not ready:
            if response_headers is not None and any(isinstance(r, Record) for r in batch.results):
                response_headers[MODEL_VERSION_HEADER] = self.version
            self._remember(batch, ready)
            return batch
        stacked = np.stack([batch.results[i] for i in ready])
        scores = await score(
            self._grpc_client, self.spec, stacked, self.settings.triton_timeout_s
        )
        for i, row in zip(ready, scores.values):
            batch.results[i] = row
        if response_headers is not None and scores.model_version:
            response_headers[MODEL_VERSION_HEADER] = scores.model_version
        self._remember(batch, ready)
        return batch

    def _remember(self, batch: Batch, scored: list[int]) -> None:
        """Hand the newly scored items, and new titles of stored ones, to the store."""
        if self.cache is None:
            return
        records = []
        for i in scored:
            key, source = batch.keys[i], batch.sources[i]
            if key is None:
                continue
            file = source if isinstance(source, CommonsFile) else None
            records.append(Record(
                key,
                self._scores(batch.results[i]),
                mime=file.mime if file else None,
                size=file.size if file else len(source) if isinstance(source, bytes) else None,
                titles=(file.title,) if file else (),
            ))
        titles = [
            (r.key.sha1, s.title)
            for r, s in zip(batch.results, batch.sources, strict=True)
            if isinstance(r, Record) and isinstance(s, CommonsFile) and s.title not in r.titles
        ]
        self.cache.remember(records, titles)

    def _scores(self, row: np.ndarray) -> dict[str, float]:
        return {label: float(value) for label, value in zip(self.spec.labels, row, strict=True)}

    async def postprocess(
        self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None
    ) -> dict:
        predictions = [
            self._prediction(i, r, k)
            for i, r, k in zip(batch.instances, batch.results, batch.keys, strict=True)
        ]
        return respond(self.name, predictions, batch.results, debug=batch.debug)

    def _prediction(
        self, instance: Instance, result: np.ndarray | Record | CodedError, key: Key | None
    ) -> dict:
        if isinstance(result, CodedError):
            return error_prediction(instance.filename, result)
        scores = result.scores if isinstance(result, Record) else self._scores(result)
        target = self.spec.target
        other = next(label for label in self.spec.labels if label != target)
        prediction = {
            "filename": instance.filename,
            "target": instance.target or target,
            "prediction": scores[target],
            "out_of_domain": scores[other],
            "cached": isinstance(result, Record),
        }
        if key is not None:
            prediction["sha1"] = key.sha1
        return prediction

