"""Settings → the encoding runtime configuration, shared by every flow that encodes."""

from __future__ import annotations

from tiefvision_core.config import Settings, load_settings
from tiefvision_core.encoding.runtime import RuntimeConfig

__all__ = ["runtime_config"]


def runtime_config(
    store: str | None,
    encoder: str | None,
    weights: str,
    device: str | None,
    batch_size: int | None,
    compile: bool = False,
    backend: str | None = None,
) -> tuple[Settings, RuntimeConfig]:
    """Settings from flags and environment, and the runtime every encoding task builds."""
    settings = load_settings(
        store_url=store, encoder=encoder, device=device, batch_size=batch_size, backend=backend
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
