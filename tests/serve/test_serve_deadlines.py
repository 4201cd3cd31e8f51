"""Clients that send their request slowly are closed with a 408; they cannot hold the service's slots."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from serve_helpers import Server, a_clip, upload

pytestmark = pytest.mark.slow  # a real server on loopback

HEADER_TIMEOUT_S = 2


def read_all(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


@pytest.fixture(scope="module")
def strict_server(video_model, tmp_path_factory):
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("strict"), "--header-timeout",
                     str(HEADER_TIMEOUT_S), "--max-upload-mb", "1", "--body-timeout", "1")
    yield running
    running.stop()


def test_a_connection_that_sends_nothing_gets_a_408_and_is_closed(strict_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        answer = read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT_S - 0.2 <= time.monotonic() - started <= HEADER_TIMEOUT_S + 1.5


def test_headers_trickled_a_byte_at_a_time_get_a_408(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        try:
            for byte in b"POST /predict HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n":
                sock.send(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed while we were still sending: what the deadline is for
        assert read_all(sock, 5).startswith(b"HTTP/1.1 408 ")


def test_a_body_slower_than_the_minimum_rate_gets_a_408(strict_server):
    """--max-upload-mb 1 in --body-timeout 1: at least 1 MiB/s after the headers' grace of 2 s."""
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 900000\r\n\r\n--x\r\n")
        started = time.monotonic()
        answer = read_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started <= HEADER_TIMEOUT_S + 3


def test_requests_sent_in_time_keep_working_on_a_kept_alive_connection(strict_server):
    with httpx.Client() as client:
        for _ in range(2):
            assert client.get(strict_server.url + "/health").status_code == 200
            time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle between requests is the keep-alive timeout's business


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
        started = time.monotonic()
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
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
