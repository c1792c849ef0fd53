# syntax=docker/dockerfile:1
# The KServe transformer (python -m transformer). Build from the repository root:
#   docker build -f docker/transformer.Dockerfile -t commons-moderation-transformer:0.1.0 .
# Bases are pinned by tag; pin them by digest in the publishing pipeline.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
# The serving path's, the bulk clients', the review page's and the moderation CLI's packages only, at the lock's versions (the lock
# also holds torch and the training tools, which never run here). Wheels only: nothing is compiled.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: --constraint /tmp/requirements.txt \
      kserve pillow httpx pydantic pydantic-settings numpy \
      av scenedetect-headless opencv-python-headless \
      sqlalchemy alembic "psycopg[binary]" \
      typer tqdm httpx-sse confluent-kafka \
      pyyaml jinja2 itsdangerous python-multipart matplotlib

FROM python:3.11.11-slim-bookworm
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/commons-moderation
COPY transformer/ transformer/
# The model specs, the decode policy and the tensors, shared with training.
COPY preprocessing/ preprocessing/
# The score store, and its bulk clients (python -m bulk.backfill, python -m bulk.watch).
COPY store/ store/
COPY bulk/ bulk/
# Review states (every stored result carries one), the review page (python -m review) and
# the moderation CLI (python -m moderation).
COPY moderation/ moderation/
COPY review/ review/
# Bytecode is not written: the chart mounts the root filesystem read-only.
# A pod serves on all its interfaces; `make serve` keeps the default, loopback.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TRANSFORMER_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "transformer"]
