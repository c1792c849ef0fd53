"""`python -m review` (`make review`): the review page on REVIEW_HOST:REVIEW_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError

from moderation.policy import load_policy
from moderation.reviewers import ReviewersFile
from review.app import create_app
from review.settings import ConfigError, Settings
from store.migrate import config
from store.scores import ScoreStore, StoreError, open_store

log = logging.getLogger("review")


def check_schema(store: ScoreStore) -> None:
    """ConfigError unless the store's schema is at the newest migration: the page does not
    migrate it (it runs without the rights to), and on an older schema every page would
    fail."""
    head = ScriptDirectory.from_config(config(store.url)).get_current_head()
    with store.transaction(write=False) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise ConfigError(
            f"the score store's schema is at revision {current or '(none: empty)'}, not "
            f"{head}: migrate it with `commons-moderation migrate` (or let the transformer, "
            "SCORE_STORE_MIGRATE=true), or set REVIEW_STORE_MIGRATE=true where the page may "
            "change the schema"
        )


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
        reviewers = ReviewersFile(settings.reviewers_file)
        policy = load_policy(settings.moderation_policy)
        store = open_store(
            settings.database_url,
            migrate=settings.review_store_migrate,
            statement_timeout_s=settings.review_store_timeout_s,
        )
        try:
            check_schema(store)
        except BaseException:
            store.dispose()
            raise
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
