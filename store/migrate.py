"""Alembic, driven from code: the migrations ship inside the package, with no alembic.ini.

A new migration goes next to ``versions/0001_initial.py``, by hand or drafted with
``alembic.command.revision(config(url), message, autogenerate=True)`` against a database at
head; the tests check that the migrations and ``store.schema`` agree.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def config(url: str, *, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would eat a percent-encoded password.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str, *, connection: Connection | None = None) -> None:
    """``alembic upgrade head`` on ``url``, or inside ``connection``'s open transaction."""
    command.upgrade(config(url, connection=connection), "head")
