"""The moderation policy's decision on each stored result, reviewers' verdicts and the
review page's session generations.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from store.schema: a migration must keep creating what
# it created when it was written.
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable: rows scored before this migration have no decision until a policy is applied.
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("policy_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("policy_score", sa.Float(), nullable=True))
    op.create_index("ix_scores_state_model", "scores", ["state", "model"])
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("sample", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_verdicts"),
    )
    op.create_index("ix_verdicts_sha1_model", "verdicts", ["sha1", "model"])
    op.create_table(
        "review_sessions",
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("reviewer", name="pk_review_sessions"),
    )


def downgrade() -> None:
    op.drop_table("review_sessions")
    op.drop_index("ix_verdicts_sha1_model", table_name="verdicts")
    op.drop_table("verdicts")
    op.drop_index("ix_scores_state_model", table_name="scores")
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("policy_score")
        batch.drop_column("policy_version")
        batch.drop_column("reason")
        batch.drop_column("state")
