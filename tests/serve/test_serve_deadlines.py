"""Clients that send their request slowly are closed with a 408; they cannot hold the service's slots.

Most tests speak HTTP/1.1 over one raw socket: a client library would reconnect by itself when the server
closes a connection, and hide a connection closed that should have been kept.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import pytest

from serve_helpers import Server, a_clip, upload

pytestmark = pytest.mark.slow  # a real server on loopback

HEADER_TIMEOUT_S = 2
# --max-upload-mb 1 in --body-timeout 4: a body must arrive at 256 KiB/s or faster, after a grace of
# HEADER_TIMEOUT_S from its headers (t s after them, 256 KiB * (t - grace) must have come); checked every second.
BODY_TIMEOUT_S = 4
MIN_BODY_RATE = (1 << 20) / BODY_TIMEOUT_S
# uvicorn's own keep-alive timeout (uvicorn.Config's timeout_keep_alive), which the service leaves at its default.
KEEP_ALIVE_S = 5
BOUNDARY = "deadline-test-boundary"


def read_all(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes, and whether it closed (False: ``timeout_s`` passed)."""
    sock.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionResetError:
        pass
    return b"".join(chunks), True


def read_response(sock: socket.socket, timeout_s: float = 30) -> bytes:
    """Exactly one response (head and its Content-Length of body), leaving the connection open."""
    sock.settimeout(timeout_s)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            return answer  # closed: whatever came, perhaps nothing
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    assert len(body) == length, "the server sent more than one response's worth: " + repr(body[length:][:100])
    return head + b"\r\n\r\n" + body


def form(*parts: tuple[str, str, bytes]) -> bytes:
    """A multipart/form-data body of (field, filename, content) file parts, with BOUNDARY."""
    body = b""
    for field, filename, content in parts:
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def post_head(length: int, path: str = "/predict") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def send_paced(sock: socket.socket, data: bytes, bytes_per_s: float, chunk_bytes: int = 8192) -> int:
    """Send ``data`` in chunks at ``bytes_per_s`` on an absolute schedule (a late chunk does not delay the next);
    stop as soon as the server answers or closes. Returns the bytes sent."""
    started, sent = time.monotonic(), 0
    while sent < len(data):
        wait = started + sent / bytes_per_s - time.monotonic()
        if select.select([sock], [], [], max(wait, 0))[0]:
            break  # an answer, or the close
        try:
            sent += sock.send(data[sent : sent + chunk_bytes])
        except OSError:
            break  # closed while we were still sending
    return sent


@pytest.fixture(scope="module")
def strict_server(video_model, tmp_path_factory):
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("strict"), "--header-timeout",
                     str(HEADER_TIMEOUT_S), "--max-upload-mb", "1", "--body-timeout", str(BODY_TIMEOUT_S))
    yield running
    running.stop()


def test_a_connection_that_sends_nothing_gets_a_408_and_is_closed(strict_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        answer, closed = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed
    # Not before its time (the deadline runs from the connection's start, which the server sees after us).
    assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.2


def test_headers_trickled_a_byte_at_a_time_get_a_408(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        try:
            for byte in b"POST /predict HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n":
                sock.send(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed while we were still sending: what the deadline is for
        answer, closed = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed


def test_a_body_that_stops_gets_a_408(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(post_head(900_000) + f"--{BOUNDARY}\r\n".encode())
        answer, closed = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer[:200]


def test_a_body_that_keeps_flowing_below_the_minimum_rate_gets_a_408(strict_server):
    """Bytes arrive all the time, at a quarter of the minimum rate: a plain idle timeout would never fire."""
    body = form(("file", "clip.mp4", b"\0" * 900_000))
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(post_head(len(body)))
        sent = send_paced(sock, body, MIN_BODY_RATE / 4)
        answer, closed = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer[:200]
    assert sent < len(body) / 2, "cut off while its bytes were still flowing"


def test_a_body_at_the_minimum_rate_is_classified(strict_server, video_model):
    """A clip and padding, 950 KB sent evenly at the minimum rate (about 3.6 s): still arriving at the checks
    after the grace, where what has come must count as enough (the rule asks for the minimum rate's bytes
    from the end of the grace, and the grace's own bytes count)."""
    clip = a_clip(video_model).read_bytes()
    body = form(("file", "clip.mp4", clip), ("padding", "padding.bin", b"\0" * (950_000 - len(clip))))
    assert len(body) < 1 << 20, "within the 1 MB upload limit"
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(post_head(len(body)))
        started = time.monotonic()
        assert send_paced(sock, body, MIN_BODY_RATE) == len(body)
        sending_s = time.monotonic() - started
        answer = read_response(sock, 120)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"predicted_class"' in answer
    assert sending_s > HEADER_TIMEOUT_S + 1, "the body was still arriving at a check after the grace"


def test_an_idle_kept_alive_connection_is_not_refused_between_requests(strict_server):
    """Idle longer than the header deadline, shorter than the keep-alive timeout: the idle time is the
    keep-alive timeout's business, and both requests are answered on the one connection."""
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(request)
        first = read_response(sock)
        time.sleep((HEADER_TIMEOUT_S + KEEP_ALIVE_S) / 2)
        sock.sendall(request)
        second = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 "), (first[:100], second[:100])


def test_headers_that_stall_on_a_kept_alive_connection_get_a_408(strict_server):
    """uvicorn stops its keep-alive timer at the next request's first byte; from there the header deadline
    must hold, or a client could hold the connection by sending half a request line."""
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /hea")
        started = time.monotonic()
        answer, closed = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer[:200]
    assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.2


def test_a_stalled_body_after_fast_ones_on_a_kept_alive_connection_gets_its_408_as_soon(strict_server):
    """Each body is held to the rate on its own: 2.9 MB sent fast by earlier requests on the connection must
    not buy a later body time. A new body that stops is refused at the check that ends the grace (about 2 s);
    with the earlier bytes credited it would be refused only once 256 KiB/s past the grace had caught up with
    them (about 13 s). The bound lies between the two, far from both."""
    padding = form(("padding", "padding.bin", b"\0" * 950_000))  # no file: a fast 422, the connection kept
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        for _ in range(3):
            sock.sendall(post_head(len(padding)) + padding)
            assert read_response(sock).startswith(b"HTTP/1.1 422 ")
        sock.sendall(post_head(900_000) + f"--{BOUNDARY}\r\n".encode())
        started = time.monotonic()
        answer, closed = read_all(sock, 25)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer[:200]
    assert elapsed < HEADER_TIMEOUT_S + 5, f"refused after {elapsed:.1f} s"


def trickle(port: int, sockets: list, stop: threading.Event, count: int) -> None:
    """``count`` connections sending a request's headers at one byte every 2 s."""
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sockets.append(sock)
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 200
    position = 0
    while not stop.is_set() and position < len(request):
        for sock in sockets:
            try:
                sock.send(request[position : position + 1])
            except OSError:
                pass
        position += 1
        stop.wait(2.0)


def test_two_hundred_trickling_clients_leave_health_and_uploads_working(video_model, tmp_path):
    server = Server(video_model.checkpoints, tmp_path, "--header-timeout", "60")
    sockets: list[socket.socket] = []
    stop = threading.Event()
    worker = threading.Thread(target=trickle, args=(server.port, sockets, stop, 200), daemon=True)
    try:
        worker.start()
        while len(sockets) < 200:
            time.sleep(0.05)
        time.sleep(3)  # every trickling client has sent something
        # Answered at all, within the client's timeout: trickling clients that held the service would show as
        # a 503 (no connection slot) or as no answer.
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        response = upload(server, a_clip(video_model))
        assert response.status_code == 200 and response.json()["predicted_class"]
    finally:
        stop.set()
        worker.join(timeout=10)
        for sock in sockets:
            sock.close()
        server.stop()


def test_max_connections_still_holds_with_trickling_clients(video_model, tmp_path):
    server = Server(video_model.checkpoints, tmp_path, "--header-timeout", "60", "--max-connections", "4")
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for sock in sockets:
            sock.send(b"GET /heal")
        time.sleep(0.5)
        assert httpx.get(server.url + "/health", timeout=5).status_code == 503
    finally:
        for sock in sockets:
            sock.close()
        server.stop()
