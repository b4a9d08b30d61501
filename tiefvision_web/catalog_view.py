"""The catalog as the web service sees it: usable images of one manifest version, by id.

Why its own object: every endpoint that names an image must first prove that the id is a
catalog image (no path is ever built from an id: bytes are read from the ``source_uri``
ingest recorded), and the gallery pages through the same list. Loading the manifest into
id-sorted Arrow columns once per version keeps those look-ups at bisection speed.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.catalog.live import LiveCatalog

__all__ = ["IMAGE_ID_PATTERN", "CatalogImage", "CatalogView", "valid_image_id"]

#: Ids made by ``catalog.image_id_for``: a slug of the path and a hash; never ``/`` or ``..``.
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")


_COLUMNS = ["image_id", "rel_path", "source_uri", "sha256", "width", "height", "format"]
_EXTRA = ("product_id", "category")


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
    """The usable (status ``ok``) images of one manifest version, in id order.

    Why no object per image: a catalog of 100,000 photos held as a dict of
    :class:`CatalogImage` cost ~700 bytes a photo (bench/serve_memory.py). The view keeps the
    columns it answers with as Arrow arrays sorted by id (their bytes, no Python object
    per cell) and the sorted id list; :meth:`get` finds the row by bisection and builds the
    one :class:`CatalogImage` asked for.
    """

    def __init__(self, version: str, manifest: pa.Table) -> None:
        self.version = version
        extra = [c for c in _EXTRA if c in manifest.column_names]
        ok = manifest.filter(pc.equal(manifest["status"], "ok")).select(_COLUMNS + extra)
        for name in extra:  # metadata columns may be of any type: they are shown as text
            if not pa.types.is_string(ok.schema.field(name).type):
                ok = ok.set_column(
                    ok.schema.get_field_index(name), name, pc.cast(ok[name], pa.string())
                )
        ok = ok.take(pc.sort_indices(ok["image_id"]))
        ids: list[str] = ok["image_id"].to_pylist()
        keep = [row for row in range(len(ids)) if row + 1 == len(ids) or ids[row] != ids[row + 1]]
        if len(keep) < len(ids):  # an id twice: the last row wins, as a dict would
            ok = ok.take(pa.array(keep, pa.int64()))
            ids = [ids[row] for row in keep]
        self.ids: list[str] = ids
        self._columns = {name: ok[name].combine_chunks() for name in ok.column_names}
        #: What every search answers from (removed photos never come back, whichever index
        #: version is live): the same Arrow columns, no copy.
        self.live = LiveCatalog(version, self._columns["image_id"], self._columns["sha256"])
        self.counts = {
            status: int(pc.sum(pc.equal(manifest["status"], status)).as_py() or 0)
            for status in ("ok", "rejected", "removed")
        }

    def __len__(self) -> int:
        return len(self.ids)

    def _row(self, image_id: str) -> int | None:
        row = bisect.bisect_left(self.ids, image_id)
        return row if row < len(self.ids) and self.ids[row] == image_id else None

    def _image(self, row: int) -> CatalogImage:
        return CatalogImage(**{name: array[row].as_py() for name, array in self._columns.items()})

    def get(self, image_id: str) -> CatalogImage | None:
        row = self._row(image_id)
        return None if row is None else self._image(row)

    def page(self, page: int, per_page: int, ids: list[str] | None = None) -> list[CatalogImage]:
        """Images of a 1-based page of ``ids`` (default: the whole catalog)."""
        ids = self.ids if ids is None else ids
        start = (page - 1) * per_page
        images = []
        for image_id in ids[start : start + per_page]:
            row = self._row(image_id)
            if row is None:
                raise KeyError(image_id)
            images.append(self._image(row))
        return images
