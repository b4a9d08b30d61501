"""``serve``: the web service (search API and pages) under uvicorn."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from tiefvision_cli.commands import console, err_console
from tiefvision_cli.options import DatabaseOption, StoreOption

__all__ = ["serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    store: StoreOption = None,
    database: DatabaseOption = None,
) -> None:
    """Run the web service: the search API and the pages.

    The API's OpenAPI document is at /docs; the pages are the gallery, search by photo,
    the box and triplet editors, and the status page.
    """
    # The service's parallelism is its requests (a thread each). A multi-threaded OpenBLAS
    # turns the tiny per-query products (e.g. 9×1280 @ 1280×64 for an ANN index) into
    # spin-waits: 70-140 ms instead of < 1 ms on a busy 2-core machine. Set before numpy loads,
    # which reads it at import (a default for a library, not a hand-off of our settings).
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    from tiefvision_core.config import load_settings
    from tiefvision_web import create_app
    from tiefvision_web.read_deadline import read_deadline_protocol

    settings = load_settings(store_url=store, database_url=database)
    web_app = create_app(settings)  # opens the store: a wrong URL fails here, in one line
    if settings.api_token is None and not settings.production and host not in _LOOPBACK:
        err_console.print(
            f"warning: listening on {escape(host)} without TIEFVISION_API_TOKEN: anyone who "
            "can reach it can edit annotations and start flows",
            highlight=False,
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"TiefVision web UI on http://{shown}:{port}/ (API docs: /docs)", markup=False)
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        log_level="info",
        http=read_deadline_protocol(settings.request_read_timeout),
    )
