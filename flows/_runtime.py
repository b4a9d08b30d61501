"""A stage's parameters → the settings and the encoding runtime configuration, shared by
every flow that encodes."""

from __future__ import annotations

from tiefvision_core.config import Settings
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.parameters.groups import StageParameters, WeightsParameters
from tiefvision_core.parameters.stages import EncodeParameters
from tiefvision_core.run import settings_for

__all__ = ["runtime_config"]


def runtime_config(parameters: StageParameters) -> tuple[Settings, RuntimeConfig]:
    """Settings from the parameters' flags and the environment (the ones the command or
    the parent flow built, when these flags give them: :func:`~tiefvision_core.run.settings_for`),
    and the runtime every encoding task builds. A stage without ``weights``, ``compile``
    or ``backend`` runs the default of each."""
    settings = settings_for(**parameters.settings_flags())
    return settings, RuntimeConfig(
        encoder=settings.encoder,
        weights=parameters.weights if isinstance(parameters, WeightsParameters) else "default",
        device=settings.device,
        batch_size=settings.batch_size,
        threads=settings.workers,
        compile=isinstance(parameters, EncodeParameters) and parameters.compile,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_image_bytes,
        backend=settings.backend,
    )
