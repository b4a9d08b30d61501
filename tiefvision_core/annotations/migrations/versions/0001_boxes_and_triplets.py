"""Boxes (one product box per image) and similarity triplets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "boxes",
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("left", sa.Integer(), nullable=False),
        sa.Column("top", sa.Integer(), nullable=False),
        sa.Column("right", sa.Integer(), nullable=False),
        sa.Column("bottom", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_boxes")),
        sa.CheckConstraint('"left" >= 0 AND "top" >= 0', name=op.f("ck_boxes_origin")),
        sa.CheckConstraint('"right" > "left" AND "bottom" > "top"', name=op.f("ck_boxes_area")),
    )
    op.create_table(
        "triplets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("positive", sa.String(255), nullable=False),
        sa.Column("negative", sa.String(255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triplets")),
        sa.UniqueConstraint(
            "reference",
            "positive",
            "negative",
            name=op.f("uq_triplets_reference_positive_negative"),
        ),
        sa.CheckConstraint(
            "reference <> positive AND reference <> negative AND positive <> negative",
            name=op.f("ck_triplets_distinct"),
        ),
    )


def downgrade() -> None:
    op.drop_table("triplets")
    op.drop_table("boxes")
