"""``python -m transformer [kserve flags]``: serve logo-detection, nsfw-detection and
nsfw-video-detection.

KServe's own flags apply, notably ``--predictor_host 127.0.0.1:8001
--predictor_protocol grpc-v2 --enable_predictor_health_check``; everything else comes
from the environment (``transformer.config``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve import model_server
from kserve.model_server import app

from preprocessing.specs import SPECS
from transformer import request_log
from transformer.config import Settings, load_settings
from transformer.gate import Admission, RequestGate
from transformer.http_errors import install_handlers
from transformer.memory import bound_malloc
from transformer.model import ImageModel, download_budget
from transformer.readiness import TritonModelReadiness
from transformer.score_cache import ScoreCache
from transformer.sources import commons_client
from transformer.video.model import VideoModel


def build_models(settings: Settings) -> list[kserve.Model]:
    commons = commons_client(settings)
    decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
    parser = ThreadPoolExecutor(settings.parse_threads, thread_name_prefix="parse")
    cache = ScoreCache.from_settings(settings)
    downloads = download_budget(settings)
    models: list[kserve.Model] = [
        ImageModel(spec, settings, commons, decoder, parser, cache, downloads) for spec in SPECS
    ]
    video_commons = commons_client(
        settings,
        max_fetch_bytes=settings.max_video_bytes,
        fetch_timeout_s=settings.video_fetch_timeout_s,
    )
    video_decoder = ThreadPoolExecutor(settings.video_workers, thread_name_prefix="video")
    models.append(VideoModel(settings, video_commons, video_decoder, parser, cache))
    return models


def bind(host: str) -> None:
    """KServe 0.21 always binds 0.0.0.0 and has no flag for it; its REST server reads the
    address from its uvicorn config only when it starts serving, so set it there."""

    class BoundRESTServer(model_server.RESTServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = BoundRESTServer


def _drop_infer_tracebacks(record: logging.LogRecord) -> bool:
    """KServe logs every failed Triton call with a traceback: thousands of lines in a short
    outage. ``transformer.scoring`` turns each into a 503/504 and logs one line instead."""
    return record.msg != "Failed to infer: %s"


def main() -> None:
    bound_malloc()
    request_log.install()
    settings = load_settings()
    models = build_models(settings)
    names = [model.name for model in models]
    app.add_middleware(
        RequestGate,
        models=names,
        max_body=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        admission=Admission(
            settings.max_inflight_requests, settings.max_inflight_body_bytes,
            max_waiting=settings.max_queued_requests, wait_s=settings.admission_wait_s,
        ),
    )
    install_handlers(app)
    for model in models:
        model.load()
    bind(settings.transformer_host)
    server = kserve.ModelServer()
    server.dataplane = TritonModelReadiness(model_registry=server.registered_models, expected=names)
    # KServe logs every readiness probe's Triton check at INFO: once a second per probe.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").addFilter(_drop_infer_tracebacks)
    server.start(models)


if __name__ == "__main__":
    main()
