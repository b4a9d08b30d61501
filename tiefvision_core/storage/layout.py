"""Where every stage keeps its objects on a store: the one place storage keys are spelled.

Why one module: a key written by one stage is read by others (the encoder reads the
locator's boxes, the reindex plan reads every CURRENT pointer, gc walks them all), so each
stage spelling its own literal let them drift apart. Stores in the field hold these keys:
every value here must stay byte-for-byte the same (``tests/core/storage/test_layout.py``
pins them). Imports nothing: any stage, however light, may use it.

    catalog/manifest/CURRENT                 the live manifest version
    catalog/manifest/<version>.parquet       one row per photo
    catalog/rejects/<version>.parquet        files ingest refused
    catalog/staging/                         chunks of an ingest under way
    crops/LATEST, crops/<dataset>/           the locator's training crops
    models/locator/[CURRENT|<version>/]      locator models (<version>/evaluation.json)
    models/similarity/[CURRENT|<version>/]   Deep Ranking projections
    boxes/<locator version>/                 located boxes of the catalog
    encodings/<encoder>/<kind>/<version>/    encoding shards
    indexes/<space>/[CURRENT|<version>/]     search indexes (<version>/evaluation.json);
                                             indexes/.staging while built
    annotations/snapshots/                   frozen annotation exports
    locks/                                   store locks
"""

from __future__ import annotations

__all__ = [
    "BOXES_PREFIX",
    "CROPS_LATEST",
    "CROPS_PREFIX",
    "ENCODINGS_PREFIX",
    "EVALUATION_NAME",
    "INDEXES_PREFIX",
    "INDEX_STAGING",
    "LOCATOR_CURRENT",
    "LOCATOR_PREFIX",
    "LOCK_PREFIX",
    "MANIFEST_CURRENT",
    "MANIFEST_PREFIX",
    "MODEL_PREFIXES",
    "REJECTS_PREFIX",
    "SIMILARITY_CURRENT",
    "SIMILARITY_PREFIX",
    "SNAPSHOT_PREFIX",
    "STAGING_PREFIX",
    "boxes_prefix",
    "crops_dataset_key",
    "crops_prefix",
    "crops_work_key",
    "current_key",
    "encodings_prefix",
    "index_current",
    "index_evaluation_key",
    "index_prefix",
    "locator_evaluation_key",
    "locator_prefix",
    "manifest_key",
    "rejects_key",
]

_CURRENT = "CURRENT"


def current_key(prefix: str) -> str:
    """The pointer naming the live version of what lives under ``prefix``."""
    return prefix + _CURRENT


MANIFEST_PREFIX = "catalog/manifest/"
REJECTS_PREFIX = "catalog/rejects/"
STAGING_PREFIX = "catalog/staging/"
MANIFEST_CURRENT = current_key(MANIFEST_PREFIX)


def manifest_key(version: str) -> str:
    return f"{MANIFEST_PREFIX}{version}.parquet"


def rejects_key(version: str) -> str:
    return f"{REJECTS_PREFIX}{version}.parquet"


CROPS_PREFIX = "crops/"
CROPS_LATEST = CROPS_PREFIX + "LATEST"


def crops_prefix(dataset_id: str) -> str:
    return f"{CROPS_PREFIX}{dataset_id}/"


def crops_dataset_key(dataset_id: str) -> str:
    return crops_prefix(dataset_id) + "dataset.json"


def crops_work_key(dataset_id: str) -> str:
    """The dataset's plan: annotated photos, their boxes and train/test split."""
    return crops_prefix(dataset_id) + "_work.parquet"


LOCATOR_PREFIX = "models/locator/"
LOCATOR_CURRENT = current_key(LOCATOR_PREFIX)
SIMILARITY_PREFIX = "models/similarity/"
SIMILARITY_CURRENT = current_key(SIMILARITY_PREFIX)
#: Every kind of model folder (what gc keeps the newest versions of).
MODEL_PREFIXES = (LOCATOR_PREFIX, SIMILARITY_PREFIX)


def locator_prefix(version: str) -> str:
    return f"{LOCATOR_PREFIX}{version}/"


#: ``tiefvision evaluate``'s scores of a model or index version, in that version's folder:
#: they go (and are kept) with the version they score, so a later run compares like with like.
EVALUATION_NAME = "evaluation.json"


def locator_evaluation_key(version: str) -> str:
    return locator_prefix(version) + EVALUATION_NAME


BOXES_PREFIX = "boxes/"


def boxes_prefix(locator_version: str) -> str:
    return f"{BOXES_PREFIX}{locator_version}/"


ENCODINGS_PREFIX = "encodings/"


def encodings_prefix(encoder: str, kind: str, version: str) -> str:
    return f"{ENCODINGS_PREFIX}{encoder}/{kind}/{version}/"


INDEXES_PREFIX = "indexes/"
INDEX_STAGING = INDEXES_PREFIX + ".staging"


def index_prefix(space: str) -> str:
    return f"{INDEXES_PREFIX}{space}/"


def index_current(space: str) -> str:
    return current_key(index_prefix(space))


def index_evaluation_key(space: str, version: str) -> str:
    return f"{index_prefix(space)}{version}/{EVALUATION_NAME}"


SNAPSHOT_PREFIX = "annotations/snapshots/"
LOCK_PREFIX = "locks/"
