"""The HTTP service under load: upload latency alone and with concurrent clients, /health while busy, memory.

Starts `vidtempo serve` on loopback with the given checkpoints and posts the given clips. Run:

    python benchmarks/serve_load.py --checkpoints CKPT --videos FOLDER [--requests 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkpoints: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "vidtempo", "serve", "--checkpoints", str(checkpoints),
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "TMPDIR": str(folder)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, clip: Path) -> float:
    started = time.perf_counter()
    with open(clip, "rb") as f:
        response = httpx.post(url + "/predict", files={"file": (clip.name, f, "video/mp4")}, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{1000 * statistics.median(ordered):8.1f} {1000 * p95:8.1f} {1000 * p99:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--videos", type=Path, required=True, help="a folder searched for *.mp4")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    clips = sorted(args.videos.rglob("*.mp4"))
    with tempfile.TemporaryDirectory() as folder:
        process, url = start(args.checkpoints, Path(folder))
        try:
            for clip in clips[:3]:
                post(url, clip)  # warm-up
            rss_before = rss_mb(process.pid)
            alone = [post(url, clips[i % len(clips)]) for i in range(args.requests // 2)]
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                busy = [pool.submit(post, url, clips[i % len(clips)]) for i in range(args.requests // 2)]
                health = []
                while not all(f.done() for f in busy):
                    started = time.perf_counter()
                    httpx.get(url + "/health", timeout=10)
                    health.append(time.perf_counter() - started)
                    time.sleep(0.05)
                together = [f.result() for f in busy]
            rss_after = rss_mb(process.pid)
            leftovers = [p for p in Path(folder).rglob("*") if p.is_file() and p.name != "server.log"]
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{len(clips)} clips from {args.videos}")
    print(f"{'measure':<42} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    print(f"{'POST /predict, one client':<42} {percentiles(alone)}")
    print(f"{f'POST /predict, {args.clients} clients':<42} {percentiles(together)}")
    print(f"{'GET /health while they run':<42} {percentiles(health)}")
    print(f"RSS {rss_before:.1f} MB after warm-up, {rss_after:.1f} MB after {args.requests} uploads "
          f"({rss_after - rss_before:+.1f} MB); files left in TMPDIR: {len(leftovers)}")


if __name__ == "__main__":
    main()
