"""The HTTP service, started for real on loopback, and its web page driven in headless Chromium."""

from __future__ import annotations

import concurrent.futures
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real server on loopback, real-video training, a browser

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ARTIFACTS = Path(os.environ.get("VIDTEMPO_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, checkpoints: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would block it.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vidtempo", "serve", "--checkpoints", str(checkpoints), "--port", str(self.port),
             *flags], stdout=self.log, stderr=subprocess.STDOUT, text=True)
        try:
            self._wait_until_healthy(timeout=120)
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"server did not start within {timeout} s: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(video_model):
    running = Server(video_model.checkpoints, "--max-upload-mb", "1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def private_server(video_model):
    running = Server(video_model.checkpoints, "--allow-private-urls")
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


def a_clip(video_model, category="Animation") -> Path:
    return sorted((video_model.videos / "test" / category).glob("*.mp4"))[0]


def upload(server, path: Path, endpoint="/predict", name=None):
    with open(path, "rb") as f:
        return httpx.post(server.url + endpoint, files={"file": (name or path.name, f, "video/mp4")}, timeout=120)


def test_health_categories_and_openapi(server):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["members"] == 2
    assert httpx.get(server.url + "/categories").json()["categories"] == [
        "Animation", "Flat_Content", "Natural_Content"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/predict", "/predict/url", "/jobs", "/jobs/{job_id}", "/health", "/categories"} <= set(spec["paths"])


def test_predict_an_upload(server, video_model):
    response = upload(server, a_clip(video_model))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["probabilities"]) == {"Animation", "Flat_Content", "Natural_Content"}
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
    assert response.json()["predicted_class"] in ("Animation", "Flat_Content", "Natural_Content")
    missing = httpx.post(private_server.url + "/predict/url", json={"url": f"{file_server}/nope.mp4"}, timeout=60)
    assert missing.status_code == 502


def test_eight_concurrent_requests_and_a_free_event_loop(server, video_model):
    loaded_at = httpx.get(server.url + "/health").json()["loaded_at"]
    clips = sorted((video_model.videos / "test").glob("*/*.mp4"))[:8]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(upload, server, clip) for clip in clips]
        time.sleep(0.5)
        started = time.perf_counter()
        health = httpx.get(server.url + "/health", timeout=5)
        health_latency = time.perf_counter() - started
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 8
    assert health.status_code == 200 and health_latency < 1.0, "inference must not block the event loop"
    assert health.json()["loaded_at"] == loaded_at, "the models are loaded once"


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


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_web_page_in_headless_chromium(server, video_model):
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('categories').textContent.includes('Animation')")
        page.set_input_files("#file", str(a_clip(video_model, "Natural_Content")))
        page.click("#upload-button")
        page.wait_for_selector("#frames .frame img", timeout=120_000)
        predicted = page.inner_text("#predicted")
        bars = page.locator("#bars .bar").count()
        frames = page.locator("#frames .frame").count()
        shades = page.eval_on_selector_all("#frames .shade", "els => els.map(e => parseFloat(e.style.opacity))")
        page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
        page.set_input_files("#file", str(Path(__file__)))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
        error = page.inner_text("#error")
        browser.close()
    assert predicted in ("Animation", "Flat_Content", "Natural_Content")
    assert bars == 3 and frames == 8
    assert min(shades) == 0.0 and max(shades) > 0.0, "frames are shaded by their attention weight"
    assert "test_serve.py" in error
    assert (ARTIFACTS / "web_page.png").stat().st_size > 10_000
