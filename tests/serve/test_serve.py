"""The HTTP service with well-behaved clients, started for real on loopback; its web page in headless Chromium."""

from __future__ import annotations

import concurrent.futures
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real server on loopback, real-video training, a browser

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from serve_helpers import Server, a_clip, browser_page, upload, wait_for_job  # noqa: E402

ARTIFACTS = Path(os.environ.get("VIDTEMPO_TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))


@pytest.fixture(scope="module")
def private_server(video_model, tmp_path_factory):
    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("private_server"), "--allow-private-urls")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def file_server(video_model):
    """Serves the test clips over plain HTTP on loopback."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(video_model.videos))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def classes(video_model) -> list[str]:
    """The classes the test model was trained on: its training videos' folders."""
    return sorted(p.name for p in (video_model.videos / "train").iterdir() if p.is_dir())


def test_health_categories_and_openapi(server, video_model):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["members"] == 2
    assert httpx.get(server.url + "/categories").json()["categories"] == classes(video_model)
    assert classes(video_model) == ["Animation", "Flat_Content", "Gaming", "Natural_Content"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/predict", "/predict/url", "/jobs", "/jobs/{job_id}", "/health", "/categories"} <= set(spec["paths"])


def test_predict_an_upload(server, video_model):
    response = upload(server, a_clip(video_model))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["probabilities"]) == set(classes(video_model))
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    assert body["predicted_class"] in body["probabilities"] and len(body["frames"]) == 8


def test_bad_uploads_get_json_errors_and_the_server_keeps_serving(server, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(20_000))
    response = upload(server, garbage)
    assert response.status_code == 422 and "garbage.mp4" in response.json()["detail"]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert upload(server, empty).status_code == 400
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert upload(server, text).status_code == 422
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 << 20))
    response = upload(server, big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_url_safety(server, file_server):
    loopback = httpx.post(server.url + "/predict/url", json={"url": file_server + "/test/Animation/x.mp4"})
    assert loopback.status_code == 403 and "refused" in loopback.json()["detail"]
    for url in ("ftp://example.com/a.mp4", "file:///etc/passwd", "not a url"):
        response = httpx.post(server.url + "/predict/url", json={"url": url})
        assert response.status_code == 400, (url, response.text)
    link_local = httpx.post(server.url + "/predict/url", json={"url": "http://169.254.169.254/latest/meta-data"})
    assert link_local.status_code == 403


def test_predict_a_url_when_private_addresses_are_allowed(private_server, file_server, video_model):
    clip = a_clip(video_model, "Natural_Content").relative_to(video_model.videos)
    response = httpx.post(private_server.url + "/predict/url", json={"url": f"{file_server}/{clip}"}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["predicted_class"] in classes(video_model)
    missing = httpx.post(private_server.url + "/predict/url", json={"url": f"{file_server}/nope.mp4"}, timeout=60)
    assert missing.status_code == 502


def queue_depth(server) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("vidtempo_inference_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no vidtempo_inference_queue_depth")


def test_eight_concurrent_requests_and_a_free_event_loop(server, video_model):
    """While videos wait for the inference thread, the event loop still answers. Shown by what it answers,
    not by how fast (a test clip takes about 0.1 s on a CPU, too little for a latency bound to tell a blocked loop):
    /metrics reports two or more videos waiting at once, which a loop that ran inference itself could
    never report, since it would answer only between two videos."""
    loaded_at = httpx.get(server.url + "/health").json()["loaded_at"]
    clips = sorted((video_model.videos / "test").glob("*/*.mp4"))[:8]
    depths = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(upload, server, clip) for clip in clips]
        while not all(f.done() for f in futures):
            depths.append(queue_depth(server))
        health = httpx.get(server.url + "/health", timeout=5)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 8
    assert max(depths) >= 2, f"queue depths seen while the uploads ran: {depths}"
    assert health.status_code == 200 and health.json()["loaded_at"] == loaded_at, "the models are loaded once"


def test_background_job_reports_progress(server, video_model):
    created = upload(server, a_clip(video_model, "Flat_Content"), endpoint="/jobs")
    assert created.status_code == 202
    job_id = created.json()["job_id"]
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/jobs/{job_id}").json()
        seen.append(job["status"])
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["result"]["predicted_class"] in job["result"]["probabilities"]
    assert httpx.get(f"{server.url}/jobs/unknown").status_code == 404


def test_responses_name_the_upload_or_the_url_never_a_server_path(server, private_server, file_server,
                                                                   video_model, tmp_path):
    clip = a_clip(video_model)
    uploaded = upload(server, clip, name="holiday clip.mp4")
    assert uploaded.status_code == 200 and uploaded.json()["video"] == "holiday clip.mp4"
    job = wait_for_job(server, upload(server, clip, endpoint="/jobs", name="party.mp4").json()["job_id"])
    assert job["result"]["video"] == "party.mp4"
    url = f"{file_server}/{clip.relative_to(video_model.videos)}"
    fetched = httpx.post(private_server.url + "/predict/url", json={"url": url}, timeout=120)
    assert fetched.status_code == 200 and fetched.json()["video"] == url
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(20_000))
    failed = upload(server, garbage, name="broken.mp4")
    assert failed.status_code == 422 and "broken.mp4" in failed.json()["detail"]
    for response in (uploaded, fetched, failed, httpx.get(f"{server.url}/jobs/{job['job_id']}")):
        for secret in (str(server.temp_dir), str(private_server.temp_dir), "vidtempo-serve-", "/tmp/"):
            assert secret not in response.text


def test_web_page_in_headless_chromium(server, video_model):
    with browser_page(server) as page:
        page.wait_for_function("document.getElementById('categories').textContent.includes('Animation')")
        page.set_input_files("#file", str(a_clip(video_model, "Natural_Content")))
        page.click("#upload-button")
        page.wait_for_selector("#frames .frame img", timeout=120_000)
        predicted = page.inner_text("#predicted")
        flagged = not page.inner_text("#trust").endswith("ok")
        reasons_shown = page.is_visible("#reasons")
        reasons = page.inner_text("#reasons") if reasons_shown else ""
        bars = page.locator("#bars .bar").count()
        frames = page.locator("#frames .frame").count()
        shades = page.eval_on_selector_all("#frames .shade", "els => els.map(e => parseFloat(e.style.opacity))")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
        page.set_input_files("#file", str(Path(__file__)))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
        error = page.inner_text("#error")
    assert predicted in classes(video_model)
    assert bars == len(classes(video_model)) and frames == 8
    assert min(shades) == 0.0 and max(shades) > 0.0, "frames are shaded by their attention weight"
    assert "test_serve.py" in error
    assert reasons_shown == flagged, "a flagged prediction says why, an ok one shows no reasons"
    assert not flagged or reasons.startswith("Flagged: ")
    assert (ARTIFACTS / "web_page.png").stat().st_size > 10_000


def test_web_page_refuses_an_over_limit_file_without_sending_it(server, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(3 << 19))  # 1.5 MB, the server takes 1 MB
    with browser_page(server) as page:
        posts = []
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        page.wait_for_function("document.getElementById('categories').textContent.includes('Animation')")
        page.set_input_files("#file", str(big))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
        error = page.inner_text("#error")
    assert "big.mp4" in error and "1.0 MB" in error
    assert posts == []


def test_predict_with_a_timeline_returns_segments_and_the_page_draws_them(server, video_model, tmp_path):
    from vidtempo.demo.montage import concatenate_clips

    clips = [a_clip(video_model, "Animation"), a_clip(video_model, "Flat_Content")]
    video, bounds = concatenate_clips(clips, tmp_path / "two.mp4")
    with video.open("rb") as f:
        response = httpx.post(server.url + "/predict?timeline=true&thumbnails=true",
                              files={"file": ("two.mp4", f, "video/mp4")}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    segments = body["timeline"]["segments"]
    assert segments[0]["start_s"] == 0 and segments[-1]["end_s"] == pytest.approx(bounds[-1][1], abs=0.05)
    assert all(f["thumbnail"].startswith("data:image/jpeg") for f in body["frames"])
    assert body["video"] == "two.mp4"
    page = httpx.get(server.url + "/").text
    assert 'id="band"' in page and 'id="timeline-option"' in page  # a choice: a timeline costs more


def test_web_page_draws_the_timeline_only_when_asked(server, video_model, tmp_path):
    from vidtempo.demo.montage import concatenate_clips

    clips = [a_clip(video_model, "Animation")] * 2 + [a_clip(video_model, "Flat_Content")] * 2
    video, _ = concatenate_clips(clips, tmp_path / "two.mp4")
    with browser_page(server) as page:
        posts = []
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        page.wait_for_function("document.getElementById('categories').textContent.includes('Animation')")
        ticked_at_first = page.is_checked("#timeline-option")
        page.set_input_files("#file", str(video))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('stage').textContent === 'done'", timeout=120_000)
        plain_band = page.locator("#band div").count()
        page.check("#timeline-option")
        page.click("#upload-button")
        page.wait_for_selector("#band div", timeout=120_000)
        segments = page.locator("#band div").all_inner_texts()
    assert not ticked_at_first and plain_band == 0
    assert "timeline=false" in posts[0] and "timeline=true" in posts[1]
    assert segments[0] == "Animation" and segments[-1] == "Flat_Content"
