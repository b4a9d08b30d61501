"""Who may write, and from where: a bearer token and a same-origin JSON body on the write
endpoints (boxes, triplets, flow runs); what only the token's holders may read.

Why these rules: the editors change what the next model is trained on and the flow buttons
start GPU jobs, so a server reachable by others must not take writes from anyone. With
``TIEFVISION_API_TOKEN`` set, a write needs ``Authorization: Bearer <token>`` (compared in
constant time). Without one, a development server (the default, on loopback) accepts
writes, and a production one (``TIEFVISION_PRODUCTION=true``) refuses them all, so
forgetting the token fails closed.

Why the origin and the content type as well: without a token, any web page the developer
opens could make the browser send a write to the loopback server — a form or a "simple"
``fetch`` with ``Content-Type: text/plain`` needs no CORS preflight. So a write whose
``Origin`` is neither this server's own host nor one of ``TIEFVISION_CORS_ORIGINS`` is
refused (403), and so is a write whose body is not declared JSON (415): a browser sends a
cross-origin ``application/json`` body only after a preflight this server does not grant.
Requests without ``Origin`` (curl, scripts) are not browsers' cross-origin ones and pass.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status

from tiefvision_core.config import Settings

__all__ = [
    "allowed_origins",
    "holds_token",
    "require_json_body",
    "require_same_origin",
    "require_writer",
    "writes_need_token",
]

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def allowed_origins(settings: Settings) -> list[str]:
    """The origins of ``TIEFVISION_CORS_ORIGINS`` (empty: only this server's own)."""
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def writes_need_token(request: Request) -> bool:
    settings = request.app.state.web.settings
    return settings.api_token is not None or settings.production


def _bearer(request: Request) -> str | None:
    """The token the request presents, if any."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def holds_token(request: Request) -> bool:
    """Whether the request presents the configured token (never, when none is set)."""
    token = request.app.state.web.settings.api_token
    given = _bearer(request)
    if token is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


def _same_host(origin: str, request: Request) -> bool:
    """Whether ``origin`` names the host the request was sent to (``Host``, or the
    ``X-Forwarded-Host`` a reverse proxy sets, which a cross-origin page cannot send
    without a preflight)."""
    parts = urlsplit(origin)
    default = _DEFAULT_PORTS.get(parts.scheme, "")
    hosts = [request.headers.get("host", "")]
    hosts += request.headers.get("x-forwarded-host", "").split(",")
    wanted = parts.netloc.lower().removesuffix(default)
    return bool(wanted) and any(h.strip().lower().removesuffix(default) == wanted for h in hosts)


def require_same_origin(request: Request) -> None:
    """403 for a browser's write from a page of another origin (see the module docstring)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    settings = request.app.state.web.settings
    if origin.rstrip("/") in allowed_origins(settings) or _same_host(origin, request):
        return
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"writes from pages of another origin ({origin[:80]}) are refused: use the pages "
        "this server serves, or list that origin in TIEFVISION_CORS_ORIGINS",
    )


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def require_json_body(request: Request) -> None:
    """415 for a write whose body is not declared JSON (an empty body needs no type)."""
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if has_body and not _is_json(headers.get("content-type", "")):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with the header Content-Type: application/json",
        )


def require_writer(request: Request) -> None:
    """FastAPI dependency of every write endpoint (see the module docstring)."""
    require_same_origin(request)
    require_json_body(request)
    settings = request.app.state.web.settings
    token = settings.api_token
    if token is None:
        if settings.production:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "writes are disabled: this server runs in production mode without an API "
                "token; set TIEFVISION_API_TOKEN and restart it",
            )
        return
    if _bearer(request) is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this endpoint needs the API token: send the header Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not holds_token(request):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "the API token is wrong: use the value of TIEFVISION_API_TOKEN on the server",
        )
