"""How flow results are persisted: small JSON documents, never pickles.

Why: a deployment's result is read back by the UI, by ``tiefvision trigger --wait --json``
and by parent flows, possibly on another machine and after an upgrade. Pickles break across
versions and would happily carry a tensor or a catalog-sized table; JSON of a small
dataclass (counts, versions, URIs) is a few hundred bytes anyone can read. Tasks pass
their plans in memory and never persist at all (``tasks.policies.EPHEMERAL``).

Where results go is the environment's choice, not the code's:
``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK`` (set on the work pools by ``tiefvision
setup-prefect``: an ``S3Bucket`` block on MinIO/S3), else Prefect's local result folder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect.serializers import JSONSerializer
from prefect.utilities.importtools import to_qualified_name
from pydantic_core import to_jsonable_python

__all__ = ["FLOW_RESULTS", "encode_result"]


def _plain(value: Any) -> Any:
    """NumPy scalars (metrics computed with NumPy) as the Python numbers they hold."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"a flow result holds a {type(value).__name__}: return small dataclasses of plain "
        "values (counts, versions, URIs), never arrays or tables"
    )


def encode_result(value: Any) -> Any:
    """``json.dumps`` default: objects JSON does not know, in the form Prefect's decoder
    rebuilds (``{"__class__": …, "data": …}``); unlike Prefect's own encoder it accepts
    NumPy scalars anywhere inside a dataclass."""
    if isinstance(value, np.generic):
        return value.item()
    return {
        "__class__": to_qualified_name(type(value)),
        "data": to_jsonable_python(value, fallback=_plain),
    }


#: Options for every ``@flow``: the (small) result is persisted, as JSON.
FLOW_RESULTS: dict[str, Any] = {
    "persist_result": True,
    "result_serializer": JSONSerializer(object_encoder=f"{__name__}.encode_result"),
}
