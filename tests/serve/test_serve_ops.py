"""Running the service on a network: API key, Prometheus metrics, access logs, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
parser = pytest.importorskip("prometheus_client.parser")

from loopback import TricklingServer, multipart  # noqa: E402
from serve_helpers import Server, a_clip, browser_page, upload, wait_for_job  # noqa: E402

pytestmark = pytest.mark.slow
API_KEY = "a-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(video_model, tmp_path_factory):
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("keyed"), "--max-upload-mb", "1",
                     env={"VIDTEMPO_API_KEY": API_KEY})
    yield running
    running.stop()


# ------------------------------------------------------------------------------------------------ API key
def test_without_the_api_key_only_health_and_the_page_answer(keyed_server, video_model):
    assert httpx.get(keyed_server.url + "/health").status_code == 200
    assert "<title>vidtempo</title>" in httpx.get(keyed_server.url + "/").text
    for method, path in [("GET", "/categories"), ("GET", "/jobs/x"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                         ("GET", "/docs"), ("POST", "/predict/url"), ("POST", "/jobs/url")]:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = httpx.request(method, keyed_server.url + path, headers=headers, json={"url": "http://x/"})
            assert response.status_code == 401, (method, path, headers)
            assert "API key" in response.json()["detail"]
    assert upload(keyed_server, a_clip(video_model)).status_code == 401


def test_a_form_post_without_the_key_gets_a_json_401_not_a_reset(keyed_server):
    body, content_type = multipart("clip.mp4", os.urandom(512 << 10))
    request = urllib.request.Request(keyed_server.url + "/predict", data=body, headers={"Content-Type": content_type})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 401


def test_the_api_key_opens_every_route_as_a_header_or_a_bearer_token(keyed_server, video_model):
    for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
        assert httpx.get(keyed_server.url + "/categories", headers=headers).status_code == 200
        assert httpx.get(keyed_server.url + "/metrics", headers=headers).status_code == 200
        response = upload(keyed_server, a_clip(video_model), headers=headers)
        assert response.status_code == 200, response.text
    job = upload(keyed_server, a_clip(video_model), endpoint="/jobs", headers={"X-API-Key": API_KEY})
    assert wait_for_job(keyed_server, job.json()["job_id"], headers={"X-API-Key": API_KEY})["status"] == "done"


def test_the_web_page_asks_for_the_api_key_and_sends_it(keyed_server, video_model):
    with browser_page(keyed_server) as page:
        page.wait_for_selector("#api-key", state="visible", timeout=10_000)
        page.fill("#api-key", API_KEY)
        page.click("#key-button")
        page.wait_for_function("document.getElementById('categories').textContent.includes('Animation')")
        page.set_input_files("#file", str(a_clip(video_model)))
        page.click("#upload-button")
        page.wait_for_selector("#frames .frame img", timeout=120_000)
        assert page.inner_text("#predicted") in ("Animation", "Flat_Content", "Gaming", "Natural_Content")


# ------------------------------------------------------------------------------------------ observability
def samples(server) -> dict:
    text = httpx.get(server.url + "/metrics", headers={"X-API-Key": API_KEY}).text
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_latency_inference_and_jobs(keyed_server, video_model):
    key = {"X-API-Key": API_KEY}
    before = samples(keyed_server)
    assert upload(keyed_server, a_clip(video_model), headers=key).status_code == 200
    job = upload(keyed_server, a_clip(video_model), endpoint="/jobs", headers=key).json()
    wait_for_job(keyed_server, job["job_id"], headers=key)
    httpx.get(keyed_server.url + "/jobs/unknown", headers=key)
    after = samples(keyed_server)
    route = {"method": "POST", "route": "/predict"}
    assert value(after, "vidtempo_http_requests_total", status="200", **route) == \
        value(before, "vidtempo_http_requests_total", status="200", **route) + 1
    unknown_job = {"method": "GET", "route": "/jobs/{job_id}", "status": "404"}
    for name, labels in (("vidtempo_http_requests_total", unknown_job),
                         ("vidtempo_http_request_duration_seconds_count", route), ("vidtempo_jobs", {"state": "done"})):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, (name, labels)
    assert value(after, "vidtempo_inference_seconds_count") == value(before, "vidtempo_inference_seconds_count") + 2
    assert value(after, "vidtempo_inference_seconds_sum") > value(before, "vidtempo_inference_seconds_sum")
    assert ("vidtempo_inference_queue_depth", ()) in after
    assert value(after, "vidtempo_jobs", state="running") == 0


def test_uploads_refused_with_422_are_not_counted_as_inferences(keyed_server, video_model, tmp_path):
    """The inference histogram counts videos classified: an upload that is not a video (422 once decoding
    fails), a form without its file (422 from validation) and a job on such an upload (failed) add nothing."""
    key = {"X-API-Key": API_KEY}
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(20_000))
    inferences = ("vidtempo_inference_seconds_count", "vidtempo_inference_seconds_sum")
    refusals = {"method": "POST", "route": "/predict", "status": "422"}
    before = samples(keyed_server)
    assert upload(keyed_server, garbage, headers=key).status_code == 422
    no_file = httpx.post(keyed_server.url + "/predict", files={"video": ("clip.mp4", b"x")}, headers=key)
    assert no_file.status_code == 422
    job = upload(keyed_server, garbage, endpoint="/jobs", headers=key).json()
    assert wait_for_job(keyed_server, job["job_id"], headers=key)["status"] == "failed"
    refused = samples(keyed_server)
    assert [value(refused, name) for name in inferences] == [value(before, name) for name in inferences]
    assert value(refused, "vidtempo_http_requests_total", **refusals) == \
        value(before, "vidtempo_http_requests_total", **refusals) + 2, "the requests themselves are counted"
    assert upload(keyed_server, a_clip(video_model), headers=key).status_code == 200
    classified = samples(keyed_server)
    assert value(classified, inferences[0]) == value(before, inferences[0]) + 1
    assert value(classified, inferences[1]) > value(before, inferences[1])


def test_each_request_is_one_json_access_log_line(keyed_server):
    started = time.perf_counter()
    httpx.get(keyed_server.url + "/categories", headers={"X-API-Key": API_KEY, "User-Agent": "log-test"})
    client_ms = (time.perf_counter() - started) * 1000
    time.sleep(0.2)
    entries = [json.loads(line) for line in keyed_server.log().splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("event") == "request" and e.get("user_agent") == "log-test"]
    assert len(mine) == 1
    assert mine[0]["method"] == "GET" and mine[0]["route"] == "/categories" and mine[0]["status"] == 200
    # In milliseconds: more than nothing (seconds, rounded to 2 places, would be 0.0) and no more than the
    # client waited (microseconds, or seconds since some epoch, would be more).
    assert 0 < mine[0]["duration_ms"] <= client_ms
    assert mine[0]["client"].startswith("127.0.0.1")
    assert API_KEY not in keyed_server.log()


# --------------------------------------------------------------------------------------------- shutdown
def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(video_model, tmp_path):
    server = Server(video_model.checkpoints, tmp_path, "--allow-private-urls")
    clip = a_clip(video_model).read_bytes()
    slow_source = TricklingServer(clip, chunk_bytes=len(clip) // 8 + 1, interval_s=0.3)  # about 2.5 s
    answers = []
    try:
        request = threading.Thread(target=lambda: answers.append(httpx.post(
            server.url + "/predict/url", json={"url": slow_source.url + "/clip.mp4"}, timeout=60)))
        request.start()
        deadline = time.monotonic() + 10
        while slow_source.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.terminate()
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health", timeout=2)
        request.join(timeout=60)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert server.temp_files() == []
    finally:
        slow_source.stop()
        server.stop()


@pytest.mark.parametrize("flags, needle", [
    (["--max-upload-mb", "300", "--max-disk-mb", "100"], "max_disk_mb"),
    (["--max-jobs", "0"], "max_jobs"),
    (["--url-timeout", "-1"], "url_timeout_s"),
    (["--max-connections", "0"], "max_connections"),
])
def test_impossible_limits_are_refused_with_one_line_before_models_load(tmp_path, flags, needle):
    result = subprocess.run([sys.executable, "-m", "vidtempo", "serve", "--checkpoints", str(tmp_path / "none"),
                             *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtempo: error:") and needle in lines[0], result.stderr
