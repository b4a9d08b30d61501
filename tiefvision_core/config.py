"""Typed settings, read once from the environment and overridden by CLI flags.

Why one object: every stage (CLI, flows, web) needs the same storage URL, credentials and
device choice; reading ``os.environ`` in many places makes a nightly job's behaviour depend
on import order. ``load_settings()`` validates everything at start, so a typo fails before
any work is done, with a message that names the setting and what it accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from tiefvision_core.errors import ConfigError
from tiefvision_core.parameters.choices import Backend, Device

__all__ = ["Settings", "default_store_url", "load_settings", "normalise_store_url"]

TaskRunnerName = Literal["default", "dask"]

#: Address schemes a Dask scheduler listens on (``dask scheduler`` prints ``tcp://…:8786``).
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def default_store_url() -> str:
    """The embedded local store: under ``$XDG_DATA_HOME`` so a nightly job finds it again."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "tiefvision" / "store").resolve().as_uri()


def normalise_store_url(value: str) -> str:
    """Accept ``file://…``, ``s3://bucket[/prefix]`` or a plain path (made absolute)."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    parsed = urlparse(value)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{value!r} has no bucket: use s3://BUCKET[/PREFIX]")
        return f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{value!r}: a file URL needs three slashes, e.g. file:///data/store")
        return Path(parsed.path).resolve().as_uri()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter = a Windows drive, not a scheme
        raise ValueError(
            f"{value!r}: scheme {parsed.scheme!r} is not supported; use file:// or s3://"
        )
    return Path(value).expanduser().resolve().as_uri()


class Settings(BaseSettings):
    """Everything a run needs to know about its environment.

    Sources, strongest first: explicit overrides (CLI flags), ``TIEFVISION_*`` variables, the
    standard ``AWS_*`` variables (so an existing S3/MinIO setup works unchanged), defaults.
    """

    model_config = SettingsConfigDict(
        env_prefix="TIEFVISION_", extra="forbid", populate_by_name=True, validate_default=True
    )

    store_url: str = Field(
        default_factory=default_store_url,
        description="Root of everything the pipeline writes: file:///dir or s3://bucket/prefix.",
    )
    database_url: str | None = Field(
        default=None,
        description="Annotations database (SQLAlchemy URL); default: SQLite under the store.",
    )
    device: Device = Field(default="auto", description="Where models run: auto, cpu or cuda.")
    backend: Backend = Field(
        default="auto",
        description=(
            "Where the CPU forward pass runs: auto (PyTorch or ONNX Runtime, whichever "
            "measures faster on this machine), torch or onnxruntime. CUDA always uses PyTorch."
        ),
    )
    encoder: str = Field(default="efficientnet_lite0", min_length=1, description="Encoder name.")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Images per forward pass; unset = measured per device (the fastest).",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Parallel workers for CPU-bound stages (decoding, hashing).",
    )
    max_image_pixels: int = Field(
        default=80_000_000,
        ge=1,
        description="Decompression-bomb guard: larger images are rejected.",
    )
    retention: int = Field(
        default=3,
        ge=1,
        description=(
            "Versions kept by `tiefvision gc` and the nightly reindex's gc step, per kind "
            "(index, model, manifest), the live one included: what a removed photo outlives."
        ),
    )
    regression_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description=(
            "How much retrieval mAP@10 a rebuilt or reindexed index version may lose against "
            "the live one (on the photos both ask about) and still go live; a larger drop "
            "keeps the live version (the regression gate; `--allow-regression` forces)."
        ),
    )
    regression_rule: Literal["tolerance", "interval"] = Field(
        default="tolerance",
        description=(
            "What the regression gate refuses: `tolerance`, any drop beyond the tolerance; "
            "`interval`, only such a drop whose 95 % interval (products resampled) lies "
            "below zero — on a catalog of a few products, a drop that may be noise goes live."
        ),
    )
    max_image_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest source photo read, in bytes: larger files are rejects (too_large), "
            "never read whole into memory."
        ),
    )
    follow_symlinks: bool = Field(
        default=False,
        description=(
            "Ingest follows symbolic links that lead out of the source folder; off by "
            "default, so a link to /etc/passwd in a catalog is never read."
        ),
    )
    task_runner: TaskRunnerName = Field(
        default="default",
        description=(
            "Where the encode and locate flows run their shards: default (this process, one "
            "after another) or dask (a Dask cluster, through prefect-dask)."
        ),
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster; unset = a temporary local one.",
    )
    dask_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "Workers of the temporary local Dask cluster; unset = one per GPU, else one per "
            "CPU worker (TIEFVISION_WORKERS)."
        ),
    )
    api_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token the web service's write endpoints (boxes, triplets, flow runs) "
            "require; unset = open in development, refused in production."
        ),
    )
    production: bool = Field(
        default=False,
        description="Production mode: the web service refuses writes unless api_token is set.",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest photo the web service accepts for search by upload, in bytes.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the web API from a browser; "
        "empty = CORS off (same origin only).",
    )
    request_read_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds the web service waits for a whole request (headers and body) "
        "from its first byte, or for the first one on a new connection; then it answers 408 "
        "and closes (a slow client must not hold a connection forever).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_endpoint_url",
            "TIEFVISION_S3_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
        ),
        description="S3-compatible endpoint (MinIO, rclone); unset for AWS itself.",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("aws_access_key_id", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("aws_region", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str) -> str:
        return normalise_store_url(value)

    @field_validator("dask_address")
    @classmethod
    def _check_dask_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        """``host:port`` or ``scheme://host:port``; a dashboard URL (http) is a common slip."""
        value = (value or "").strip().rstrip("/")
        if not value:
            return None
        if info.data.get("task_runner", "dask") != "dask":
            raise ValueError("is only used with TIEFVISION_TASK_RUNNER=dask")
        address = value if "://" in value else f"tcp://{value}"
        parsed = urlparse(address)
        if parsed.scheme in ("http", "https"):
            raise ValueError(
                "that looks like the dashboard; give the scheduler's address, "
                "e.g. tcp://scheduler:8786"
            )
        if parsed.scheme not in DASK_SCHEMES or not parsed.netloc:
            raise ValueError(
                "must be a Dask scheduler address such as tcp://scheduler:8786 "
                f"(schemes: {', '.join(DASK_SCHEMES)})"
            )
        return address

    @field_validator("dask_workers")
    @classmethod
    def _check_dask_workers(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        if info.data.get("task_runner", "dask") != "dask":
            raise ValueError("is only used with TIEFVISION_TASK_RUNNER=dask")
        if info.data.get("dask_address"):
            raise ValueError(
                "sizes the temporary local cluster; the cluster at TIEFVISION_DASK_ADDRESS "
                "has its own workers"
            )
        return value

    @field_validator("api_token")
    @classmethod
    def _check_api_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty variable means no token; a short one is guessable."""
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9000")
        return value.rstrip("/")


_CLI_FLAGS = {
    "store_url": "store",
    "database_url": "database",
    "regression_tolerance": "tolerance",
}
_ENV_NAMES = {
    # Environment only: no command-line flag chooses the engine.
    "task_runner": "TIEFVISION_TASK_RUNNER",
    "dask_address": "TIEFVISION_DASK_ADDRESS",
    "dask_workers": "TIEFVISION_DASK_WORKERS",
    "api_token": "TIEFVISION_API_TOKEN",
    "production": "TIEFVISION_PRODUCTION",
    "max_upload_bytes": "TIEFVISION_MAX_UPLOAD_BYTES",
    "cors_origins": "TIEFVISION_CORS_ORIGINS",
    "request_read_timeout": "TIEFVISION_REQUEST_READ_TIMEOUT",
    "s3_endpoint_url": "TIEFVISION_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL)",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_region": "AWS_REGION",
}


def _describe(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "settings"
    flag = _CLI_FLAGS.get(field, field.replace("_", "-"))
    name = _ENV_NAMES.get(field, f"TIEFVISION_{field.upper()} / --{flag}")
    hidden = any(word in field for word in ("secret", "key", "token"))
    shown = "" if hidden else f" (got {error.get('input')!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"invalid setting {name}{shown}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Read settings; ``overrides`` (CLI flags) win; ``None`` overrides are ignored.

    Raises :class:`ConfigError` naming every invalid setting and what it accepts.
    """
    # Any, not object: each value is whatever the CLI parsed, validated by pydantic right here.
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
