"""The catalog as the web service sees it: usable images of one manifest version, by id.

Why its own object: every endpoint that names an image must first prove that the id is a
catalog image (no path is ever built from an id: bytes are read from the ``source_uri``
ingest recorded), and the gallery pages through the same list. Loading the manifest into
plain dicts once per version keeps those look-ups at dictionary speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["IMAGE_ID_PATTERN", "CatalogImage", "CatalogView", "valid_image_id"]

#: Ids made by ``catalog.image_id_for``: a slug of the path and a hash; never ``/`` or ``..``.
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")


def valid_image_id(image_id: str) -> bool:
    """Whether ``image_id`` has the shape of a catalog id (checked before any look-up)."""
    return bool(IMAGE_ID_PATTERN.match(image_id)) and ".." not in image_id


@dataclass(frozen=True)
class CatalogImage:
    image_id: str
    rel_path: str
    source_uri: str
    sha256: str
    width: int
    height: int
    format: str
    product_id: str | None = None
    category: str | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "image_id": self.image_id,
            "width": self.width,
            "height": self.height,
        }
        if self.product_id is not None:
            data["product_id"] = self.product_id
        if self.category is not None:
            data["category"] = self.category
        return data


class CatalogView:
    """The usable (status ``ok``) images of one manifest version, in id order."""

    def __init__(self, version: str, manifest: pa.Table) -> None:
        self.version = version
        columns = ["image_id", "rel_path", "source_uri", "sha256", "width", "height", "format"]
        extra = [c for c in ("product_id", "category") if c in manifest.column_names]
        ok = manifest.filter(pc.equal(manifest["status"], "ok"))
        images = {}
        for row in ok.select(columns + extra).to_pylist():
            for name in extra:
                row[name] = None if row[name] is None else str(row[name])
            images[row["image_id"]] = CatalogImage(**row)
        self.ids: list[str] = sorted(images)
        self._images = images
        self.counts = {
            status: int(pc.sum(pc.equal(manifest["status"], status)).as_py() or 0)
            for status in ("ok", "rejected", "removed")
        }

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, image_id: str) -> CatalogImage | None:
        return self._images.get(image_id)

    def page(self, page: int, per_page: int, ids: list[str] | None = None) -> list[CatalogImage]:
        """Images of a 1-based page of ``ids`` (default: the whole catalog)."""
        ids = self.ids if ids is None else ids
        start = (page - 1) * per_page
        return [self._images[i] for i in ids[start : start + per_page]]
