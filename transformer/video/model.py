"""``nsfw-video-detection``: videos and animated images → NSFW scores over time.

KServe calls ``preprocess`` (parse the request, look the names up on Commons), ``predict``
(per video: download, then `pipeline.score_video`, whose decoding and Triton calls
overlap, so they are one stage) and ``postprocess`` (the response, per-item errors).

Videos are heavy, so at most ``VIDEO_WORKERS`` are downloaded and decoded at once, across
requests, in their own thread pool: a long video never starves the image models' pool.
Request bodies are parsed in the shared parse pool, so a request never waits behind a
video to be read. Each video's scan is bounded by ``VIDEO_BUDGET_S`` of decoding, and the
request's deadline bounds its lookups, its downloads and its wait for a worker. If one
video fails for a server-side reason, its siblings are cancelled: the request fails anyway.

Reports are kept in the score store by the video's SHA-1 and the scoring variant (the
NSFW model's version with the threshold and early exit, which shape the report): a stored
report skips the download and the scan.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import numpy as np

from preprocessing.errors import CodedError
from preprocessing.specs import NSFW
from store import Key, Record
from transformer import request_log
from transformer.commons import CommonsClient, CommonsFile
from transformer.config import Settings
from transformer.errors import BadRequest, ItemError
from transformer.request import Instance, parse_body, parse_request
from transformer.responses import MODEL_VERSION_HEADER, error_prediction, respond
from transformer.score_cache import ScoreCache, commons_key, inline_variant
from transformer.scoring import score
from transformer.sources import VIDEOS, Source, download, resolve_all
from transformer.tasks import all_or_none, known
from transformer.triton_model import TritonModel
from transformer.video.errors import VideoError
from transformer.video.limits import VideoLimits, too_many_pixels
from transformer.video.pipeline import ScoringOptions, score_video
from transformer.video.report import VideoReport

NAME = "nsfw-video-detection"
TARGET = "nsfw"
# request.py's base64 checks name images; for this model the same problems are videos'.
_RENAMED_CODES = {"image_too_large": "video_too_large", "empty_image": "empty_video"}


@dataclass
class VideoBatch:
    """One request in flight: per instance its options, then its source, then its result.
    ``debug``: the answer carries the stage timings."""

    instances: list[Instance]
    options: list[ScoringOptions | ItemError]
    sources: list[Source]
    keys: list[Key | None]
    deadline: float
    results: list[VideoReport | Record | CodedError] | None = None
    debug: bool = False


class VideoModel(TritonModel):
    # The Triton model this one scores with; readiness is that model's (transformer.readiness).
    triton_model = NSFW.name

    def __init__(
        self,
        settings: Settings,
        commons: CommonsClient,
        executor: Executor,
        parser: Executor,
        cache: ScoreCache | None = None,
    ) -> None:
        """``executor`` decodes videos (``VIDEO_WORKERS`` threads); ``parser`` parses bodies
        and hashes inline videos; ``cache``, when given, is the score store."""
        super().__init__(NAME, return_response_headers=True)
        self.settings = settings
        self.cache = cache
        self.commons = commons
        self.executor = executor
        self.parser = parser
        self.limits = VideoLimits.from_settings(settings)
        self._slots = asyncio.Semaphore(settings.video_workers)

    async def preprocess(self, payload: dict | bytes, headers: dict | None = None) -> VideoBatch:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_deadline_s
        max_instances = self.settings.max_instances
        body = await loop.run_in_executor(
            self.parser, partial(parse_body, payload, max_instances=max_instances)
        )
        request = await loop.run_in_executor(
            self.parser,
            partial(
                parse_request,
                body,
                max_instances=max_instances,
                max_bytes=self.settings.max_video_bytes,
                media_key="video",
            ),
        )
        defaults = _options(body, ScoringOptions(), "the request")
        if isinstance(defaults, ItemError):
            raise BadRequest(defaults.message)
        options = [
            _options(raw, defaults, f"instances[{i}]") if isinstance(raw, dict) else defaults
            for i, raw in enumerate(body["instances"])
        ]
        instances = [_renamed(inst) for inst in request.instances]
        sources = await resolve_all(instances, self.commons, deadline=deadline)
        keys = await loop.run_in_executor(
            self.parser, _keys, sources, options, self.limits.max_frames
        )
        return VideoBatch(instances, options, sources, keys, deadline, debug=request.debug)

    async def predict(
        self, batch: VideoBatch, headers: dict | None = None, response_headers: dict | None = None
    ) -> VideoBatch:
        versions: set[str] = set()
        stored: list[Record | None] = [None] * len(batch.keys)
        if self.cache:
            found = await self.cache.lookup(NAME, batch.keys, ("sfw", "nsfw"))
            stored = [r if r is not None and isinstance(r.video, dict) else None for r in found]
        batch.results = await all_or_none(
            self._score(s, o, batch.deadline, versions) if record is None else known(record)
            for s, o, record in zip(batch.sources, batch.options, stored, strict=True)
        )
        if any(r is not None for r in stored):
            versions.add(str(NSFW.version))
        if response_headers is not None and versions:
            response_headers[MODEL_VERSION_HEADER] = ",".join(sorted(versions))
        self._remember(batch, stored)
        return batch

    def _remember(self, batch: VideoBatch, stored: list[Record | None]) -> None:
        if self.cache is None:
            return
        records = []
        for key, source, result in zip(batch.keys, batch.sources, batch.results or [], strict=True):
            if key is None or not isinstance(result, VideoReport):
                continue
            file = source if isinstance(source, CommonsFile) else None
            records.append(Record(
                key,
                {"nsfw": result.prediction, "sfw": 1.0 - result.prediction},
                mime=file.mime if file else None,
                size=file.size if file else len(source) if isinstance(source, bytes) else None,
                video=result.as_dict(),
                titles=(file.title,) if file else (),
            ))
        titles = [
            (record.key.sha1, source.title)
            for record, source in zip(stored, batch.sources, strict=True)
            if record is not None and isinstance(source, CommonsFile)
            and source.title not in record.titles
        ]
        self.cache.remember(records, titles)

    async def postprocess(
        self, batch: VideoBatch, headers: dict | None = None, response_headers: dict | None = None
    ) -> dict:
        results = batch.results or []
        predictions = [
            self._prediction(i, r, k)
            for i, r, k in zip(batch.instances, results, batch.keys, strict=True)
        ]
        return respond(self.name, predictions, results, debug=batch.debug)

    async def _score(
        self,
        source: Source,
        options: ScoringOptions | ItemError,
        deadline: float,
        versions: set[str],
    ) -> VideoReport | CodedError:
        if isinstance(source, ItemError):
            return source
        if isinstance(options, ItemError):
            return options
        if isinstance(source, CommonsFile) and source.width * source.height > self.limits.max_pixels:
            # Commons knows the frame size: no need to download 100 MB to learn it.
            return VideoError(
                "video_too_large", too_many_pixels(source.width, source.height, self.limits)
            )
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            return ItemError(
                "deadline_exceeded",
                f"the request's {self.settings.request_deadline_s:g} s deadline passed while "
                f"every video worker ({self.settings.video_workers}) was busy",
            )
        try:
            data = await download(self.commons, source, VIDEOS, deadline=deadline)
            if isinstance(data, ItemError):
                return data
            started = time.perf_counter()
            try:
                scored = await score_video(
                    data,
                    limits=self.limits,
                    options=options,
                    scorer=lambda frames: self._triton_scores(frames, versions),
                    executor=self.executor,
                    max_chunk=NSFW.max_batch_size,
                )
            finally:
                # Decoding and its Triton calls overlap, so the scan is one stage of its
                # own; its Triton calls are counted under "triton" as well.
                request_log.add_stage("video_scan", time.perf_counter() - started)
        except VideoError as exc:
            return exc
        finally:
            self._slots.release()
        return scored.report

    async def _triton_scores(self, batch: np.ndarray, versions: set[str]) -> np.ndarray:
        scores = await score(self._grpc_client, NSFW, batch, self.settings.triton_timeout_s)
        versions.add(scores.model_version)
        return scores.values[:, NSFW.labels.index("nsfw")]

    def _prediction(
        self, instance: Instance, result: VideoReport | Record | CodedError, key: Key | None
    ) -> dict:
        if isinstance(result, CodedError):
            return error_prediction(instance.filename, result)
        cached = isinstance(result, Record)
        prediction = {
            "filename": instance.filename,
            "target": instance.target or TARGET,
            **(result.video or {} if cached else result.as_dict()),
            "cached": cached,
        }
        if key is not None:
            prediction["sha1"] = key.sha1
        return prediction


def _options(raw: dict, defaults: ScoringOptions, where: str) -> ScoringOptions | ItemError:
    """``threshold`` and ``early_exit`` from ``raw``, falling back to ``defaults``."""
    threshold = raw.get("threshold", defaults.threshold)
    early_exit = raw.get("early_exit", defaults.early_exit)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0 < threshold <= 1
    ):
        return ItemError("invalid_instance", f"{where}: threshold must be a number in (0, 1]")
    if not isinstance(early_exit, bool):
        return ItemError("invalid_instance", f"{where}: early_exit must be true or false")
    return ScoringOptions(float(threshold), early_exit)


def _keys(
    sources: list[Source], options: list[ScoringOptions | ItemError], max_frames: int
) -> list[Key | None]:
    """Store keys: the video's SHA-1 (Commons' for a name, the bytes' own inline) and what
    shapes its report; none for items that already failed."""
    keys: list[Key | None] = []
    for source, option in zip(sources, options, strict=True):
        if isinstance(option, ItemError):
            keys.append(None)
        elif isinstance(source, CommonsFile) and VIDEOS.accepts(source):
            keys.append(commons_key(source.sha1, NAME, _variant(option, max_frames)))
        elif isinstance(source, bytes) and source:
            variant = inline_variant(_variant(option, max_frames))
            keys.append(Key(hashlib.sha1(source).hexdigest(), NAME, variant))
        else:
            keys.append(None)
    return keys


def _variant(options: ScoringOptions, max_frames: int) -> str:
    early = "on" if options.early_exit else "off"
    return (
        f"{NSFW.version};frames={max_frames};threshold={options.threshold!r};early_exit={early}"
    )


def _renamed(instance: Instance) -> Instance:
    error = instance.error
    if error is None or error.code not in _RENAMED_CODES:
        return instance
    return Instance(
        instance.filename,
        instance.target,
        error=ItemError(_RENAMED_CODES[error.code], error.message),
    )
