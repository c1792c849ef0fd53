"""The score store, backfill progress and the upload watcher's state.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from store.schema: a migration must keep creating what
# it created when it was written.
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scores",
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("mime", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("video", sa.JSON(), nullable=True),
        sa.Column("scored_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("sha1", "model", "model_version", name="pk_scores"),
    )
    op.create_table(
        "titles",
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("first_seen", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("sha1", "title", name="pk_titles"),
    )
    op.create_index("ix_titles_title", "titles", ["title"])
    op.create_table(
        "backfill_jobs",
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=True),
        sa.Column("enumerated", sa.Boolean(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", name="pk_backfill_jobs"),
    )
    op.create_table(
        "backfill_items",
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", "title", name="pk_backfill_items"),
    )
    op.create_index("ix_backfill_items_job_state_seq", "backfill_items", ["job", "state", "seq"])
    op.create_table(
        "watch_positions",
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("position", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_watch_positions"),
    )
    op.create_table(
        "watch_pending",
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("due_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("source", "title", name="pk_watch_pending"),
    )
    op.create_index("ix_watch_pending_source_due_at", "watch_pending", ["source", "due_at"])


def downgrade() -> None:
    op.drop_table("watch_pending")
    op.drop_table("watch_positions")
    op.drop_table("backfill_items")
    op.drop_table("backfill_jobs")
    op.drop_table("titles")
    op.drop_table("scores")
