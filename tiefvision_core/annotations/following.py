"""Annotations following the catalog: moved to the id that now holds their bytes (a photo
renamed in the source), given the bytes they were drawn on where none were recorded, and
listed for deletion once no retained manifest holds those bytes (gc)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, and_, bindparam, delete, or_, select, update

from tiefvision_core.annotations.schema import (
    TRIPLET_IDS,
    TRIPLET_ROLES,
    BoxRow,
    Triple,
    TripletRow,
    in_chunks,
)

__all__ = [
    "HeldBytes",
    "Unheld",
    "fill_box_bytes",
    "fill_triplet_bytes",
    "move_boxes",
    "rename_triplets",
    "unheld_rows",
]

#: (image_id, sha256) pairs a catalog holds, and their image ids alone.
HeldBytes = tuple[Collection[tuple[str, str]], Collection[str]]


@dataclass(frozen=True)
class Unheld:
    """Annotations naming bytes that no retained manifest holds any more: what gc deletes
    (a photo removed from the catalog leaves nothing behind once the retention passed)."""

    boxes: tuple[str, ...] = ()
    triplets: tuple[Triple, ...] = ()


def _held(image_id: str, sha256: str | None, held: HeldBytes) -> bool:
    """Whether a catalog holds an annotated image: its recorded bytes, or (none recorded)
    its id."""
    pairs, ids = held
    return image_id in ids if sha256 is None else (image_id, sha256) in pairs


def unheld_rows(boxes: pd.DataFrame, triplets: pd.DataFrame, held: HeldBytes) -> Unheld:
    """Of ``boxes`` and ``triplets`` (as the database lists them), those naming bytes
    ``held`` does not hold (for a triplet: any of its three images)."""
    gone = tuple(
        str(i)
        for i, sha in zip(boxes["image_id"], boxes["sha256"], strict=True)
        if not _held(i, _recorded(sha), held)
    )
    dead = tuple(
        (r["reference"], r["positive"], r["negative"])
        for r in triplets.to_dict("records")
        if not all(_held(r[i], _recorded(r[s]), held) for i, s in TRIPLET_ROLES)
    )
    return Unheld(gone, dead)


def _recorded(value: object) -> str | None:
    """A sha256 cell as read into a frame: a string, or None/NaN when not recorded."""
    return value if isinstance(value, str) else None


def move_boxes(connection: Connection, renames: Mapping[str, str]) -> int:
    table = BoxRow.__table__
    taken: set[str] = set()
    for chunk in in_chunks(sorted(renames.values())):
        query = select(table.c.image_id).where(table.c.image_id.in_(chunk))
        taken.update(connection.execute(query).scalars())
    moved = 0
    for old, new in sorted(renames.items()):
        if new not in taken:
            move = update(BoxRow).where(table.c.image_id == old).values(image_id=new)
            moved += connection.execute(move).rowcount
    return moved


def rename_triplets(connection: Connection, renames: Mapping[str, str]) -> int:
    table = TripletRow.__table__
    columns = [table.c[c] for c in TRIPLET_IDS]
    named: dict[int, Triple] = {}
    for chunk in in_chunks(sorted(renames)):
        query = select(table.c.id, *columns).where(or_(*(c.in_(chunk) for c in columns)))
        named.update((row[0], (row[1], row[2], row[3])) for row in connection.execute(query))
    for row_id, triple in sorted(named.items()):
        target = tuple(renames.get(image_id, image_id) for image_id in triple)
        match = and_(*(c == v for c, v in zip(columns, target, strict=True)))
        if connection.execute(select(table.c.id).where(match)).first() is None:
            values = dict(zip(TRIPLET_IDS, target, strict=True))
            connection.execute(update(TripletRow).where(table.c.id == row_id).values(values))
        else:  # the renamed triplet is stored already: one row is enough
            connection.execute(delete(TripletRow).where(table.c.id == row_id))
    return len(named)


def fill_box_bytes(connection: Connection, known: Mapping[str, str]) -> int:
    table = BoxRow.__table__
    ids = connection.execute(select(table.c.image_id).where(table.c.sha256.is_(None))).scalars()
    values = [{"b_id": i, "b_sha": known[i]} for i in ids if i in known]
    if values:
        query = update(BoxRow).where(table.c.image_id == bindparam("b_id"))
        connection.execute(query.values(sha256=bindparam("b_sha")), values)
    return len(values)


def fill_triplet_bytes(connection: Connection, known: Mapping[str, str]) -> int:
    table = TripletRow.__table__
    filled = 0
    for name, column in TRIPLET_ROLES:
        query = select(table.c.id, table.c[name]).where(table.c[column].is_(None))
        values = [
            {"b_id": row_id, "b_sha": known[image_id]}
            for row_id, image_id in connection.execute(query)
            if image_id in known
        ]
        if values:
            fill = update(TripletRow).where(table.c.id == bindparam("b_id"))
            connection.execute(fill.values({column: bindparam("b_sha")}), values)
        filled += len(values)
    return filled
