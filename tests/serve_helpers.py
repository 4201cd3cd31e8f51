"""`vidtempo serve` started for real on loopback, for the service tests, and the clients they share."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The service in its own process; its log and its temporary files go to ``folder``."""

    def __init__(self, checkpoints: Path, folder: Path, *flags: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.temp_dir, self.log_path = folder / "tmp", folder / "server.log"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "TMPDIR": str(self.temp_dir), **(env or {})}
        with open(self.log_path, "w") as log:  # a file, not a pipe: nobody must drain it for the server to run
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vidtempo", "serve", "--checkpoints", str(checkpoints), "--port",
                 str(self.port), *flags], stdout=log, stderr=subprocess.STDOUT, env=environment)
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def temp_files(self) -> list[Path]:
        return sorted(p for p in self.temp_dir.rglob("*") if p.is_file())

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def a_clip(video_model, category="Animation") -> Path:
    return sorted((video_model.videos / "test" / category).glob("*.mp4"))[0]


def upload(server, path: Path, endpoint="/predict", name=None, headers=None):
    with open(path, "rb") as f:
        return httpx.post(server.url + endpoint, files={"file": (name or path.name, f, "video/mp4")},
                          headers=headers, timeout=120)


def wait_for_job(server, job_id: str, headers=None, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


@contextlib.contextmanager
def browser_page(server):
    """The service's web page in headless Debian Chromium, driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(server.url + "/")
            yield page
        finally:
            browser.close()
