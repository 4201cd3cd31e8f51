"""The HTTP service: classify uploaded videos or URLs, with background jobs and a small web page.

The models load once, when the app is made. Inference runs on one worker thread, so requests queue for the
CPU or GPU instead of fighting over it, and the event loop stays free to answer other requests meanwhile.
URL downloads run on a bounded pool of their own, each held to one deadline, so slow URLs cannot take the
threads that other work needs. Everything the service keeps is bounded: background jobs, the bytes of
videos waiting on disk, and request bodies; a client past a limit gets a JSON 4xx, never a reset or a hang.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, BinaryIO, Callable

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..inference.classify import VideoClassifier
from ..errors import VidtempoError
from ..inference.timeline import recorded_window_seconds
from .fetch import FetchError, check_url, download
from .guards import MULTIPART_ALLOWANCE, ApiKey, BodySizeLimit, DrainBeforeEarlyAnswer
from .jobs import DiskBudget, Full, HeldVideo, Job, JobTable
from .observe import Metrics, Observe
from .settings import ServiceSettings

# Reachable without the API key: the page (it asks for the key) and the health check (for load balancers).
OPEN_PATHS = frozenset({"/", "/health"})
COPY_CHUNK_BYTES = 1 << 20
log = logging.getLogger("vidtempo.serve")


class UrlRequest(BaseModel):
    url: str
    thumbnails: bool = False
    timeline: bool = False


class Service:
    """The classifier, its inference thread, the download pool, the job table and the videos on disk."""

    def __init__(self, classifier: VideoClassifier, settings: ServiceSettings) -> None:
        self.classifier, self.settings = classifier, settings
        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtempo-inference")
        self.downloads = ThreadPoolExecutor(max_workers=settings.max_downloads, thread_name_prefix="vidtempo-fetch")
        self.jobs = JobTable(settings.max_jobs)
        self.disk = DiskBudget(settings.max_disk_bytes)
        self.metrics = Metrics(self.gauges)
        self.tasks: set[asyncio.Task] = set()  # the running jobs; the event loop keeps only weak references
        self.waiting_for_inference = self.downloading = 0
        self.loaded_at = time.time()
        self.workdir = tempfile.TemporaryDirectory(prefix="vidtempo-serve-")

    def hold(self, name: str, size: int) -> HeldVideo:
        """A new file in the work folder for the video the client calls ``name``, its bytes reserved."""
        self.disk.reserve(size)
        suffix = "".join(ch for ch in Path(name.split("?")[0]).suffix[:8] if ch.isalnum() or ch == ".")
        return HeldVideo(Path(self.workdir.name) / f"{uuid.uuid4().hex}{suffix}", name, self.disk, size)

    async def save_upload(self, upload: UploadFile) -> HeldVideo:
        limit = self.settings.max_upload_bytes
        if upload.size is not None and upload.size > limit:
            raise HTTPException(413, f"upload larger than the {self.settings.max_upload_mb:g} MB limit")
        video = self.hold(Path(upload.filename or "video").name or "video", upload.size or limit)
        try:
            size = await run_in_threadpool(_copy_limited, upload.file, video.path, limit)
        except BaseException:
            video.discard()
            raise
        if size == 0:
            video.discard()
            raise HTTPException(400, "the uploaded file is empty")
        video.settle(size)
        return video

    def claim_url(self, url: str) -> HeldVideo:
        """Check the URL (4xx at once for a malformed or refused one) and reserve room for its video."""
        try:
            check_url(url, self.settings.allow_private_urls)
        except FetchError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return self.hold(url, self.settings.max_upload_bytes)

    async def fetch(self, video: HeldVideo) -> HeldVideo:
        """Download the URL ``video`` was claimed for; the deadline counts the wait for a download slot."""
        s, started = self.settings, time.monotonic()

        def work() -> None:
            download(video.name, video.path, s.max_upload_bytes, s.url_timeout_s, s.allow_private_urls, started)

        self.downloading += 1
        try:
            await _run_in(self.downloads, work, video.discard)
        except FetchError as exc:
            video.discard()
            raise HTTPException(exc.status, str(exc)) from None
        finally:
            self.downloading -= 1
        video.settle(video.path.stat().st_size)
        return video

    async def classify(self, video: HeldVideo, thumbnails: bool, job: Job | None = None,
                       timeline: bool = False) -> dict[str, Any]:
        """The classifier's result for ``video``, named as the client named it; the file is deleted after."""
        def progress(stage: str, fraction: float) -> None:
            if job is not None:
                job.status, job.stage, job.progress = "running", stage, fraction

        def work() -> dict[str, Any]:
            started = time.perf_counter()
            try:
                if timeline and recorded_window_seconds(self.classifier) is not None:
                    result = self.classifier.timeline(video.path, thumbnails=thumbnails)
                else:
                    result = self.classifier.classify_file(video.path, thumbnails=thumbnails, progress=progress)
            finally:
                video.discard()
            # Only videos classified count: an upload that is not a video (422) is no inference.
            self.metrics.inference.observe(time.perf_counter() - started)
            return result

        self.waiting_for_inference += 1
        try:
            result = await _run_in(self.inference, work, video.discard)
        except VidtempoError as exc:
            raise HTTPException(422, video.redact(str(exc))) from None
        finally:
            self.waiting_for_inference -= 1
        return {**result, "video": video.name}

    def run_job(self, job: Job, video: HeldVideo, thumbnails: bool, fetch: bool = False,
                timeline: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._job(job, video, thumbnails, fetch, timeline))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _job(self, job: Job, video: HeldVideo, thumbnails: bool, fetch: bool, timeline: bool = False) -> None:
        try:
            if fetch:
                job.stage = "downloading"
                await self.fetch(video)
            job.result = await self.classify(video, thumbnails, job, timeline)
            job.status, job.stage, job.progress = "done", "done", 1.0
        except HTTPException as exc:
            job.status, job.error = "failed", str(exc.detail)
        except Exception:  # a bug: logged in full, reported on the job without server details
            log.exception("job %s failed", job.id)
            job.status, job.error = "failed", "internal error"
        finally:
            video.discard()
            self.jobs.finish(job)

    def gauges(self) -> dict[str, Any]:
        return {"vidtempo_inference_queue_depth": self.waiting_for_inference, "vidtempo_jobs": self.jobs.counts(),
                "vidtempo_downloads_in_flight": self.downloading, "vidtempo_video_bytes_held": self.disk.held}

    async def close(self) -> None:
        """Let running jobs finish (up to the shutdown timeout), then stop the workers and remove the files."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.settings.shutdown_timeout_s)
        for task in list(self.tasks):
            task.cancel()
        self.inference.shutdown(wait=False, cancel_futures=True)
        self.downloads.shutdown(wait=False, cancel_futures=True)
        self.workdir.cleanup()


async def _run_in(pool: ThreadPoolExecutor, work: Callable[[], Any], on_abandon: Callable[[], None]) -> Any:
    """``work()`` on ``pool``; if the caller is cancelled before it starts, it never runs and ``on_abandon`` does."""
    future = pool.submit(work)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if future.cancel():
            on_abandon()
        raise


def _copy_limited(source: BinaryIO, destination: Path, limit: int) -> int:
    source.seek(0)
    size = 0
    with open(destination, "wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload larger than the {limit / (1 << 20):g} MB limit")
            out.write(chunk)
    return size


def create_app(classifier: VideoClassifier, settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    service = Service(classifier, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await service.close()

    app = FastAPI(title="vidtempo", version=__version__, lifespan=lifespan,
                  description="Classify videos by content type with a temporal ensemble.")
    app.state.service = service
    _add_guards(app, service)
    _add_routes(app, service)
    return app


def _add_guards(app: FastAPI, service: Service) -> None:
    """Innermost first: the body limit, the API key, draining before early answers, then metrics and logs."""
    settings = service.settings
    app.add_middleware(BodySizeLimit, max_upload_bytes=settings.max_upload_bytes)
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key, open_paths=OPEN_PATHS)
    app.add_middleware(DrainBeforeEarlyAnswer, max_bytes=2 * (settings.max_upload_bytes + MULTIPART_ALLOWANCE))
    app.add_middleware(Observe, metrics=service.metrics, routes=app.routes)

    @app.exception_handler(Full)
    async def full(request: Request, exc: Full) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)


def _add_routes(app: FastAPI, service: Service) -> None:
    _add_info_routes(app, service)
    _add_predict_routes(app, service)
    _add_job_routes(app, service)


def _add_info_routes(app: FastAPI, service: Service) -> None:
    """The web page, health, metrics and categories."""
    classifier, settings = service.classifier, service.settings
    page = files("vidtempo.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "runtime": classifier.runtime,
                "members": len(classifier.ensemble),
                "categories": classifier.categories, "tta": classifier.tta, "loaded_at": service.loaded_at,
                "max_upload_mb": settings.max_upload_mb, "api_key_required": settings.api_key is not None}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/categories")
    async def categories() -> dict[str, Any]:
        return {"categories": classifier.categories}


def _add_predict_routes(app: FastAPI, service: Service) -> None:
    """Classify an upload or a URL and answer with the result."""

    @app.post("/predict")
    async def predict(file: UploadFile = File(...), thumbnails: bool = Query(False),
                      timeline: bool = Query(False)) -> dict[str, Any]:
        """Classify an uploaded video and wait for the result (with ``timeline``, also its segments over time)."""
        return await service.classify(await service.save_upload(file), thumbnails, timeline=timeline)

    @app.post("/predict/url")
    async def predict_url(body: UrlRequest) -> dict[str, Any]:
        """Download a video (http or https) and classify it."""
        return await service.classify(await service.fetch(service.claim_url(body.url)), body.thumbnails,
                                      timeline=body.timeline)


def _add_job_routes(app: FastAPI, service: Service) -> None:
    """Classify in the background: create a job, poll it."""

    @app.post("/jobs", status_code=202)
    async def create_job(file: UploadFile = File(...), thumbnails: bool = Query(False),
                         timeline: bool = Query(False)) -> dict[str, Any]:
        """Classify an uploaded video in the background; poll ``GET /jobs/{job_id}`` for progress."""
        job = service.jobs.add(Path(file.filename or "video").name)
        try:
            video = await service.save_upload(file)
        except BaseException:
            service.jobs.drop(job)
            raise
        service.run_job(job, video, thumbnails, timeline=timeline)
        return job.public()

    @app.post("/jobs/url", status_code=202)
    async def create_url_job(body: UrlRequest) -> dict[str, Any]:
        """Download and classify a video in the background."""
        video = service.claim_url(body.url)
        try:
            job = service.jobs.add(body.url)
        except BaseException:
            video.discard()
            raise
        service.run_job(job, video, body.thumbnails, fetch=True, timeline=body.timeline)
        return job.public()

    @app.get("/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]}")
        return job.public()
