"""Annotation files (box CSV, COCO JSON, triplet CSV) read and checked against the catalog.

Why a module of its own, with no database in sight: what makes an annotation *valid* is a
question about the catalog (does the image exist, is the box inside it), not about where
annotations are stored. Keeping it pure makes every rule testable on a manifest alone and
reusable by the web editors.

A file is all-or-nothing only when it is unusable as a whole (unreadable, not the format,
missing columns): that raises :class:`InputError`. Otherwise each bad row is *refused* with
the place it came from (CSV: the file's line number, header = line 1; COCO: ``annotations[i]``)
and the good rows go on. An image is named by its ``image_id`` or by its path relative to the
ingested folder, exactly as the manifest records it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import pyarrow as pa

from tiefvision_core.catalog.manifest import image_id_for
from tiefvision_core.errors import InputError

__all__ = [
    "BOX_COLUMNS",
    "TRIPLET_COLUMNS",
    "Box",
    "BoxInput",
    "CatalogImage",
    "CatalogIndex",
    "ParsedFile",
    "Refusal",
    "TripletInput",
    "box_problem",
    "read_box_file",
    "read_triplet_file",
]

BOX_COLUMNS = ("left", "top", "right", "bottom")
#: Accepted names of the column that names the image (``image`` = the synthetic catalog's).
IMAGE_COLUMNS = ("image_id", "image")
TRIPLET_COLUMNS = ("reference", "positive", "negative")
NO_CATALOG = "nothing is ingested in this store yet: run `tiefvision ingest --images DIR` first"
_ONE_BOX = "TiefVision keeps one product box per image"


class Box(NamedTuple):
    """A box in pixels of the oriented image (as the manifest's width/height); right and
    bottom are exclusive edges, so ``right - left`` is the width."""

    left: int
    top: int
    right: int
    bottom: int


class Refusal(NamedTuple):
    """One refused row: where it is in the file, the image as the file names it, and why."""

    line: int | str
    image: str
    reason: str


@dataclass(frozen=True)
class CatalogImage:
    image_id: str
    rel_path: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class BoxInput:
    line: int | str
    name: str
    image_id: str
    box: Box


@dataclass(frozen=True)
class TripletInput:
    line: int | str
    reference: str
    positive: str
    negative: str


Row = TypeVar("Row", BoxInput, TripletInput)


@dataclass(frozen=True)
class ParsedFile(Generic[Row]):
    """The valid rows of one file and the refused ones; ``source`` goes into the database
    (``csv:<file name>``, ``coco:<file name>``) so every annotation says where it came from."""

    source: str
    rows: tuple[Row, ...]
    refused: tuple[Refusal, ...]


def _normal_path(name: str) -> str:
    path = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


class CatalogIndex:
    """Image names → usable images of one manifest version (rows with status ``ok``)."""

    def __init__(self, manifest: pa.Table | None) -> None:
        if manifest is None:
            raise InputError(NO_CATALOG)
        self._ok: dict[str, CatalogImage] = {}
        self._by_path: dict[str, str] = {}
        self._unusable: dict[str, str] = {}
        columns = ["image_id", "rel_path", "sha256", "width", "height", "status", "reason"]
        for row in manifest.select(columns).to_pylist():
            image_id, path = str(row["image_id"]), _normal_path(str(row["rel_path"]))
            if row["status"] == "ok":
                self._ok[image_id] = CatalogImage(
                    image_id, str(row["rel_path"]), row["sha256"], row["width"], row["height"]
                )
                self._by_path[path] = image_id
            elif row["status"] == "rejected":
                why = f"image rejected at ingest ({row['reason']})"
                self._unusable[image_id] = self._unusable[path] = why
            else:
                why = "image removed from the catalog"
                self._unusable[image_id] = self._unusable[path] = why

    def __len__(self) -> int:
        return len(self._ok)

    def get(self, image_id: str) -> CatalogImage | None:
        return self._ok.get(image_id)

    def resolve(self, name: str) -> CatalogImage | str:
        """The image ``name`` (an id or a relative path) stands for, or why there is none."""
        name = name.strip()
        if not name:
            return "no image named"
        if name in self._ok:
            return self._ok[name]
        path = _normal_path(name)
        image_id = self._by_path.get(path) or image_id_for(path)
        if image_id in self._ok:
            return self._ok[image_id]
        return (
            self._unusable.get(name)
            or self._unusable.get(path)
            or "unknown image: not in the catalog (name it by image_id or by its path "
            "relative to the ingested folder)"
        )


def box_problem(box: Box, image: CatalogImage) -> str | None:
    """Why ``box`` cannot be a product box of ``image``, or ``None`` when it can."""
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        return f"empty box {left},{top},{right},{bottom}: right must exceed left, bottom top"
    if left < 0 or top < 0 or right > image.width or bottom > image.height:
        return f"box {left},{top},{right},{bottom} outside the {image.width}x{image.height} image"
    return None


class _Refused(Exception):
    """A row-level problem; becomes a :class:`Refusal`, never leaves this module."""


def _number(value: object, column: str, *, text: bool) -> float:
    """A finite number from a CSV field (``text``) or a JSON value, else a refusal."""
    if text:
        raw = str(value).strip()
        if not raw:
            raise _Refused(f"{column} is empty")
        try:
            number = float(raw)
        except ValueError:
            raise _Refused(f"{column} is not a number ({raw!r})") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{column} is not a number ({value!r})")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise _Refused(f"{column} is not a finite number ({value!r})")
    return number


def _pixel(number: float) -> int:
    """Nearest integer, halves away from zero (``round`` would send 0.5 and 1.5 to 2)."""
    return int(math.copysign(math.floor(abs(number) + 0.5), number))


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist: check the path")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what} file {path} is not UTF-8 text: save it as UTF-8") from None


def _csv_rows(
    path: Path, text: str, required: Sequence[str], what: str, note: str = ""
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank data row; the header is line 1."""
    expected = ",".join(required)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{what} file {path} is not CSV ({exc}): expected {expected}") from None
    if header is None:
        raise InputError(f"{what} file {path} is empty: expected a header line {expected}")
    names = [name.strip().lower() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(
            f"{what} file {path} has no column {', '.join(missing)}: expected the columns "
            f"{expected}{note} (found {','.join(names) or 'none'})"
        )
    previous = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{what} file {path}, line {previous + 1}: {exc}") from None
        line, previous = previous + 1, reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(names):  # keep what is there to name the image in the report
            named = dict(zip(names, fields, strict=False))
            yield line, named | {"": f"{len(fields)} fields where the header has {len(names)}"}
            continue
        yield line, dict(zip(names, fields, strict=True))


def _refuse_duplicates(
    results: list[tuple[int | str, str, str | None, Box | None, str | None]],
    what: str,
) -> tuple[list[BoxInput], list[Refusal]]:
    """Split rows into imported and refused; an image named by several rows gets none."""
    lines_of: dict[str, list[int | str]] = defaultdict(list)
    for line, _name, image_id, _box, _reason in results:
        if image_id is not None:
            lines_of[image_id].append(line)
    rows, refused = [], []
    for line, name, image_id, box, reason in results:
        lines = lines_of.get(image_id, []) if image_id else []
        if reason is None and len(lines) > 1:
            where = ", ".join(str(x) for x in lines)
            reason = f"image has {len(lines)} {what} ({where}): {_ONE_BOX}"
        if reason is None and image_id is not None and box is not None:
            rows.append(BoxInput(line, name, image_id, box))
        else:
            refused.append(Refusal(line, name, reason or "invalid"))
    return rows, refused


def _boxes_from_csv(path: Path, text: str, catalog: CatalogIndex) -> ParsedFile[BoxInput]:
    head = next(csv.reader(io.StringIO(text, newline="")), [])
    names = [name.strip().lower() for name in head]
    image_column = next((c for c in IMAGE_COLUMNS if c in names), "image")
    note = "; the image column may also be named image_id"
    results: list[tuple[int | str, str, str | None, Box | None, str | None]] = []
    for line, row in _csv_rows(path, text, (image_column, *BOX_COLUMNS), "box", note):
        name = row.get(image_column, "").strip()
        image_id: str | None = None
        try:
            if "" in row:
                raise _Refused(row[""])
            image = catalog.resolve(name)
            if isinstance(image, str):
                raise _Refused(image)
            image_id = image.image_id
            box = Box(*(_pixel(_number(row[c], c, text=True)) for c in BOX_COLUMNS))
            problem = box_problem(box, image)
            if problem:
                raise _Refused(problem)
            results.append((line, name, image_id, box, None))
        except _Refused as why:
            results.append((line, name, image_id, None, str(why)))
    rows, refused = _refuse_duplicates(results, "lines")
    return ParsedFile(f"csv:{path.name}", tuple(rows), tuple(refused))


_COCO_SHAPE = (
    # no square brackets: the CLI prints errors through rich, which reads them as markup
    "expected a COCO JSON object with a list 'images' of {id, file_name, width, height} "
    "and a list 'annotations' of {image_id, bbox: x, y, width, height}"
)


def _boxes_from_coco(path: Path, text: str, catalog: CatalogIndex) -> ParsedFile[BoxInput]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"COCO file {path} is not valid JSON (line {exc.lineno}): {_COCO_SHAPE}"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations")
    ):
        raise InputError(f"COCO file {path}: {_COCO_SHAPE}")
    refused: list[Refusal] = []
    coco_images: dict[object, dict] = {}
    for j, entry in enumerate(data["images"]):
        where = f"images[{j}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            refused.append(Refusal(where, "", "an image needs id and file_name"))
        elif entry["id"] in coco_images:
            refused.append(Refusal(where, str(entry["file_name"]), "duplicate image id"))
        else:
            coco_images[entry["id"]] = entry
    results: list[tuple[int | str, str, str | None, Box | None, str | None]] = []
    for i, ann in enumerate(data["annotations"]):
        where, name, image_id = f"annotations[{i}]", "", None
        try:
            if not isinstance(ann, dict):
                raise _Refused("an annotation must be an object with image_id and bbox")
            entry = coco_images.get(ann.get("image_id"))
            if entry is None:
                raise _Refused(f"image_id {ann.get('image_id')!r} is not in images[]")
            name = str(entry["file_name"])
            image = catalog.resolve(name)
            if isinstance(image, str):
                raise _Refused(image)
            image_id = image.image_id
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise _Refused("bbox must be [x, y, width, height]")
            x, y, w, h = (_number(v, "bbox", text=False) for v in bbox)
            size = (entry.get("width"), entry.get("height"))
            if None not in size and tuple(size) != (image.width, image.height):
                raise _Refused(
                    f"COCO size {size[0]}x{size[1]} differs from the catalog's "
                    f"{image.width}x{image.height}: boxes must be in pixels of the image as "
                    "shown (EXIF orientation applied)"
                )
            box = Box(*(_pixel(v) for v in (x, y, x + w, y + h)))
            problem = box_problem(box, image)
            if problem:
                raise _Refused(problem)
            results.append((where, name, image_id, box, None))
        except _Refused as exc:
            results.append((where, name, image_id, None, str(exc)))
    rows, refused_rows = _refuse_duplicates(results, "annotations")
    return ParsedFile(f"coco:{path.name}", tuple(rows), tuple(refused + refused_rows))


def read_box_file(path: str | Path, catalog: CatalogIndex) -> ParsedFile[BoxInput]:
    """Boxes from a CSV (``image_id|image,left,top,right,bottom``) or COCO JSON file.

    COCO is recognised by a ``.json`` suffix or a leading ``{``; its float coordinates are
    rounded to the nearest pixel.
    """
    path = Path(path)
    text = _read_text(path, "box")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _boxes_from_coco(path, text, catalog)
    return _boxes_from_csv(path, text, catalog)


def read_triplet_file(path: str | Path, catalog: CatalogIndex) -> ParsedFile[TripletInput]:
    """Triplets from a CSV ``reference,positive,negative``: positive is more similar to the
    reference than negative. Three different, usable images per row."""
    path = Path(path)
    text = _read_text(path, "triplet")
    rows: list[TripletInput] = []
    refused: list[Refusal] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, row in _csv_rows(path, text, TRIPLET_COLUMNS, "triplet"):
        names = [row.get(column, "").strip() for column in TRIPLET_COLUMNS]
        shown = ", ".join(names)
        if "" in row:
            refused.append(Refusal(line, shown, row[""]))
            continue
        ids: list[str] = []
        for column, name in zip(TRIPLET_COLUMNS, names, strict=True):
            image = catalog.resolve(name)
            if isinstance(image, str):
                refused.append(Refusal(line, name, f"{column}: {image}"))
                break
            ids.append(image.image_id)
        else:
            triple = (ids[0], ids[1], ids[2])
            if len(set(triple)) < 3:
                reason = "reference, positive and negative must be three different images"
                refused.append(Refusal(line, shown, reason))
            elif triple in seen:
                refused.append(Refusal(line, shown, f"repeats line {seen[triple]}"))
            else:
                seen[triple] = line
                rows.append(TripletInput(line, *triple))
    return ParsedFile(f"csv:{path.name}", tuple(rows), tuple(refused))
