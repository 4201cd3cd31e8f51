"""Download a video from a URL for the HTTP service, safely.

Only http and https; every address a host name resolves to must be public unless private addresses are
allowed (so a request cannot reach the server's own network); the connection goes to the address that was
checked, not to a second lookup; redirects are followed by hand and checked the same way; size and time
are limited.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3
CHUNK_BYTES = 1 << 16


class FetchError(Exception):
    """A URL that cannot or may not be fetched. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_address(address: str, allow_private: bool) -> None:
    ip = ipaddress.ip_address(address.split("%")[0])
    if allow_private:
        return
    if not ip.is_global or ip.is_multicast:
        raise FetchError(f"refused: {address} is a private, loopback, link-local or reserved address", 403)


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The first address of ``host``, after checking that every address it has may be reached."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc.strerror})", 400) from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        check_address(address, allow_private)
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def download(url: str, destination: Path, max_bytes: int, timeout_s: float, allow_private: bool = False) -> Path:
    """Fetch ``url`` into ``destination``; raises FetchError with a status for the client."""
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs are accepted, got {parts.scheme or 'none'!r}", 400)
        if not parts.hostname:
            raise FetchError(f"not a URL with a host: {url!r}", 400)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve(parts.hostname, port, allow_private)
        cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = cls(parts.hostname, address, port, timeout=max(deadline - time.monotonic(), 0.1))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": "vidtempo", "Accept": "*/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchError(f"the URL answered HTTP {response.status}", 502)
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"the video is larger than the {max_bytes // (1 << 20)} MB limit", 413)
            _copy_limited(response, destination, max_bytes, deadline)
            return destination
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, (socket.timeout, TimeoutError)):
                raise FetchError(f"the download took longer than {timeout_s:.0f} s", 504) from None
            raise FetchError(f"cannot fetch the URL ({exc})", 502) from None
        finally:
            connection.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects", 502)


def _copy_limited(response: http.client.HTTPResponse, destination: Path, max_bytes: int, deadline: float) -> None:
    received = 0
    with open(destination, "wb") as out:
        while chunk := response.read(CHUNK_BYTES):
            received += len(chunk)
            if received > max_bytes:
                raise FetchError(f"the video is larger than the {max_bytes // (1 << 20)} MB limit", 413)
            if time.monotonic() > deadline:
                raise FetchError("the download took too long", 504)
            out.write(chunk)
    if received == 0:
        raise FetchError("the URL returned an empty body", 422)
