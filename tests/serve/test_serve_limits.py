"""The service holds when clients misbehave: slow URLs, over-limit and chunked uploads, malformed URLs, floods.

Real server on loopback; the misbehaving peers are real sockets (tests/loopback.py); every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
import urllib.error
import urllib.request

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
parser = pytest.importorskip("prometheus_client.parser")

from loopback import TricklingServer, chunked_upload, json_body, multipart, raw_request  # noqa: E402
from serve_helpers import Server, a_clip, upload, wait_for_job  # noqa: E402

pytestmark = pytest.mark.slow
URL_TIMEOUT_S = 5
MAX_JOBS = 2
MAX_DISK_MB = 8.5  # room for the eight trickling URLs (each counts as the 1 MB upload limit), not a ninth


@pytest.fixture(scope="module")
def guarded_server(video_model, tmp_path_factory):
    """Fetches from loopback (the trickling server lives there), with a short URL timeout and small limits."""
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("guarded"), "--allow-private-urls",
                     "--url-timeout", str(URL_TIMEOUT_S), "--max-upload-mb", "1", "--max-jobs", str(MAX_JOBS),
                     "--max-disk-mb", str(MAX_DISK_MB))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def trickling():
    """Two servers that send one byte per 0.5 s: one trickles only the body, one its headers too."""
    servers = {"body": TricklingServer(), "headers": TricklingServer(trickle_headers=True)}
    yield servers
    for each in servers.values():
        each.stop()


def post_url(server, url, endpoint="/predict/url", timeout=60):
    return httpx.post(server.url + endpoint, json={"url": url}, timeout=timeout)


# ----------------------------------------------------------------------------------------------- slow URLs
@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_trickling_url_gets_a_json_504_soon_after_the_url_timeout(guarded_server, trickling, part):
    started = time.monotonic()
    response = post_url(guarded_server, trickling[part].url + "/clip.mp4")
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and "within 5 s" in response.json()["detail"]
    # Without a deadline for the whole fetch (bytes keep coming, so no read times out) there is no answer at
    # all before the client gives up; the bound catches a deadline that counts twice.
    assert elapsed < 2 * URL_TIMEOUT_S, f"answered after {elapsed:.1f} s with a {URL_TIMEOUT_S} s limit"


def test_uploads_and_health_stay_responsive_while_eight_trickling_urls_are_in_flight(guarded_server, trickling,
                                                                                      video_model):
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(post_url, guarded_server, trickling["body"].url + f"/{i}.mp4") for i in range(8)]
        time.sleep(0.5)
        before = time.monotonic()
        health = httpx.get(guarded_server.url + "/health", timeout=5)
        health_s = time.monotonic() - before
        before = time.monotonic()
        uploaded = upload(guarded_server, a_clip(video_model))
        upload_s = time.monotonic() - before
        answers = [future.result() for future in slow]
    answered_s = time.monotonic() - started
    # Fetches that held the event loop or the upload's path would hold them until their deadline, 5 s: the
    # bounds lie well below that and well above a free service's answer.
    assert health.status_code == 200 and health_s < URL_TIMEOUT_S / 2, f"/health took {health_s:.2f} s"
    assert uploaded.status_code == 200 and upload_s < URL_TIMEOUT_S, f"an upload took {upload_s:.1f} s"
    assert [a.status_code for a in answers] == [504] * 8
    # Four download slots for eight URLs: sharing their request's deadline, all end at about 5 s; with a
    # deadline of their own from when a slot frees, the second four would end at about 10 s. Midway:
    assert answered_s < 1.5 * URL_TIMEOUT_S, "queued fetches share the deadline of their request"


# ------------------------------------------------------------------------------------------- large uploads
def test_an_over_limit_upload_sent_whole_without_expect_gets_a_json_413(server):
    body, content_type = multipart("big.mp4", os.urandom(2 << 20))
    for endpoint in ("/predict", "/jobs") * 3:  # a reset depends on timing: try more than once
        request = urllib.request.Request(server.url + endpoint, data=body, headers={"Content-Type": content_type})
        with pytest.raises(urllib.error.HTTPError) as caught:  # not a connection reset
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 413 and "1 MB limit" in json.loads(caught.value.read())["detail"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_chunked_over_limit_upload_gets_a_json_413(server):
    status, _, body = chunked_upload(server.port, "/predict", "big.mp4", os.urandom(2 << 20))
    assert status == 413 and "1 MB limit" in json_body(body)["detail"]


def test_a_client_that_expects_100_continue_gets_its_413_without_sending_the_body(server):
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {5 << 20}\r\nExpect: 100-continue\r\n\r\n")
    status, _, body = raw_request(server.port, head, [], timeout_s=10)
    assert status == 413 and "limit" in json_body(body)["detail"]


def test_a_chunked_upload_under_the_limit_is_classified(server, video_model):
    status, _, body = chunked_upload(server.port, "/predict", "clip.mp4", a_clip(video_model).read_bytes())
    assert status == 200 and json_body(body)["video"] == "clip.mp4"


# ----------------------------------------------------------------------------------------- malformed URLs
@pytest.mark.parametrize("url, status", [
    ("http://example.com:99999/a.mp4", 400),
    ("http://" + "a" * 70 + ".example.com/a.mp4", 400),
    ("ftp://example.com/a.mp4", 400),
    ("file:///etc/passwd", 400),
    ("not a url", 400),
    ("http://[::1/a.mp4", 400),
    ("http://[zz::1]/a.mp4", 400),
    ("http://[64:ff9b::7f00:1]/a.mp4", 403),
    ("http://[64:ff9b:1::a9fe:a9fe]/a.mp4", 403),
    ("http://[2002:7f00:1::1]/a.mp4", 403),
    ("http://[::ffff:127.0.0.1]/a.mp4", 403),
    ("http://[::ffff:a9fe:a9fe]/latest/meta-data", 403),
    ("http://8.8.8.8:6379/", 403),
])
def test_malformed_and_refused_urls_get_a_json_4xx_never_a_500(server, url, status):
    for endpoint in ("/predict/url", "/jobs/url"):
        response = post_url(server, url, endpoint)
        assert response.status_code == status, (endpoint, response.text)
        assert response.json()["detail"]


# ------------------------------------------------------------------------------------------- bounded state
def gauge(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no gauge {name}")


def test_background_jobs_and_held_videos_are_bounded_and_full_answers_429_with_retry_after(
        guarded_server, trickling, video_model):
    slow_url = trickling["body"].url + "/slow.mp4"
    jobs = [post_url(guarded_server, slow_url, "/jobs/url") for _ in range(MAX_JOBS)]
    assert [r.status_code for r in jobs] == [202] * MAX_JOBS
    too_many_jobs = upload(guarded_server, a_clip(video_model), endpoint="/jobs")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        waiting = [pool.submit(post_url, guarded_server, slow_url) for _ in range(6)]
        deadline = time.monotonic() + URL_TIMEOUT_S
        while gauge(guarded_server, "vidtempo_video_bytes_held") < 8 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        disk_full = post_url(guarded_server, slow_url)
        small_upload = upload(guarded_server, a_clip(video_model))
        assert [f.result().status_code for f in waiting] == [504] * 6
    for response, reason in ((too_many_jobs, "background jobs"), (disk_full, "waiting to be classified")):
        assert response.status_code == 429 and reason in response.json()["detail"], response.text
        assert int(response.headers["Retry-After"]) >= 1
    assert small_upload.status_code == 200, "an upload that fits is still served"
    for response in jobs:
        job = wait_for_job(guarded_server, response.json()["job_id"], timeout_s=URL_TIMEOUT_S + 5)
        assert job["status"] == "failed" and "within 5 s" in job["error"]
    accepted = upload(guarded_server, a_clip(video_model), endpoint="/jobs")
    assert accepted.status_code == 202
    assert wait_for_job(guarded_server, accepted.json()["job_id"])["status"] == "done"
    assert gauge(guarded_server, "vidtempo_video_bytes_held") == 0


def soak_requests(server, video_model, tmp_path):
    """One of each kind of request a service meets: good, broken, too large, refused, unknown."""
    clip = a_clip(video_model)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(20_000))
    big_body, big_type = multipart("big.mp4", os.urandom(1536 << 10))

    def too_large():
        request = urllib.request.Request(server.url + "/predict", data=big_body, headers={"Content-Type": big_type})
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as exc:
            return exc.code

    def job():
        return wait_for_job(server, upload(server, clip, endpoint="/jobs").json()["job_id"])["status"]

    return [
        (lambda: upload(server, clip).status_code, 200),
        (job, "done"),
        (lambda: upload(server, garbage).status_code, 422),
        (too_large, 413),
        (lambda: chunked_upload(server.port, "/predict", "big.mp4", os.urandom(1536 << 10))[0], 413),
        (lambda: post_url(server, "http://127.0.0.1/a.mp4").status_code, 403),
        (lambda: post_url(server, "http://[::1/").status_code, 400),
        (lambda: httpx.get(server.url + "/jobs/nope").status_code, 404),
        (lambda: httpx.get(server.url + "/health").status_code, 200),
    ]


def counters(server) -> dict:
    """The service's request counts by (method, route, status), and its count of videos classified."""
    found = {}
    for family in parser.text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "vidtempo_http_requests_total":
                found[tuple(sample.labels[k] for k in ("method", "route", "status"))] = sample.value
            elif sample.name == "vidtempo_inference_seconds_count":
                found["inferences"] = sample.value
    return found


# What one round of soak_requests does to the service's counters (its job's status polls vary, left out).
SOAK_ROUND = {("POST", "/predict", "200"): 1, ("POST", "/jobs", "202"): 1, ("POST", "/predict", "422"): 1,
              ("POST", "/predict", "413"): 2, ("POST", "/predict/url", "403"): 1,
              ("POST", "/predict/url", "400"): 1, ("GET", "/jobs/{job_id}", "404"): 1, ("GET", "/health", "200"): 1,
              "inferences": 2}


def test_a_soak_of_mixed_requests_leaves_no_files_behind_and_memory_flat(server, video_model, tmp_path):
    kinds = soak_requests(server, video_model, tmp_path)
    for send, expected in kinds:  # warm up: first decodes, first allocations
        assert send() == expected
    rss_before, before = server.rss_bytes(), counters(server)
    rounds = 8
    for _ in range(rounds):
        for send, expected in kinds:
            assert send() == expected
    growth_mb = (server.rss_bytes() - rss_before) / (1 << 20)
    after = counters(server)
    # Every request of the soak reached the service and was counted once, refused ones included; only the
    # two good videos of each round were classified.
    assert {key: after.get(key, 0) - before.get(key, 0) for key in SOAK_ROUND} == \
        {key: rounds * per_round for key, per_round in SOAK_ROUND.items()}
    assert growth_mb < 25, f"RSS grew {growth_mb:.1f} MB over {rounds} rounds of {len(kinds)} kinds of request"
    assert server.temp_files() == []
