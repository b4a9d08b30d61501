"""One parameters model per stage: each flow takes exactly these fields (its Prefect form)
and each command offers them as options.

Field names, types and defaults are the flows' parameters as deployments know them; the
bounds are new and apply everywhere (the UI form, a triggered run, the CLI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field

from tiefvision_core.parameters.groups import (
    BackendParameters,
    BatchParameters,
    DatabaseParameters,
    EncoderParameters,
    GateParameters,
    Images,
    IndexKeep,
    LockParameters,
    Metadata,
    Retention,
    Seed,
    ShardSize,
    StoreParameters,
    VerifyHashes,
    WeightsParameters,
)
from tiefvision_core.vector_index.kinds import IndexKindChoice

__all__ = [
    "CropDatasetParameters",
    "CropsParameters",
    "EncodeParameters",
    "EvaluateParameters",
    "GcParameters",
    "IngestParameters",
    "LocateParameters",
    "PipelineParameters",
    "RebuildIndexParameters",
    "ReindexParameters",
    "TrainLocatorParameters",
    "TrainTripletsParameters",
]

SpaceName = Literal["unsupervised", "supervised"]


class IngestParameters(StoreParameters):
    """ingest: a folder or S3 prefix of photos into the catalog manifest."""

    settings_fields: ClassVar[Mapping[str, str]] = {"follow_symlinks": "follow_symlinks"}

    images: Images
    metadata: Metadata = None
    chunk_size: int = Field(
        default=256,
        ge=1,
        description="Images per parallel task; smaller = finer resume, more overhead.",
    )
    verify_hashes: VerifyHashes = False
    follow_symlinks: bool | None = Field(
        default=None,
        description="Read files that links lead to outside the folder; links inside it are "
        "always read (default: $TIEFVISION_FOLLOW_SYMLINKS, off: such links are rejects, "
        "never read).",
    )


class EncodeParameters(WeightsParameters, BatchParameters, BackendParameters):
    """encode: the catalog's photos into feature maps, as Parquet shards."""

    shard_size: ShardSize = 256
    flips: bool = Field(
        default=False,
        description="Also store each crop's horizontal mirror (a free positive for training).",
    )
    dtype: Literal["float16", "float32"] = Field(
        default="float16", description="float16 (half the storage) or float32 vectors."
    )
    kind: Literal["grid", "box"] = Field(
        default="grid",
        description="The crop encoded: grid = the whole image, box = the current locator's "
        "box (the whole image where there is none).",
    )
    compile: bool = Field(
        default=False, description="torch.compile the model (worth it for long GPU runs)."
    )


#: The locator's whole-image sides, in pixels (``tiefvision_core.locator.crops``'s default;
#: spelled here because importing that module loads torch; a test keeps them equal).
DEFAULT_SCALES: tuple[int, ...] = (320, 448, 576)


class CropDatasetParameters(WeightsParameters, DatabaseParameters):
    """What a crops dataset is built from: shared by crops and train-locator."""

    scales: tuple[int, ...] = Field(
        default=DEFAULT_SCALES,
        min_length=1,
        description="Longer side, in pixels, of each whole-image input the windows are cut from.",
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Share of annotated photos held out (split by photo, stratified); the "
        "locator's early stopping and scores use them.",
    )
    seed: Seed = 0
    min_images: int = Field(
        default=20, ge=2, description="Refuse to build a dataset from fewer annotated photos."
    )
    fit_scales: bool = Field(
        default=True,
        description="Add one larger side when the annotated products are narrow (a window "
        'would not fit inside them at any of the scales; see the README, "Locating the '
        'product").',
    )


class CropsParameters(CropDatasetParameters, BatchParameters):
    """crops: the locator's training windows from the current box annotations."""


class TrainLocatorParameters(CropDatasetParameters):
    """train-locator: the OverFeat locator on the annotated photos, made current."""

    dataset: str | None = Field(
        default=None,
        description="An existing crops dataset id; empty = build (or reuse) one from the "
        "current annotations.",
    )
    threshold: float = Field(
        default=0.8,
        ge=0.01,
        le=0.99,
        description="P(object) a position needs for its box to count at inference.",
    )
    max_epochs: int = Field(default=40, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(
        default=6,
        ge=1,
        description="Stop after this many epochs without a better held-out loss.",
    )
    learning_rate: float = Field(default=1e-3, gt=0.0, description="AdamW learning rate.")


class LocateParameters(WeightsParameters, BatchParameters):
    """locate: the product's box in every catalog photo without one."""

    locator: str | None = Field(
        default=None,
        description="Locator version (default: the current one); the encoder must be the one "
        "it was trained with.",
    )
    shard_size: ShardSize = 256


class RebuildIndexParameters(WeightsParameters, BatchParameters, LockParameters, GateParameters):
    """rebuild-index: one search space's index from the catalog's current box crops."""

    space: SpaceName = Field(
        default="unsupervised",
        description="unsupervised (mean cosine of encodings) or supervised (Deep Ranking).",
    )
    index_kind: IndexKindChoice = Field(
        default="auto",
        description="auto (exact while the vectors fit 64 MiB, else HNSW + exact "
        "re-ranking), exact, hnsw or ivfpq (compressed).",
    )
    keep: IndexKeep = 3


class ReindexParameters(WeightsParameters, BatchParameters, LockParameters, GateParameters):
    """reindex: the nightly incremental reindex, through every stage into every index."""

    settings_fields: ClassVar[Mapping[str, str]] = {"retention": "retention"}

    images: Images
    metadata: Metadata = None
    shard_size: ShardSize = 256
    index_kind: IndexKindChoice | None = Field(
        default=None,
        description="Force an index kind (auto, exact, hnsw or ivfpq); empty = keep each live "
        "index's configuration (auto for a first build).",
    )
    keep: IndexKeep = 3
    max_churn: float = Field(
        default=0.2,
        ge=0.001,
        description="Rebuild an ANN index when more than this share of the rows its training "
        "saw were added, changed or removed since.",
    )
    max_growth: float = Field(
        default=2.0,
        ge=1.001,
        description="Rebuild an ANN index when the catalog grew or shrank by this factor "
        "since its training.",
    )
    verify_hashes: VerifyHashes = False
    retention: Retention = Field(
        default=None,
        description="Versions the closing gc step keeps per kind (index, model, manifest), "
        "the live one included (default: $TIEFVISION_RETENTION, else 3); encodings and boxes "
        "of removed or re-shot photos go at once.",
    )
    gc_grace_hours: float = Field(
        default=6.0,
        ge=0.0,
        description="Leftovers (temporary files, work lists) younger than this are kept.",
    )


class TrainTripletsParameters(WeightsParameters, DatabaseParameters):
    """train-triplets: the supervised similarity (Deep Ranking) and its index."""

    margin: float = Field(
        default=0.1,
        gt=0.0,
        le=2.0,
        description="Hinge-loss margin on the mean-cosine similarity (cosines: at most 2).",
    )
    max_epochs: int = Field(
        default=30,
        ge=1,
        description="Upper bound on epochs (early stopping on validation products: a quarter "
        "of the products that are not held out).",
    )
    learning_rate: float = Field(default=1e-3, gt=0.0, description="Adam learning rate.")
    test_fraction: float = Field(
        default=0.25,
        gt=0.0,
        lt=1.0,
        description="Share of products held out (all their photos) and scored; neither "
        "training nor early stopping sees them.",
    )
    seed: Seed = 0
    rebuild: bool = Field(
        default=True, description="Publish a new supervised index with the trained model."
    )


class EvaluateParameters(StoreParameters):
    """evaluate: every live index space's retrieval by product_id."""

    spaces: list[SpaceName] | None = Field(
        default=None,
        description="The index spaces to score (default: unsupervised and supervised).",
    )


class GcParameters(StoreParameters, LockParameters):
    """gc: delete what nothing live refers to."""

    settings_fields: ClassVar[Mapping[str, str]] = {"retention": "retention"}

    retention: Retention = None
    grace_hours: float = Field(
        default=6.0,
        ge=0.0,
        description="Leftovers (temporary files, work lists, staging) younger than this are "
        "kept (they may belong to a job still running).",
    )
    dry_run: bool = Field(
        default=False, description="List what would go and its bytes; delete nothing."
    )


class PipelineParameters(EncoderParameters):
    """pipeline: ingest, encode, locator, index and similarity, in one run."""

    images: Images
    metadata: Metadata = None
    min_boxes: int = Field(
        default=20, ge=2, description="Annotated photos needed to train the locator."
    )
    min_products: int = Field(
        default=8, ge=2, description="Products (product_id) needed to train Deep Ranking."
    )
