"""`python -m review` (`make review`): the review page on REVIEW_HOST:REVIEW_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from moderation.policy import load_policy
from moderation.reviewers import Reviewers
from review.app import create_app
from review.settings import ConfigError, Settings
from store.scores import StoreError, open_store

log = logging.getLogger("review")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        secret, generated = settings.session_secret()
        if settings.reviewers_file is None:
            raise ConfigError(
                "REVIEWERS_FILE is not set: name the YAML file of reviewer names and token "
                "hashes (README, Review page)"
            )
        reviewers = Reviewers.load(settings.reviewers_file)
        policy = load_policy(settings.moderation_policy)
        store = open_store(
            settings.database_url, statement_timeout_s=settings.review_store_timeout_s
        )
    except ValidationError as exc:
        sys.exit(f"review: bad setting: {exc}")
    except (ConfigError, ValueError, StoreError) as exc:
        sys.exit(f"review: {exc}")
    if generated:
        log.warning(
            "REVIEW_DEV: sessions are signed with a secret made for this process; "
            "they end when it does. Set REVIEW_SECRET_KEY outside development."
        )
    app = create_app(
        settings, session_secret=secret, store=store, reviewers=reviewers, policy=policy
    )
    try:
        uvicorn.run(
            app,
            host=settings.review_host,
            port=settings.review_port,
            server_header=False,
            # Forms and verdicts are small; a client holding more than this in headers is not one.
            h11_max_incomplete_event_size=16 * 1024,
            log_level="info",
        )
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
