"""Settings → the encoding runtime configuration, shared by every flow that encodes."""

from __future__ import annotations

from tiefvision_core.config import Settings
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.run import settings_for

__all__ = ["runtime_config"]


def runtime_config(
    store: str | None,
    encoder: str | None,
    weights: str,
    device: str | None,
    batch_size: int | None,
    compile: bool = False,
    backend: str | None = None,
    **flags: object,
) -> tuple[Settings, RuntimeConfig]:
    """Settings from flags and environment (the ones the command or the parent flow built,
    when these flags give them: :func:`~tiefvision_core.run.settings_for`), and the runtime
    every encoding task builds. ``flags``: further settings flags (regression_tolerance …)."""
    settings = settings_for(
        store_url=store,
        encoder=encoder,
        device=device,
        batch_size=batch_size,
        backend=backend,
        **flags,
    )
    return settings, RuntimeConfig(
        encoder=settings.encoder,
        weights=weights,
        device=settings.device,
        batch_size=settings.batch_size,
        threads=settings.workers,
        compile=compile,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_image_bytes,
        backend=settings.backend,
    )
