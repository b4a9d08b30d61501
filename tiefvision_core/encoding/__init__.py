"""Pixels → per-position feature maps: one image's inputs and encoding (``pixels``), the
requests a stream is made of (``requests``), the runtime that streams them (``runtime``:
device, layout, process pool), shards on storage, whole-catalog encoding.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.encoding.catalog import (  # noqa: F401
        EncodeSummary,
        encode_catalog,
        encode_shard,
        summarise_encoding,
    )
    from tiefvision_core.encoding.pixels import (  # noqa: F401
        Box,
        crop_pixels,
        encode_crops,
        encode_whole,
        l2_normalise_positions,
        whole_input_size,
        whole_pixels,
    )
    from tiefvision_core.encoding.requests import CropRequest, EncodedBatch  # noqa: F401
    from tiefvision_core.encoding.runtime import (  # noqa: F401
        EncodingRuntime,
        RuntimeConfig,
        may_start_processes,
        resolve_device,
    )
    from tiefvision_core.encoding.shards import (  # noqa: F401
        KINDS,
        EncodePlan,
        RowKey,
        ShardResult,
        ShardSpec,
        VectorDType,
        build_shard,
        current_boxes,
        encoded_keys,
        load_requests,
        plan_encoding,
        read_encodings,
        row_key,
        row_keys,
        shard_prefix,
        vectors_as_maps,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "Box": "pixels",
    "CropRequest": "requests",
    "EncodePlan": "shards",
    "EncodeSummary": "catalog",
    "EncodedBatch": "requests",
    "EncodingRuntime": "runtime",
    "KINDS": "shards",
    "RowKey": "shards",
    "RuntimeConfig": "runtime",
    "ShardResult": "shards",
    "ShardSpec": "shards",
    "VectorDType": "shards",
    "build_shard": "shards",
    "crop_pixels": "pixels",
    "current_boxes": "shards",
    "encode_catalog": "catalog",
    "encode_crops": "pixels",
    "encode_shard": "catalog",
    "encode_whole": "pixels",
    "encoded_keys": "shards",
    "l2_normalise_positions": "pixels",
    "load_requests": "shards",
    "may_start_processes": "runtime",
    "plan_encoding": "shards",
    "read_encodings": "shards",
    "resolve_device": "runtime",
    "row_key": "shards",
    "row_keys": "shards",
    "shard_prefix": "shards",
    "summarise_encoding": "catalog",
    "vectors_as_maps": "shards",
    "whole_input_size": "pixels",
    "whole_pixels": "pixels",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
