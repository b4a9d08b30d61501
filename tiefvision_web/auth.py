"""Who may write: a bearer token on the write endpoints (boxes, triplets, flow runs).

Why these rules: the editors change what the next model is trained on and the flow buttons
start GPU jobs, so a server reachable by others must not take writes from anyone. With
``TIEFVISION_API_TOKEN`` set, a write needs ``Authorization: Bearer <token>`` (compared in
constant time). Without one, a development server (the default, on loopback) accepts
writes, and a production one (``TIEFVISION_PRODUCTION=true``) refuses them all, so
forgetting the token fails closed.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status

__all__ = ["require_writer", "writes_need_token"]


def writes_need_token(request: Request) -> bool:
    settings = request.app.state.web.settings
    return settings.api_token is not None or settings.production


def require_writer(request: Request) -> None:
    """FastAPI dependency of every write endpoint (see the module docstring)."""
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
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this endpoint needs the API token: send the header Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "the API token is wrong: use the value of TIEFVISION_API_TOKEN on the server",
        )
