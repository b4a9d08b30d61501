"""The annotations database's tables (SQLAlchemy models; Alembic ``migrations/`` evolve
them) and the column groups and batching the queries on them share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "TRIPLET_IDS",
    "TRIPLET_ROLES",
    "TRIPLET_SHAS",
    "Base",
    "BoxRow",
    "Shas",
    "Triple",
    "TripletRow",
    "in_chunks",
]

#: Ids per ``IN (…)`` clause.
_CHUNK = 500


class Base(DeclarativeBase):
    """Declarative base; constraint names are fixed so migrations can address them."""

    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        }
    )


class BoxRow(Base):
    """The product box of one image, in pixels of the oriented image (manifest width ×
    height); right and bottom are exclusive edges. ``sha256``: the bytes it was drawn on
    (NULL: not recorded, written before revision 0002 or by a caller that named none)."""

    __tablename__ = "boxes"
    __table_args__ = (
        CheckConstraint('"left" >= 0 AND "top" >= 0', name="origin"),
        CheckConstraint('"right" > "left" AND "bottom" > "top"', name="area"),
    )

    image_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    left: Mapped[int]
    top: Mapped[int]
    right: Mapped[int]
    bottom: Mapped[int]
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str | None] = mapped_column(String(64))


class TripletRow(Base):
    """``positive`` is more similar to ``reference`` than ``negative`` is; ``<role>_sha256``
    the bytes each image had when the triplet was made (NULL: not recorded)."""

    __tablename__ = "triplets"
    __table_args__ = (
        UniqueConstraint("reference", "positive", "negative"),
        CheckConstraint(
            "reference <> positive AND reference <> negative AND positive <> negative",
            name="distinct",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(255))
    positive: Mapped[str] = mapped_column(String(255))
    negative: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reference_sha256: Mapped[str | None] = mapped_column(String(64))
    positive_sha256: Mapped[str | None] = mapped_column(String(64))
    negative_sha256: Mapped[str | None] = mapped_column(String(64))


Triple = tuple[str, str, str]
Shas = tuple[str | None, str | None, str | None]
TRIPLET_IDS = ("reference", "positive", "negative")
TRIPLET_SHAS = tuple(f"{name}_sha256" for name in TRIPLET_IDS)
#: (id column, sha256 column) of each image a triplet names.
TRIPLET_ROLES = tuple(zip(TRIPLET_IDS, TRIPLET_SHAS, strict=True))


def in_chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
