"""Security headers on every response, as plain ASGI middleware.

Why not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs the rest of
the app in a task of its own and streams the response back through a memory channel; on
the search-by-id path that was ~7 % of the server's time under load (bench/api.py,
py-spy). Adding headers needs none of that: they are set on the ``http.response.start``
message as it passes.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "SECURITY_HEADERS", "SecurityHeaders"]

#: Sent with every response: no MIME sniffing by the browser, no framing by other sites,
#: no referrer leaking ids to other origins.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
#: Scripts, styles and images from this origin only (the pages inline nothing).
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'"
)
#: The OpenAPI pages load Swagger UI / ReDoc assets that a strict CSP would block.
_NO_CSP_PREFIXES = ("/docs", "/redoc", "/openapi")


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response the app sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with_csp = not scope["path"].startswith(_NO_CSP_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if with_csp:
                    headers.setdefault("Content-Security-Policy", CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)
