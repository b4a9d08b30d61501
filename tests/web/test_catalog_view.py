"""CatalogView: look-ups by id, and no Python object kept per catalog image."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime

import pyarrow as pa

from tiefvision_core.catalog.manifest import MANIFEST_SCHEMA
from tiefvision_web.catalog_view import CatalogImage, CatalogView


def _manifest(n: int, *, category: bool = True) -> pa.Table:
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        status = "ok" if i % 10 else ("rejected", "removed")[i // 10 % 2]
        rows.append(
            {
                "image_id": f"photo-{(i * 7919) % n:06d}",
                "rel_path": f"shop/photo-{i:06d}.jpg",
                "source_uri": f"file:///photos/shop/photo-{i:06d}.jpg",
                "sha256": f"{i:064x}",
                "bytes": 1000 + i,
                "version_tag": str(i),
                "width": None if status != "ok" else 200 + i % 7,
                "height": None if status != "ok" else 300,
                "format": None if status != "ok" else "JPEG",
                "mode": "RGB",
                "status": status,
                "change": "new",
                "ingested_at": now,
            }
        )
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    if category:
        table = table.append_column("category", pa.array([f"c{i % 3}" for i in range(n)]))
    return table


def test_lookups_pages_and_counts():
    view = CatalogView("v1", _manifest(50))
    assert len(view) == 45 and view.ids == sorted(view.ids)
    assert view.counts == {"ok": 45, "rejected": 3, "removed": 2}
    image = view.get(f"photo-{(13 * 7919) % 50:06d}")
    assert image == CatalogImage(
        image_id=f"photo-{(13 * 7919) % 50:06d}",
        rel_path="shop/photo-000013.jpg",
        source_uri="file:///photos/shop/photo-000013.jpg",
        sha256=f"{13:064x}",
        width=200 + 13 % 7,
        height=300,
        format="JPEG",
        category="c1",
    )
    assert view.get("photo-000000") is None  # row 0 is rejected
    assert view.get("nope") is None and view.get("zzz") is None
    page = view.page(2, 10)
    assert [i.image_id for i in page] == view.ids[10:20]
    assert view.page(5, 10)[-1].image_id == view.ids[-1]
    plain = CatalogView("v2", _manifest(20, category=False)).get("photo-000001")
    assert plain is not None and plain.category is None


def test_an_id_twice_keeps_the_last_row():
    table = _manifest(3)
    twice = pa.concat_tables([table, table.slice(1, 1).set_column(1, "rel_path", pa.array(["b"]))])
    view = CatalogView("v", twice)
    assert view.ids.count(table["image_id"][1].as_py()) == 1
    assert view.get(table["image_id"][1].as_py()).rel_path == "b"


def test_keeps_no_object_per_image():
    """The view held a dict of CatalogImage (~700 bytes a photo at 100,000 photos): now
    the id list and the Arrow columns, under 450 bytes a photo all told."""
    n = 20_000
    manifest = _manifest(n)
    gc.collect()
    arrow = pa.total_allocated_bytes()
    tracemalloc.start()
    view = CatalogView("v", manifest)
    gc.collect()
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept += pa.total_allocated_bytes() - arrow  # the Arrow buffers: not seen by tracemalloc
    assert not any(isinstance(v, dict) and len(v) >= len(view) for v in vars(view).values())
    assert kept / len(view) < 450, f"{kept / len(view):.0f} bytes per photo"
    assert len(view) == n - n // 10
