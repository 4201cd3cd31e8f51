"""Fetching a URL for the service: one deadline for the whole fetch, malformed URLs refused, SSRF gaps closed."""

from __future__ import annotations

import time

import pytest

from loopback import TricklingServer
from vidtempo.serve.fetch import FetchError, check_address, check_url, download

MB = 1 << 20


@pytest.fixture
def trickling():
    servers = []

    def start(**options) -> TricklingServer:
        servers.append(TricklingServer(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def timed_download(url, destination, timeout_s):
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        download(url, destination, MB, timeout_s, allow_private=True)
    return caught.value, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline(trickling, tmp_path, trickle_headers):
    server = trickling(trickle_headers=trickle_headers, interval_s=0.2, limit_s=10)
    error, elapsed = timed_download(server.url + "/clip.mp4", tmp_path / "clip.mp4", timeout_s=1.5)
    assert error.status == 504 and "1.5 s" in str(error)
    assert elapsed < 3.5, f"the fetch ran {elapsed:.1f} s with a 1.5 s deadline"
    assert not (tmp_path / "clip.mp4").exists(), "a cut-off download leaves no partial file"


@pytest.mark.slow
def test_a_tls_handshake_that_never_finishes_is_cut_off_at_the_deadline(trickling, tmp_path):
    server = trickling(limit_s=10)  # speaks no TLS: it waits for an HTTP request that never comes
    error, elapsed = timed_download(server.url.replace("http:", "https:") + "/clip.mp4", tmp_path / "c.mp4", 1.5)
    assert error.status == 504 and elapsed < 3.5


@pytest.mark.slow
def test_a_slow_but_steady_download_inside_the_deadline_completes(trickling, tmp_path):
    server = trickling(body=bytes(range(256)) * 40, chunk_bytes=2048, interval_s=0.05)
    path = download(server.url + "/clip.mp4", tmp_path / "clip.mp4", MB, 5, allow_private=True)
    assert path.read_bytes() == bytes(range(256)) * 40


@pytest.mark.parametrize("url", [
    "http://example.com:99999/a.mp4",
    "http://" + "a" * 70 + ".example.com/a.mp4",
    "ftp://example.com/a.mp4",
    "file:///etc/passwd",
    "not a url",
    "",
    "http://[::1/a.mp4",
    "http://[zz::1]/a.mp4",
    "http://exa mple.com/a.mp4",
    "http://example.com/a.mp4\r\nX-Injected: 1",
    "http:///a.mp4",
])
def test_malformed_urls_are_the_client_s_error(url):
    with pytest.raises(FetchError) as caught:
        check_url(url, allow_private=False)
    assert 400 <= caught.value.status < 500


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
    "::1", "fe80::1", "fc00::1", "::",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
    "64:ff9b:1::a00:1", "64:ff9b:1:ffff::808:808",  # NAT64 local-use prefix
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4
    "::7f00:1",  # IPv4-compatible
])
def test_private_addresses_are_refused_in_every_form(address):
    with pytest.raises(FetchError) as caught:
        check_address(address, allow_private=False)
    assert caught.value.status == 403
    check_address(address, allow_private=True)


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_are_allowed(address):
    check_address(address, allow_private=False)


def test_an_address_in_the_url_is_refused_before_anything_is_resolved():
    for url in ("http://127.0.0.1/a.mp4", "http://[64:ff9b::a9fe:a9fe]/", "http://[::ffff:10.0.0.1]:80/"):
        with pytest.raises(FetchError) as caught:
            check_url(url, allow_private=False)
        assert caught.value.status == 403
        check_url(url, allow_private=True)


def test_only_the_standard_ports_unless_private_urls_are_allowed():
    for url in ("http://8.8.8.8/a.mp4", "https://8.8.8.8/a.mp4", "http://8.8.8.8:443/a.mp4"):
        check_url(url, allow_private=False)
    for url in ("http://8.8.8.8:8080/a.mp4", "http://8.8.8.8:22/", "https://8.8.8.8:6379/"):
        with pytest.raises(FetchError) as caught:
            check_url(url, allow_private=False)
        assert caught.value.status == 403 and "port" in str(caught.value)
        check_url(url, allow_private=True)
