"""Every error answer of the web service: JSON with a ``detail`` that says what to do, never
a traceback, never an internal address, never a copy of a huge or unencodable input.

Why one module: errors come from four places — FastAPI's request validation, our own
``HTTPException``s, the core library's :class:`TiefVisionError`s and bugs — and each had its
own way to go wrong. FastAPI's stock validation answer echoes the offending input, so a body
with ``NaN`` (which Python's JSON parser accepts) made the answer itself unencodable: a
plain-text 500 and a dropped connection; a 5,000-character filter came back in full. Storage
errors name the S3 endpoint, which is the operator's business, not the browser's: the web
answer is a generic sentence and the log keeps the details.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException

from tiefvision_core.errors import (
    ConfigError,
    ImageRejected,
    IncompatibleModel,
    InputError,
    StorageError,
    StorageNotFound,
    TiefVisionError,
)
from tiefvision_web.uploads import rejected_as_http

__all__ = [
    "ECHO_LIMIT",
    "STORAGE_UNAVAILABLE",
    "install_error_handlers",
    "public_detail",
    "shown",
]

log = logging.getLogger(__name__)

#: The most characters of a user's input an error message repeats.
ECHO_LIMIT = 80
#: The most characters of one error message (a safety net for messages from the core).
_MESSAGE_LIMIT = 600
#: The most validation problems listed in one answer.
_ERRORS_LIMIT = 10
#: A run of non-blank characters this long is input being echoed (no sentence of ours has a
#: word of 80 characters), so it is shortened wherever it appears.
_LONG_WORD = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")

STORAGE_UNAVAILABLE = (
    "the storage cannot be reached right now: try again in a minute "
    "(the service log names the storage and the error)"
)
_STORAGE_MISSING = (
    "an object this request needs is missing from the storage: run the stage that "
    "writes it again (the service log names the object)"
)


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a user's input for a message, at most ``limit`` characters + ``…``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def public_detail(message: str) -> str:
    """A message fit to send: every echoed run of input shortened, the whole capped."""
    message = _LONG_WORD.sub(lambda m: m.group(0)[:ECHO_LIMIT] + "…", message)
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "…"


def _safe_input(value: Any) -> Any:
    """The input part of a validation problem in a form JSON can carry: a short number, a
    short string, or ``repr`` capped (``NaN``, ``inf``, lists, objects, huge strings)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and abs(value) < 10**15:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        return value if len(value) <= ECHO_LIMIT else value[:ECHO_LIMIT] + "…"
    return shown(value)


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """One validation problem: where, what, and the input (shortened)."""
    loc = [part if isinstance(part, int) else shown(part)[1:-1] for part in error.get("loc", ())]
    message = str(error.get("msg", "invalid value"))
    given = error.get("input")
    if error.get("type") == "finite_number" or (
        isinstance(given, float) and not math.isfinite(given)
    ):
        message += " (NaN, Infinity and numbers too large for a float such as 1e400 are refused)"
    elif error.get("type") == "json_invalid" and (error.get("ctx") or {}).get("error"):
        message += f": {error['ctx']['error']}"  # where the JSON breaks, from the parser
    problem: dict[str, Any] = {
        "loc": loc,
        "msg": public_detail(message),
        "type": str(error.get("type", "")),
    }
    if "input" in error:
        problem["input"] = _safe_input(error["input"])
    return problem


def _validation_answer(error: RequestValidationError) -> JSONResponse:
    problems = [_problem(e) for e in error.errors()]
    shown_problems = problems[:_ERRORS_LIMIT]
    if len(problems) > _ERRORS_LIMIT:
        shown_problems.append(
            {"loc": [], "msg": f"… and {len(problems) - _ERRORS_LIMIT} more", "type": "more"}
        )
    return JSONResponse({"detail": shown_problems}, status_code=422)


def _status_of(error: TiefVisionError) -> int:
    if isinstance(error, StorageNotFound):
        return 404
    if isinstance(error, IncompatibleModel):
        return 409
    if isinstance(error, InputError):
        return 422
    if isinstance(error, StorageError | ConfigError):
        return 503
    return 400


def _tiefvision_answer(request: Request, error: TiefVisionError) -> JSONResponse:
    if isinstance(error, ImageRejected):
        http = rejected_as_http(error)
        return JSONResponse({"detail": public_detail(http.detail)}, status_code=http.status_code)
    code = _status_of(error)
    if isinstance(error, StorageError):
        # The message names the endpoint, bucket or path: for the operator's log only.
        log.warning("%s %s: storage: %s", request.method, request.url.path, error)
        detail = _STORAGE_MISSING if isinstance(error, StorageNotFound) else STORAGE_UNAVAILABLE
        return JSONResponse({"detail": detail}, status_code=code)
    return JSONResponse({"detail": public_detail(str(error))}, status_code=code)


def _http_answer(error: StarletteHTTPException) -> Response:
    """FastAPI's own answer to an ``HTTPException``, with its message made fit to send."""
    headers = getattr(error, "headers", None)
    if not is_body_allowed_for_status_code(error.status_code):
        return Response(status_code=error.status_code, headers=headers)
    detail = error.detail
    if isinstance(detail, str):
        detail = public_detail(detail)
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app`` (a bug still answers JSON, and is logged)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_answer(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> Response:
        return _http_answer(error)

    @app.exception_handler(TiefVisionError)
    async def _tiefvision(request: Request, error: TiefVisionError) -> JSONResponse:
        return _tiefvision_answer(request, error)

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client sees no part of it.
        return JSONResponse(
            {"detail": "internal error: the service log has the details"}, status_code=500
        )
