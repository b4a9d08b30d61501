"""The web application: ``create_app(settings)`` wires the API, the pages and the limits.

Why a factory: tests, the benchmark and ``tiefvision serve`` each build an app over their
own store and settings (token, production mode, upload cap), with nothing global.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tiefvision_core.config import Settings
from tiefvision_core.encoders import Encoder
from tiefvision_web import api, pages
from tiefvision_web.admission import AdmissionLimit
from tiefvision_web.auth import allowed_origins
from tiefvision_web.errors import install_error_handlers
from tiefvision_web.security_headers import SecurityHeaders
from tiefvision_web.state import WebState
from tiefvision_web.uploads import BodySizeLimit

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(
    settings: Settings, *, reload_interval: float = 1.0, encoder: Encoder | None = None
) -> FastAPI:
    """The TiefVision web service over ``settings.store_url``.

    ``reload_interval``: how often (seconds, at most) the ``CURRENT`` pointers of the
    catalog and the indexes are read to pick up a new version. ``encoder``: an encoder
    already built in this process (default: built from ``settings.encoder`` on the first
    upload; building one takes seconds).
    """
    state = WebState(settings, reload_interval=reload_interval, encoder=encoder)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="TiefVision",
        summary="Visual search over a product catalog: search, images, annotations, flows.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.web = state

    install_error_handlers(app)

    # Innermost: its 503s still carry the CORS and security headers added outside it.
    app.add_middleware(AdmissionLimit, admission=state.admission, routes={("POST", "/api/search")})
    origins = allowed_origins(settings)
    if origins:  # off by default: the pages are same-origin
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, 413s included

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
