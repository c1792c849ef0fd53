"""``python -m transformer [kserve flags]``: serve logo-detection, nsfw-detection and
nsfw-video-detection.

KServe's own flags apply, notably ``--predictor_host 127.0.0.1:8001
--predictor_protocol grpc-v2 --enable_predictor_health_check``; everything else comes
from the environment (``transformer.config``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve.model_server import app

from transformer.sources import commons_client
from transformer.config import load_settings
from transformer.http_errors import install_handlers
from transformer.limits import BodySizeLimit
from transformer.model import LOGO_PIPELINE, NSFW_PIPELINE, ImageModel
from transformer.readiness import TritonModelReadiness
from transformer.video_model import VideoModel


def main() -> None:
    settings = load_settings()
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_handlers(app)
    commons = commons_client(settings)
    executor = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
    models: list[kserve.Model] = [
        ImageModel(p, settings, commons, executor) for p in (LOGO_PIPELINE, NSFW_PIPELINE)
    ]
    video_commons = commons_client(
        settings,
        max_fetch_bytes=settings.max_video_bytes,
        fetch_timeout_s=settings.video_fetch_timeout_s,
    )
    video_executor = ThreadPoolExecutor(settings.video_workers, thread_name_prefix="video")
    models.append(VideoModel(settings, video_commons, video_executor))
    for model in models:
        model.load()
    server = kserve.ModelServer()
    server.dataplane = TritonModelReadiness(model_registry=server.registered_models)
    server.start(models)


if __name__ == "__main__":
    main()
