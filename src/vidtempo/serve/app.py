"""The HTTP service: classify uploaded videos or URLs, with background jobs and a small web page.

The models load once, when the app is made. Inference runs on one worker thread, so requests queue for the
CPU or GPU instead of fighting over it, and the event loop stays free to answer other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from .. import __version__
from ..classify import VideoClassifier
from ..errors import VidtempoError
from .fetch import FetchError, download
from .settings import ServiceSettings

UPLOAD_CHUNK_BYTES = 1 << 20
# Finished jobs are forgotten after this long, so the job table cannot grow without bound.
JOB_RETENTION_S = 3600


@dataclass
class Job:
    id: str
    status: str = "queued"  # queued, running, done, failed
    stage: str = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float | None = None

    def public(self) -> dict[str, Any]:
        body = {"job_id": self.id, "status": self.status, "stage": self.stage, "progress": round(self.progress, 3)}
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body


class UrlRequest(BaseModel):
    url: str
    thumbnails: bool = False


class _UploadTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answers 413 as soon as a request body passes the limit, before it is spooled to disk."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Multipart framing adds a little to the file itself.
        limit = self.max_bytes + (64 << 10)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode()
        if length.isdigit() and int(length) > limit:
            return await _too_large(send, self.max_bytes)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _UploadTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _UploadTooLarge:
            await _too_large(send, self.max_bytes)


async def _too_large(send, max_bytes: int) -> None:
    response = JSONResponse({"detail": f"upload larger than the {max_bytes / (1 << 20):g} MB limit"}, 413)
    await response({"type": "http"}, None, send)


class Service:
    """The classifier, its single inference thread and the job table."""

    def __init__(self, classifier: VideoClassifier, settings: ServiceSettings) -> None:
        self.classifier, self.settings = classifier, settings
        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtempo-inference")
        self.jobs: dict[str, Job] = {}
        self.jobs_lock = threading.Lock()
        self.loaded_at = time.time()
        self.workdir = tempfile.TemporaryDirectory(prefix="vidtempo-serve-")

    def new_path(self, name: str = "video") -> Path:
        return Path(self.workdir.name) / f"{uuid.uuid4().hex}-{Path(name).name[-80:] or 'video'}"

    async def save_upload(self, upload: UploadFile) -> Path:
        path = self.new_path(upload.filename or "video")
        size = 0
        with open(path, "wb") as out:
            while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
                size += len(chunk)
                if size > self.settings.max_upload_bytes:
                    out.close()
                    path.unlink(missing_ok=True)
                    raise HTTPException(413, f"upload larger than the {self.settings.max_upload_mb:g} MB limit")
                out.write(chunk)
        if size == 0:
            path.unlink(missing_ok=True)
            raise HTTPException(400, "the uploaded file is empty")
        return path

    async def fetch(self, url: str) -> Path:
        path = self.new_path(url.rsplit("/", 1)[-1].split("?")[0] or "video")
        try:
            return await asyncio.to_thread(download, url, path, self.settings.max_upload_bytes,
                                           self.settings.url_timeout_s, self.settings.allow_private_urls)
        except FetchError as exc:
            path.unlink(missing_ok=True)
            raise HTTPException(exc.status, str(exc)) from None

    async def classify(self, path: Path, thumbnails: bool, job: Job | None = None) -> dict[str, Any]:
        def progress(stage: str, fraction: float) -> None:
            if job is not None:
                job.status, job.stage, job.progress = "running", stage, fraction

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.inference, lambda: self.classifier.classify_file(path, thumbnails=thumbnails, progress=progress)
            )
        except VidtempoError as exc:
            raise HTTPException(422, _without_temp_path(str(exc), path)) from None
        finally:
            path.unlink(missing_ok=True)

    def start_job(self, path_source, thumbnails: bool) -> Job:
        job = Job(id=uuid.uuid4().hex)
        with self.jobs_lock:
            self._forget_old_jobs()
            self.jobs[job.id] = job

        async def run() -> None:
            try:
                job.stage = "receiving"
                path = await path_source
                job.result = await self.classify(path, thumbnails, job)
                job.status, job.stage, job.progress = "done", "done", 1.0
            except HTTPException as exc:
                job.status, job.error = "failed", str(exc.detail)
            except Exception as exc:  # a bug: report it on the job instead of losing it
                job.status, job.error = "failed", f"internal error: {exc}"
            job.finished_at = time.time()

        asyncio.get_running_loop().create_task(run())
        return job

    def _forget_old_jobs(self) -> None:
        cutoff = time.time() - JOB_RETENTION_S
        for key in [k for k, j in self.jobs.items() if j.finished_at and j.finished_at < cutoff]:
            del self.jobs[key]


def _without_temp_path(message: str, path: Path) -> str:
    """Error messages name the client's file, not the server's temporary copy."""
    return message.replace(str(path), path.name.split("-", 1)[-1])


def create_app(classifier: VideoClassifier, settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    service = Service(classifier, settings)
    app = FastAPI(title="vidtempo", version=__version__,
                  description="Classify videos by content type with a temporal ensemble.")
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    page = files("vidtempo.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "members": len(classifier.ensemble),
                "categories": classifier.categories, "tta": classifier.tta, "loaded_at": service.loaded_at,
                "max_upload_mb": settings.max_upload_mb}

    @app.get("/categories")
    async def categories() -> dict[str, Any]:
        return {"categories": classifier.categories}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...), thumbnails: bool = Query(False)) -> dict[str, Any]:
        """Classify an uploaded video and wait for the result."""
        return await service.classify(await service.save_upload(file), thumbnails)

    @app.post("/predict/url")
    async def predict_url(body: UrlRequest) -> dict[str, Any]:
        """Download a video (http or https) and classify it."""
        return await service.classify(await service.fetch(body.url), body.thumbnails)

    @app.post("/jobs", status_code=202)
    async def create_job(file: UploadFile = File(...), thumbnails: bool = Query(False)) -> dict[str, Any]:
        """Classify an uploaded video in the background; poll ``GET /jobs/{job_id}`` for progress."""
        path = await service.save_upload(file)
        return service.start_job(_ready(path), thumbnails).public()

    @app.post("/jobs/url", status_code=202)
    async def create_url_job(body: UrlRequest) -> dict[str, Any]:
        """Download and classify a video in the background."""
        return service.start_job(service.fetch(body.url), body.thumbnails).public()

    @app.get("/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.public()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)

    return app


async def _ready(path: Path) -> Path:
    return path
