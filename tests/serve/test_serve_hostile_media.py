"""The service survives hostile uploads and a decoder that never returns: each gets one error response,
playable ones a prediction, and the service goes on answering, /health included."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from extract_fixtures import PLAYABLE_HOSTILE, hostile_media  # noqa: E402
from serve_helpers import Server, a_clip, upload  # noqa: E402
from vidtempo.features.extract.decoder_pool import STALL_ENV  # noqa: E402

pytestmark = pytest.mark.slow  # a real server on loopback, real-video training


@pytest.fixture(scope="module")
def watched_server(video_model, tmp_path_factory):
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("watched_server"), "--max-decode-seconds", "2",
                     env={STALL_ENV: ".mkv"})  # the server keeps an upload's suffix, not its name
    yield running
    running.stop()


@pytest.mark.timeout(300)
def test_each_hostile_upload_gets_one_error_and_the_service_keeps_serving(watched_server, video_model, tmp_path):
    media = hostile_media(tmp_path / "hostile")
    for kind, path in media.items():
        response = upload(watched_server, path)
        if kind in PLAYABLE_HOSTILE:
            assert response.status_code == 200, (kind, response.text)
        else:
            assert response.status_code in (400, 422), (kind, response.text)
            detail = response.json()["detail"]
            assert (detail == "the uploaded file is empty") if kind == "empty" else path.name in detail, kind
        assert httpx.get(watched_server.url + "/health", timeout=5).status_code == 200
    bomb = upload(watched_server, media["pixel_bomb"])
    assert "exceed the limit" in bomb.json()["detail"]


@pytest.mark.timeout(300)
def test_a_stuck_decode_is_one_error_response_while_health_answers(watched_server, video_model, tmp_path):
    clip = a_clip(video_model)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(upload, watched_server, clip, "/predict", "stuck.mkv")
        time.sleep(1.0)
        health = httpx.get(watched_server.url + "/health", timeout=5)
        response = stuck.result(timeout=120)
    assert health.status_code == 200
    assert response.status_code == 422 and "decoder stopped responding after" in response.json()["detail"]
    assert "stuck.mkv" in response.json()["detail"]
    # The decoder that replaced the stuck one serves the next request.
    assert upload(watched_server, clip).status_code == 200
