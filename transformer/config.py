"""Transformer settings, read once from the environment (see the README's table).

How to reach Triton is KServe's business (``--predictor_host`` / ``--predictor_protocol``),
so it is not repeated here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.policy import DEFAULT_POLICY
from store.scores import DEFAULT_DATABASE_URL

DEFAULT_USER_AGENT = (
    "commons-moderation-inference/0.1 "
    "(https://wikitech.wikimedia.org/wiki/Machine_Learning/LiftWing; ml@wikimedia.org) httpx"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, frozen=True)

    commons_api_url: str = "https://commons.wikimedia.org/w/api.php"
    # Hosts besides the API host that file URLs may point at; nothing else is ever fetched.
    commons_upload_hosts: tuple[str, ...] = ("upload.wikimedia.org",)
    commons_user_agent: str = DEFAULT_USER_AGENT
    commons_api_timeout_s: float = Field(5.0, gt=0)
    commons_fetch_timeout_s: float = Field(10.0, gt=0)
    commons_retries: int = Field(2, ge=0, le=5)
    # The longest pause taken for a Retry-After: a longer one is cut to it, unless it outlasts
    # the request's deadline (then the call fails at once).
    commons_max_retry_after_s: float = Field(2.0, ge=0)
    # MediaWiki refuses API calls while its replicas lag more than this (seconds); 0: never.
    commons_maxlag: int = Field(5, ge=0)
    # Host header for API calls, when COMMONS_API_URL is an internal endpoint serving several
    # wikis (e.g. http://api-ro.discovery.wmnet/w/api.php with commons.wikimedia.org).
    commons_api_host_header: str = ""

    max_instances: int = Field(50, ge=1, le=500)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(50_000_000, ge=1)
    # Peak memory of one image decode, estimated from the header before decoding.
    max_decode_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)

    # Videos (nsfw-video-detection). Decoding cost grows with duration × resolution, so both
    # are bounded; the frame cap bounds inference cost (see transformer.video.sampling).
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_video_duration_s: float = Field(600.0, gt=0)
    max_video_pixels: int = Field(1920 * 1080, ge=1)
    max_video_frames: int = Field(300, ge=2)
    video_fetch_timeout_s: float = Field(60.0, gt=0)
    # Wall time one video's scan may take, whatever the other limits allow.
    video_budget_s: float = Field(20.0, gt=0)
    # Videos decoded at once; each decode also runs FFmpeg's own threads.
    video_workers: int = Field(1, ge=1, le=64)

    triton_timeout_s: float = Field(15.0, gt=0)
    # Pillow releases the GIL while decoding and resizing, so threads give real parallelism.
    decode_threads: int = Field(2, ge=1, le=64)

    # Serving and admission. Loopback unless told otherwise: the container sets 0.0.0.0.
    transformer_host: str = "127.0.0.1"
    # Covers the lookups, downloads and retries of one request; below the chart's Knative
    # timeout so that we answer with per-item errors before the platform cuts us off.
    request_deadline_s: float = Field(30.0, gt=0)
    # Requests being served at once, and their bodies' bytes; past either a request gets
    # 503 + Retry-After instead of memory. The chart's containerConcurrency is the former.
    # The bytes bound memory; a request waiting on Commons or Triton holds little, so the
    # count is set above what the soak's 80 % of capacity keeps in flight at its tail
    # (32 refused 1.4 % of requests there).
    max_inflight_requests: int = Field(64, ge=1, le=4096)
    max_inflight_body_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    # Image downloads being fetched or waiting for a decode thread, across requests, as each
    # file's bound before it is fetched (CommonsClient.fetch_bound); past it a download waits
    # its turn until the request's deadline. A request's bodies are held to the budget above.
    max_inflight_download_bytes: int = Field(128 * 1024 * 1024, ge=1024 * 1024)
    # A request's whole body must arrive within this, else 408: a client trickling its body
    # would otherwise hold a request slot and its bytes' share of the budget indefinitely.
    body_timeout_s: float = Field(30.0, gt=0, le=600)
    # Past max_inflight_requests, this many requests wait up to admission_wait_s for a turn
    # before their bodies are read (Knative's queue-proxy does the same in the cluster).
    max_queued_requests: int = Field(256, ge=0, le=65536)
    admission_wait_s: float = Field(2.0, ge=0, le=30)
    # Threads that parse request bodies, apart from decoding so that parsing never waits
    # behind a long decode or a video.
    parse_threads: int = Field(2, ge=1, le=64)

    # Score store (transformer.score_cache): scores by file SHA-1, model and version.
    score_store: bool = True
    # SQLite file by default; production: postgresql+psycopg://user:password@host/db.
    database_url: str = DEFAULT_DATABASE_URL
    # Run the store's migrations when first opened (off where a deploy job runs them).
    score_store_migrate: bool = True
    # A store call slower than this is abandoned and the store left alone for retry_s.
    score_store_timeout_s: float = Field(1.0, gt=0)
    score_store_retry_s: float = Field(10.0, ge=0)
    score_store_max_pending_writes: int = Field(256, ge=1)
    # The moderation policy (moderation/policy.yaml's format) whose decision every stored
    # result carries; read once at start, a bad file stops the start.
    moderation_policy: str = str(DEFAULT_POLICY)


def load_settings() -> Settings:
    return Settings()
