"""Parameter groups that several stages share, each declared once, and the base model.

Why groups: ``--store``, the encoder's four flags, the store lock's two and the regression
gate's two are taken by up to eight stages; each is written here once, with its help and
its bounds, and a stage model inherits the groups it needs (field names are the flow's
parameter names, kept stable for deployments that already pass them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from tiefvision_core.parameters.choices import Backend, Device

if TYPE_CHECKING:
    from tiefvision_core.config import Settings

__all__ = [
    "BackendParameters",
    "BatchParameters",
    "DatabaseParameters",
    "EncoderParameters",
    "GateParameters",
    "Images",
    "IndexKeep",
    "LockParameters",
    "Metadata",
    "Retention",
    "Seed",
    "ShardSize",
    "StageParameters",
    "StoreParameters",
    "VerifyHashes",
    "WeightsParameters",
]

P = TypeVar("P", bound="StageParameters")


class StageParameters(BaseModel):
    """A stage's parameters: validated once, immutable, unknown names refused.

    ``settings_fields`` maps a field to the :class:`~tiefvision_core.config.Settings`
    attribute it overrides (``store`` → ``store_url``): ``None`` there means "not given",
    and the settings (flags over ``TIEFVISION_*`` over defaults) decide.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    settings_fields: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def _settings_map(cls) -> dict[str, str]:
        """Every group's field → settings mapping along the class hierarchy."""
        mapping: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            mapping.update(klass.__dict__.get("settings_fields", {}))
        return mapping

    @classmethod
    def field_order(cls) -> list[str]:
        """The fields as a form lists them: the store first, then what is the stage's own,
        then each group's (left to right, as the class names its bases)."""
        own = [name for name in cls.__annotations__ if name in cls.model_fields]
        inherited = [name for base in cls.__bases__ for name in getattr(base, "model_fields", {})]
        ordered = list(dict.fromkeys(["store", *own, *inherited]))
        return [name for name in ordered if name in cls.model_fields]

    def settings_flags(self) -> dict[str, object]:
        """The settings flags these parameters give (``None``: not given), for
        :func:`~tiefvision_core.run.settings_for`."""
        return {attribute: getattr(self, name) for name, attribute in self._settings_map().items()}

    def resolved(self, settings: Settings) -> Self:
        """These parameters with each settings-backed field set to what the settings
        decided (the store URL, the encoder, the device …), so a flow or subflow started
        with them sees the same values the checks saw."""
        return self.model_copy(
            update={
                name: getattr(settings, attribute)
                for name, attribute in self._settings_map().items()
            }
        )

    def arguments(self) -> dict[str, Any]:
        """The flow's keyword arguments: every field by name, secrets still wrapped (so
        Prefect records them masked)."""
        return dict(self)  # iterating a model yields its fields, values as they are

    def arguments_for(self, stage: type[P], **values: Any) -> dict[str, Any]:
        """Another stage's flow arguments (a subflow's): the fields it shares with these
        parameters, then ``values``, validated by that stage's model."""
        shared = {name: value for name, value in self if name in stage.model_fields}
        return stage.model_validate({**shared, **values}).arguments()


# -- single parameters shared by several stages -----------------------------------------

Images = Annotated[
    str,
    Field(min_length=1, description="The catalog's photos: a local folder or s3://bucket/prefix."),
]
Metadata = Annotated[
    str | None,
    Field(description="CSV/Parquet with product_id, category… per image (optional)."),
]
VerifyHashes = Annotated[
    bool,
    Field(description="Re-hash every image, even when size and mtime/ETag are unchanged."),
]
ShardSize = Annotated[
    int,
    Field(ge=1, description="Photos per encoding shard and locate part (the unit of resume)."),
]
IndexKeep = Annotated[
    int, Field(ge=1, description="Index versions kept on storage (the live one included).")
]
Retention = Annotated[
    int | None,
    Field(
        ge=1,
        description="Versions kept per kind (index, model, manifest), the live one included "
        "(default: $TIEFVISION_RETENTION, else 3).",
    ),
]
Seed = Annotated[int, Field(description="Split and training seed.")]


# -- groups -----------------------------------------------------------------------------


class StoreParameters(StageParameters):
    """Where the pipeline reads and writes."""

    settings_fields: ClassVar[Mapping[str, str]] = {"store": "store_url"}

    store: str | None = Field(
        default=None,
        description="Storage root: file:///dir or s3://bucket/prefix "
        "(default: $TIEFVISION_STORE_URL, else the embedded local store).",
    )


class EncoderParameters(StoreParameters):
    """Which CNN encodes, and where it runs."""

    settings_fields: ClassVar[Mapping[str, str]] = {"encoder": "encoder", "device": "device"}

    encoder: str | None = Field(
        default=None,
        min_length=1,
        description="Encoder name (default: $TIEFVISION_ENCODER, else efficientnet_lite0).",
    )
    device: Device | None = Field(default=None, description="auto, cpu or cuda.")


class WeightsParameters(EncoderParameters):
    """The encoder with its weights (every stage that runs the CNN)."""

    weights: str = Field(
        default="default",
        min_length=1,
        description="Encoder weights: default (pretrained, offline), none (random, on "
        "purpose), or a .pth path.",
    )


class BackendParameters(StageParameters):
    """Where the CPU forward pass runs."""

    settings_fields: ClassVar[Mapping[str, str]] = {"backend": "backend"}

    backend: Backend | None = Field(
        default=None,
        description="CPU forward pass: auto (the faster of torch and onnxruntime, measured "
        "once per machine), torch or onnxruntime (default: $TIEFVISION_BACKEND, else auto).",
    )


class BatchParameters(StageParameters):
    """Images per forward pass."""

    settings_fields: ClassVar[Mapping[str, str]] = {"batch_size": "batch_size"}

    batch_size: int | None = Field(
        default=None, ge=1, description="Images per forward pass (default: measured per device)."
    )


class LockParameters(StageParameters):
    """The store lock that keeps reindex, rebuild-index and gc one at a time per store."""

    lock_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds to wait for a reindex, rebuild or gc already running on the store.",
    )
    lock_ttl: float = Field(
        default=120.0,
        ge=1,
        description="Seconds without a heartbeat after which a lock holder counts as dead.",
    )


class GateParameters(StageParameters):
    """The regression gate a new index version passes before it goes live."""

    settings_fields: ClassVar[Mapping[str, str]] = {"tolerance": "regression_tolerance"}

    tolerance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="mAP@10 a new index version may lose against the live one and still go "
        "live (default: $TIEFVISION_REGRESSION_TOLERANCE, else 0.02).",
    )
    allow_regression: bool = Field(
        default=False,
        description="Let a new index version go live even when its mAP@10 drops beyond the "
        "tolerance (the comparison is still published).",
    )


class DatabaseParameters(StageParameters):
    """The annotations database, a secret: Prefect shows it masked among a run's
    parameters and the deployment form takes it as a password field."""

    database: SecretStr | None = Field(
        default=None,
        description="Annotations database: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: $TIEFVISION_DATABASE_URL, else annotations.sqlite under a local store).",
    )

    @field_validator("database", mode="before")
    @classmethod
    def _empty_is_not_given(cls, value: object) -> object:
        """``--database ""`` (an unset variable in a script) means "not given"."""
        if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            return None
        return value

    def settings_flags(self) -> dict[str, object]:
        """The URL unwrapped for the settings; it is never written back by
        :meth:`resolved`, so the flow's arguments keep it masked."""
        flags = super().settings_flags()
        if self.database is not None:
            flags["database_url"] = self.database.get_secret_value()
        return flags
