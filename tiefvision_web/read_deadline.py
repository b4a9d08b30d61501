"""A deadline for reading each request: a client that sends slowly is answered 408 and cut
off after ``TIEFVISION_REQUEST_READ_TIMEOUT`` seconds.

Why in uvicorn's HTTP protocol and not in an ASGI middleware: uvicorn bounds only the idle
time between requests (``timeout_keep_alive``). A client that opens connections and sends
its headers, or its body, a byte at a time (slowloris) holds each connection — a socket, a
parser, for a body an app task — for as long as it likes, and the app sees nothing of a
request before its headers are complete. So the clock runs where the bytes arrive: from a
connection's opening, or a request's first byte, until the request's last byte. Answering
takes as long as it takes; only reading is bounded.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ReadDeadlineProtocol", "read_deadline_protocol"]

_TIMEOUT_BODY = b"the request did not arrive in time: send it again\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline (``read_timeout`` seconds)."""

    read_timeout: float = 60.0
    _deadline: asyncio.TimerHandle | None = None
    _headers_pending = False  # a request has begun and its headers are not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's bytes are due too, not only its last ones

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_pending = True
        self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_pending = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        """408 when part of a request came and nobody answered it yet; close either way,
        and tell the app still waiting for the body that the client is gone."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = None if self._headers_pending else self.cycle
        if self._headers_pending or (cycle is not None and not cycle.response_started):
            self.transport.write(_TIMEOUT_RESPONSE)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def read_deadline_protocol(read_timeout: float) -> type[ReadDeadlineProtocol]:
    """The protocol class to give ``uvicorn.run(..., http=...)`` for this deadline."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout": read_timeout})
