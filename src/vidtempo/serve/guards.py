"""ASGI guards in front of the service: the API key, the request body limit, and early answers that arrive.

Each is a plain ASGI middleware so that it sees a request before FastAPI parses the body.
"""

from __future__ import annotations

import asyncio
import hmac
import json

# An answer sent before the body was read waits at most this long for the rest of the body to be discarded.
DRAIN_SECONDS = 10.0
# A request body may exceed the upload limit by this much: the multipart framing around the file.
MULTIPART_ALLOWANCE = 64 << 10


async def send_json(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return ""


def _declared_length(scope) -> int | None:
    length = _header(scope, b"content-length")
    return int(length) if length.isdigit() else None


class DrainBeforeEarlyAnswer:
    """Reads and discards what is left of a request body before an answer goes out.

    A server that answers and closes while the client is still sending makes that client see a connection
    reset instead of the answer (clients that send the whole body before reading it: Python's urllib and
    requests, many scripts). So before an early answer (401, 413, 422...) the rest of the body is read, up
    to ``max_bytes`` in all and for at most ``DRAIN_SECONDS``. A client that sent ``Expect: 100-continue``
    and was never asked to continue has sent no body, and gets its answer at once.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        chunked = "chunked" in _header(scope, b"transfer-encoding").lower()
        state = {"done": declared in (None, 0) and not chunked, "asked": False, "received": 0}

        async def tracking_receive():
            message = await receive()
            state["asked"] = True
            state["received"] += len(message.get("body", b""))
            state["done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def draining_send(message):
            if message["type"] == "http.response.start" and not state["done"]:
                waiting_to_continue = "100-continue" in _header(scope, b"expect").lower() and not state["asked"]
                if not waiting_to_continue and (declared or 0) <= self.max_bytes:
                    await self._drain(tracking_receive, state)
            await send(message)

        await self.app(scope, tracking_receive, draining_send)

    async def _drain(self, receive, state) -> None:
        async def discard() -> None:
            while not state["done"] and state["received"] <= self.max_bytes:
                await receive()

        try:
            await asyncio.wait_for(discard(), DRAIN_SECONDS)
        except asyncio.TimeoutError:
            pass


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answers 413 once a request body passes the limit: at once for a declared Content-Length, otherwise as
    the bytes arrive (a chunked body declares none), replacing whatever the app answers to the cut-off body."""

    def __init__(self, app, max_upload_bytes: int) -> None:
        self.app, self.max_upload_bytes = app, max_upload_bytes
        self.max_bytes = max_upload_bytes + MULTIPART_ALLOWANCE
        self.detail = f"upload larger than the {max_upload_bytes / (1 << 20):g} MB limit"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (_declared_length(scope) or 0) > self.max_bytes:
            return await send_json(send, 413, self.detail)
        state = {"received": 0, "exceeded": False, "answered": False}

        async def counting_receive():
            if state["exceeded"]:
                raise _BodyTooLarge
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_bytes:
                state["exceeded"] = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message):
            if not state["exceeded"]:
                state["answered"] = True
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["answered"]:
            await send_json(send, 413, self.detail)


class ApiKey:
    """Every path but ``open_paths`` needs the key, as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.

    A header rather than a cookie or a form field: a browser cannot add it to a cross-site form post.
    """

    def __init__(self, app, key: str, open_paths: frozenset[str]) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._has_key(scope):
            return await self.app(scope, receive, send)
        await send_json(send, 401, "a valid API key is required (header X-API-Key or Authorization: Bearer)",
                        {"WWW-Authenticate": "Bearer"})

    def _has_key(self, scope) -> bool:
        given = _header(scope, b"x-api-key")
        bearer = _header(scope, b"authorization")
        if not given and bearer[:7].lower() == "bearer ":
            given = bearer[7:].strip()
        return hmac.compare_digest(given.encode("latin-1"), self.key)
