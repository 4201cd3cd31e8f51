"""Download a video from a URL for the HTTP service, safely.

Only http and https on the standard ports; every address a host name resolves to must be public, in every
IPv6 form that can carry an IPv4 address too, unless private addresses are allowed (so a request cannot
reach the server's own network); the connection goes to the address that was checked, not to a second
lookup; redirects are followed by hand and checked the same way.

One deadline covers the whole fetch: name resolution, connecting, the TLS handshake, the headers and the
body. A socket timeout alone would bound each read, so a server sending one byte at a time could keep a
download alive indefinitely; here every socket operation gets only the time left before the deadline.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import math
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3
CHUNK_BYTES = 1 << 16
STANDARD_PORTS = (80, 443)
DEFAULT_PORTS = {"http": 80, "https": 443}
# Addresses of the form 64:ff9b::a.b.c.d (NAT64, RFC 6052) reach the IPv4 address a.b.c.d.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
# Local-use NAT64 prefix (RFC 8215): translated inside the operator's own network, never public.
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
# Deprecated IPv4-compatible addresses, ::a.b.c.d.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Name resolution has no timeout of its own; it runs here so that a fetch can stop waiting for it.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="vidtempo-resolve")


class FetchError(Exception):
    """A URL that cannot or may not be fetched. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str


def check_url(url: str, allow_private: bool) -> Target:
    """The URL's parts, or FetchError (400 malformed, 403 refused) before anything touches the network.

    A host given as an address is checked here; a host name is checked once it resolves (``resolve``)."""
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise FetchError("not a URL: it is empty or holds spaces or control characters", 400)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise FetchError(f"not a valid URL ({exc})", 400) from None
    if parts.scheme not in DEFAULT_PORTS:
        raise FetchError(f"only http and https URLs are accepted, got {parts.scheme or 'none'!r}", 400)
    if not host:
        raise FetchError("not a URL with a host", 400)
    try:
        host.encode("idna")
    except UnicodeError:
        raise FetchError(f"not a valid host name: {host[:80]!r}", 400) from None
    if port == 0:
        raise FetchError("port 0 is not a port to fetch from", 400)
    port = port or DEFAULT_PORTS[parts.scheme]
    if port not in STANDARD_PORTS and not allow_private:
        raise FetchError(f"refused: port {port}; only ports 80 and 443 may be fetched", 403)
    if _is_ip_literal(host):
        check_address(host, allow_private)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def check_address(address: str, allow_private: bool) -> None:
    """Refuse (403) an address that is not public, including IPv6 forms that embed a private IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        raise FetchError(f"not an IP address: {address!r}", 400) from None
    if allow_private:
        return
    if not all(_is_public(form) for form in _address_forms(ip)):
        raise FetchError(f"refused: {address} is a private, loopback, link-local or reserved address", 403)


def _address_forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list:
    """The address itself and any IPv4 address it carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    if ip.version == 4:
        return [ip]
    forms = [ip]
    if ip.ipv4_mapped:
        forms.append(ip.ipv4_mapped)
    if ip.sixtofour:
        forms.append(ip.sixtofour)
    if ip in NAT64_WELL_KNOWN or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return forms


def _is_public(ip) -> bool:
    return ip.is_global and not ip.is_multicast and ip not in NAT64_LOCAL_USE


def resolve(host: str, port: int, allow_private: bool, deadline: float = math.inf) -> tuple:
    """(family, socket address) of ``host``'s first address, after checking every address it has."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(deadline - time.monotonic(), 0) if deadline < math.inf else None)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"resolving {host}") from None
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc.strerror})", 400) from None
    except UnicodeError:
        raise FetchError(f"not a valid host name: {host[:80]!r}", 400) from None
    for info in infos:
        check_address(info[4][0], allow_private)
    return infos[0][0], infos[0][4]


class _DeadlineMixin:
    """Each connect, read and write may take only the time left before ``deadline`` (time.monotonic)."""

    deadline = math.inf

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the fetch's deadline passed")
        self.settimeout(left)

    def connect(self, *args):
        self._arm()
        return super().connect(*args)

    def recv_into(self, *args, **kwargs):
        self._arm()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self._arm()
        return super().recv(*args, **kwargs)

    def send(self, *args, **kwargs):
        self._arm()
        return super().send(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self._arm()
        return super().sendall(*args, **kwargs)


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to the address that was checked (not a second lookup), holding every operation to the deadline."""

    def __init__(self, target: Target, family: int, address: tuple, deadline: float) -> None:
        super().__init__(target.host, target.port)
        self._target, self._family, self._address, self._deadline = target, family, address, deadline

    def connect(self) -> None:
        sock = _DeadlineSocket(self._family, socket.SOCK_STREAM)
        sock.deadline = self._deadline
        try:
            sock.connect(self._address)
            self.sock = self._wrap_tls(sock) if self._target.scheme == "https" else sock
        except BaseException:
            sock.close()
            raise

    def _wrap_tls(self, sock: socket.socket) -> ssl.SSLSocket:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        tls = context.wrap_socket(sock, server_hostname=self._target.host, do_handshake_on_connect=False)
        tls.deadline = self._deadline
        tls._arm()  # the handshake as a whole is held to the socket's timeout
        tls.do_handshake()
        return tls


def download(url: str, destination: Path, max_bytes: int, timeout_s: float, allow_private: bool = False,
             started_at: float | None = None) -> Path:
    """Fetch ``url`` into ``destination`` within ``timeout_s`` of ``started_at`` (time.monotonic(), default now).

    Raises FetchError with the status to answer the client with; leaves no partial file behind.
    """
    deadline = (time.monotonic() if started_at is None else started_at) + timeout_s
    try:
        for _ in range(MAX_REDIRECTS + 1):
            location = _fetch_once(check_url(url, allow_private), destination, max_bytes, deadline, allow_private)
            if location is None:
                return destination
            url = urljoin(url, location)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", 502)
    except TimeoutError:
        destination.unlink(missing_ok=True)
        raise FetchError(f"the URL did not finish downloading within {timeout_s:g} s", 504) from None
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def _fetch_once(target: Target, destination: Path, max_bytes: int, deadline: float,
                allow_private: bool) -> str | None:
    """Download one URL; returns the Location of a redirect, or None once the body is saved."""
    family, address = resolve(target.host, target.port, allow_private, deadline)
    connection = _PinnedConnection(target, family, address, deadline)
    try:
        connection.request("GET", target.path, headers={"User-Agent": "vidtempo", "Accept": "*/*"})
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            return response.getheader("Location")
        if response.status != 200:
            raise FetchError(f"the URL answered HTTP {response.status}", 502)
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise _too_large(max_bytes)
        _copy_limited(response, destination, max_bytes)
        return None
    except TimeoutError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"cannot fetch the URL ({type(exc).__name__}: {exc})", 502) from None
    finally:
        connection.close()


def _copy_limited(response: http.client.HTTPResponse, destination: Path, max_bytes: int) -> None:
    received = 0
    with open(destination, "wb") as out:
        while chunk := response.read(CHUNK_BYTES):
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            out.write(chunk)
    if received == 0:
        raise FetchError("the URL returned an empty body", 422)


def _too_large(max_bytes: int) -> FetchError:
    return FetchError(f"the video is larger than the {max_bytes / (1 << 20):g} MB limit", 413)
