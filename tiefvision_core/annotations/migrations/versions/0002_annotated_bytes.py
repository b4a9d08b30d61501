"""The bytes an annotation was drawn on: ``boxes.sha256`` and ``triplets.<role>_sha256``.

Why: an annotation is of a photo's bytes, not of its path. Recording the sha256 lets a box
follow its photo across a rename, marks it stale when the photo is replaced by other bytes
(left out of training until confirmed), and lets gc delete it once no retained manifest
holds those bytes. Rows written before this revision keep NULL ("drawn on bytes not
recorded"): the next ingest fills them from the manifest it replaces.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRIPLET_COLUMNS = ("reference_sha256", "positive_sha256", "negative_sha256")


def upgrade() -> None:
    with op.batch_alter_table("boxes") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("triplets") as batch:
        for name in _TRIPLET_COLUMNS:
            batch.add_column(sa.Column(name, sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triplets") as batch:
        for name in reversed(_TRIPLET_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("boxes") as batch:
        batch.drop_column("sha256")
