"""Retrieval numbers side by side (whole image vs located crop, unsupervised vs supervised)
and an HTML page of queries with their top results, boxes drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import pyarrow.compute as pc
from PIL import ImageDraw

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS, decode_image
from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
from tiefvision_core.errors import ImageRejected, InputError, StorageNotFound
from tiefvision_core.index.search import search_by_id
from tiefvision_core.similarity.retrieval import ranked_neighbours, retrieval_scores
from tiefvision_core.similarity.training import load_projection, projected_maps
from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
from tiefvision_core.storage.layout import SIMILARITY_CURRENT
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES, read_source
from tiefvision_core.vector_index.versions import OpenedIndex

__all__ = ["compare_spaces", "search_report_html"]


def _maps(store: Store, encoder: Encoder, kind: str) -> tuple[list[str], np.ndarray]:
    table = read_encodings(store, encoder.name, encoder.version, kind=kind)
    table = table.filter(pc.invert(table["flipped"]))
    return table["image_id"].to_pylist(), similarity_grid(vectors_as_maps(table))


def compare_spaces(store: Store, encoder: Encoder) -> list[dict[str, object]]:
    """P@1, P@5, mAP@10 (same product = relevant) for whole images and located crops in
    the unsupervised space over the whole catalog, and for the unsupervised and supervised
    spaces on the products the supervised model never saw."""
    manifest = read_manifest(store)
    if manifest is None or "product_id" not in manifest.column_names:
        raise InputError("retrieval scores need a product_id column: ingest with --metadata")
    products = dict(
        zip(manifest["image_id"].to_pylist(), manifest["product_id"].to_pylist(), strict=True)
    )
    rows = []
    boxes_ids, boxes = _maps(store, encoder, "box")
    for label, kind in (("whole image", "grid"), ("located crop", "box")):
        ids, maps = (boxes_ids, boxes) if kind == "box" else _maps(store, encoder, kind)
        labels = np.array([products[i] for i in ids])
        scores = retrieval_scores(ranked_neighbours(similarity_vectors(maps), 10), labels)
        rows.append({"crop": label, "space": "unsupervised", "photos": "all", **scores.as_dict()})

    if store.read_pointer(SIMILARITY_CURRENT) is not None:
        net, metadata = load_projection(store, encoder.version)
        held_out = set(metadata["held_out_products"])
        keep = [i for i, image_id in enumerate(boxes_ids) if products[image_id] in held_out]
        labels = np.array([products[boxes_ids[i]] for i in keep])
        for space, maps in (
            ("unsupervised", boxes[keep]),
            ("supervised", projected_maps(net, boxes[keep])),
        ):
            scores = retrieval_scores(ranked_neighbours(similarity_vectors(maps), 10), labels)
            rows.append(
                {"crop": "located crop", "space": space, "photos": "held-out products"}
                | scores.as_dict()
            )
    return rows


def _thumb(photo: tuple[str, str], box: list[int], colour: str, limits: tuple[int, int]) -> str:
    """An ``<img>`` of the photo (``(source_uri, sha256)``) with its box drawn, or a note
    when the file is no longer what ingest recorded (the report still renders).
    ``limits``: the largest photo read, in bytes and in pixels (the settings')."""
    size = 160
    try:
        data = read_source(photo[0], sha256=photo[1], max_bytes=limits[0])
        image = decode_image(data, max_pixels=limits[1])
    except (ImageRejected, StorageNotFound) as error:
        reason = getattr(error, "reason", "vanished")
        return f"<i>photo not shown: {html.escape(reason)}</i>"
    scale = size / max(image.size)
    thumb = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(thumb)
    draw.rectangle([v * scale for v in box], outline=colour, width=3)
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, "JPEG", quality=80)
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def search_report_html(
    store: Store,
    opened: OpenedIndex,
    *,
    queries: int = 8,
    k: int = 5,
    title: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> str:
    """A self-contained HTML page: each query photo (box in blue) and its top ``k`` results
    (box in green when it is the same product, red otherwise), with scores. Photos are read
    as the manifest recorded them (:func:`read_source`); one changed since is left blank."""
    manifest = read_manifest(store)
    if manifest is None:  # an index exists, so only a store stripped of its catalog
        raise InputError("this store has no catalog manifest: run `tiefvision ingest`")
    ids = manifest["image_id"].to_pylist()
    photos = dict(
        zip(
            ids,
            zip(manifest["source_uri"].to_pylist(), manifest["sha256"].to_pylist(), strict=True),
            strict=True,
        )
    )
    products = (
        dict(zip(ids, manifest["product_id"].to_pylist(), strict=True))
        if "product_id" in manifest.column_names
        else {}
    )
    rows = np.linspace(0, len(opened.ids) - 1, num=min(queries, len(opened.ids))).astype(int)
    limits = (max_bytes, max_pixels)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>TiefVision search report</title>",
        "<style>body{font-family:sans-serif}td{text-align:center;font-size:12px;"
        "vertical-align:top;padding:4px}</style>",
        f"<h1>{html.escape(title or 'Search report')}</h1>",
        f"<p>{html.escape(opened.space)} index {html.escape(opened.version)} "
        f"({len(opened.ids)} photos)</p><table>",
    ]
    for row in rows:
        query = opened.ids.iloc[int(row)]
        result = search_by_id(opened, query["image_id"], k=k)
        thumb = _thumb(photos[query["image_id"]], list(query["box"]), "blue", limits)
        cells = [f"<td>{thumb}<br><b>query</b><br>{html.escape(query['image_id'])}</td>"]
        for hit in result.results:
            same = products.get(hit.image_id) == products.get(query["image_id"]) and products
            colour = "green" if same else "red"
            cells.append(
                f"<td>{_thumb(photos[hit.image_id], hit.box, colour, limits)}<br>"
                f"{hit.score:.3f}<br>{html.escape(hit.image_id)}</td>"
            )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append(f"<!-- {html.escape(json.dumps(opened.metadata.get('source', {})))} -->")
    return "\n".join(parts)
