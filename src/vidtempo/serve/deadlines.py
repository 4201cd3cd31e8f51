"""Deadlines for clients that send their request slowly, under uvicorn's HTTP/1.1 protocol.

uvicorn gives a client unlimited time to send its request line, headers and body, so a few hundred clients
trickling a byte at a time hold every connection slot. This protocol (uvicorn's own, subclassed) closes:

- a request whose line and headers are not complete ``header_timeout_s`` after its first byte (for a new
  connection: after it opened), answering 408 (Request Timeout);
- a request whose body arrives slower than ``min_body_rate`` bytes/s once ``header_timeout_s`` of grace has
  passed since its headers (the default rate: the upload limit within the body timeout), answering 408 when
  no response has started.

An idle keep-alive connection between requests is closed by uvicorn's own keep-alive timeout. On a kept-alive
connection each request is held to these deadlines on its own: the header deadline starts at its first byte,
and its body's rate counts only its own bytes, so a fast upload earlier on the connection buys a slow one no
time.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: 24\r\nconnection: close\r\n\r\nrequest sent too slowly\n")
# How often a body's arrival rate is checked.
BODY_CHECK_INTERVAL_S = 1.0


def deadline_protocol(header_timeout_s: float, min_body_rate: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with these deadlines (pass it as ``uvicorn.run(..., http=...)``)."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout_s": header_timeout_s, "min_body_rate": min_body_rate})


class DeadlineH11Protocol(H11Protocol):
    header_timeout_s = 10.0
    min_body_rate = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer = None
        self._body_timer = None
        self._body_started = 0.0
        self._body_bytes = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        receiving_body = self.conn.their_state is h11.SEND_BODY
        if not receiving_body and self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        self._follow_request()
        # Counted after h11 has read the bytes, so that a body's start arriving with its headers counts too
        # (with the few hundred bytes of headers: a rounding error against the rate).
        if receiving_body or self._body_timer is not None:
            self._body_bytes += len(data)

    def _follow_request(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._body_timer is None:
            self._cancel_header_deadline()
            self._body_started = self.loop.time()
            self._body_bytes = 0  # this body's own bytes, not those of earlier requests on the connection
            self._body_timer = self.loop.call_later(BODY_CHECK_INTERVAL_S, self._check_body_rate)
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the request is whole (or the connection is ending)

    def _arm_header_deadline(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm(self) -> None:
        self._cancel_header_deadline()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse()

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        elapsed = self.loop.time() - self._body_started
        if self._body_bytes < self.min_body_rate * (elapsed - self.header_timeout_s):
            self._refuse()
            return
        self._body_timer = self.loop.call_later(BODY_CHECK_INTERVAL_S, self._check_body_rate)

    def _refuse(self) -> None:
        """A 408 where no response to this request has started, then close.

        Asked of h11's state, not of ``self.cycle``: on a kept-alive connection whose next request is late,
        the cycle is still the previous request's, with its response long sent."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(REQUEST_TIMEOUT)
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.transport.close()
