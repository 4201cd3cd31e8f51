"""Misbehaving peers on loopback for the service tests: a trickling HTTP server and raw-socket clients.

Every loop here is bounded in count and in time, so a service that hangs fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import uuid


class TricklingServer:
    """An HTTP server that answers every GET with ``body``, sending ``chunk_bytes`` every ``interval_s``.

    ``trickle_headers`` sends the status line and headers slowly too; otherwise they go at once and only the
    body trickles. A connection is dropped after ``limit_s`` or when the server stops.
    """

    def __init__(self, body: bytes = b"x" * 10_000, *, trickle_headers: bool = False, chunk_bytes: int = 1,
                 interval_s: float = 0.5, limit_s: float = 30.0) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        self.response, self.fast_prefix = head + body, 0 if trickle_headers else len(head)
        self.chunk_bytes, self.interval_s, self.limit_s = chunk_bytes, interval_s, limit_s
        self.stopping = threading.Event()
        self.connections = 0
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner.connections += 1
                owner._answer(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def _answer(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        request = b""
        deadline = time.monotonic() + self.limit_s
        try:
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = sock.recv(4096)
                if not data:
                    return
                request += data
            sock.sendall(self.response[: self.fast_prefix])
            for start in range(self.fast_prefix, len(self.response), self.chunk_bytes):
                if self.stopping.wait(self.interval_s) or time.monotonic() > deadline:
                    return
                sock.sendall(self.response[start: start + self.chunk_bytes])
        except OSError:  # the client gave up, as it should
            return

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def multipart(filename: str, content: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its content type."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def raw_request(port: int, head: str, body_chunks, timeout_s: float = 30.0) -> tuple[int, dict, bytes]:
    """Send a request over a plain socket (chunks as given), then read the whole answer until the server closes.

    Returns (status, headers, body); raises the socket error a client would see (a reset, say).
    """
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            sock.sendall(chunk)
        answer = b""
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
            if _complete(answer):
                break
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").lower().split("\r\n"):
        if separator and line.startswith("content-length:"):
            return len(body) >= int(line.split(":", 1)[1])
    return False


def chunked_upload(port: int, path: str, filename: str, content: bytes, chunk_bytes: int = 65536,
                   headers: str = "") -> tuple[int, dict, bytes]:
    """POST a multipart upload with ``Transfer-Encoding: chunked`` (no Content-Length), as streaming clients do."""
    body, content_type = multipart(filename, content)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: {content_type}\r\n{headers}Connection: close\r\n\r\n")
    pieces = [body[i: i + chunk_bytes] for i in range(0, len(body), chunk_bytes)]
    chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
    return raw_request(port, head, chunks)


def json_body(body: bytes) -> dict:
    return json.loads(body.decode())
