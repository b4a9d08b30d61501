"""What a command checks before it runs a flow (or a query), in one place.

Why: a flow that fails on a typo in ``--store`` or a missing GPU costs a Prefect run, logs
in the UI and, for the encoders, seconds of model loading before the error. Every command
therefore checks its inputs first and fails fast with one line (exit code 2, see
:func:`tiefvision_cli.main.main`). The checks always run in the same order, cheapest
first: settings, the database URL (configuration only: an S3 store needs one), the source
folder, the store, the metadata file, the device, the encoder; each command asks only for
those its flow needs. Heavy imports (torch for the device and
the encoder) happen only when asked for, so ``search --id`` stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiefvision_core.config import Settings
    from tiefvision_core.encoders import Encoder
    from tiefvision_core.parameters.groups import StageParameters
    from tiefvision_core.storage.stores import Store

__all__ = ["Checked", "preflight"]


@dataclass(frozen=True)
class Checked:
    """What the checks produced: the settings with the command's flags applied, the opened
    store, and (when asked for) the device and the encoder the flow will use."""

    settings: Settings
    store: Store
    device: object | None = None  # torch.device: torch is imported only when asked for
    encoder: Encoder | None = None


def preflight(
    *,
    parameters: StageParameters | None = None,
    store: str | None = None,
    images: str | None = None,
    metadata: Path | None = None,
    database: str | None = None,
    check_database: bool = False,
    check_device: bool = False,
    weights: str | None = None,
    **overrides: object,
) -> Checked:
    """Check a command's inputs in the fixed order; raise the first problem as one line.

    Args:
        parameters: a stage's parameters: the settings flags they give (store, encoder,
            device, database …) apply as if passed one by one.
        store: ``--store`` (``None``: the environment's, else the local store).
        images: a source folder or S3 prefix that must exist (never created).
        metadata: a metadata file that must parse (``load_metadata`` names what is wrong).
        database: ``--database``; with ``check_database`` an S3 store without one is refused.
        check_device: resolve the device (``cuda`` without a GPU fails here).
        weights: build the settings' encoder with these weights (a wrong name or .pth fails
            here rather than in the flow's first task).
        overrides: further settings flags (encoder, device, batch_size, follow_symlinks…);
            ``None`` means "not given".
    """
    from tiefvision_core.run import settings_for, store_for
    from tiefvision_core.storage.urls import open_store

    flags = {"store_url": store, "database_url": database, **overrides}
    if parameters is not None:
        flags.update(parameters.settings_flags())
    settings = settings_for(**flags)
    if check_database:
        from tiefvision_core.annotations.database import database_url_for

        database_url_for(settings)  # an S3 store needs a database URL: say so now
    if images is not None:
        open_store(images, settings, create=False)
    target = store_for(settings)  # the flow's tasks find this one again
    if metadata is not None:
        from tiefvision_core.catalog.ingest import load_metadata

        load_metadata(metadata)  # raises InputError naming what is wrong with the file
    device = None
    if check_device:
        from tiefvision_core.encoding.runtime import resolve_device

        device = resolve_device(settings.device)
    encoder = None
    if weights is not None:
        from tiefvision_core.encoders import get_encoder

        encoder = get_encoder(settings.encoder, weights)
    return Checked(settings, target, device, encoder)
