"""The service's bounded state: background jobs, and the videos held on disk until they are classified."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a client told to come back later (HTTP 429) waits: about one classification of a short video.
RETRY_AFTER_S = 5
# Finished jobs stay this long for their client to poll the result, fewer if the table is full.
JOB_RETENTION_S = 900


class Full(Exception):
    """The service is at a limit; the client may retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    name: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
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


class JobTable:
    """At most ``max_active`` jobs queued or running; finished ones are kept ``JOB_RETENTION_S``, at most
    ``keep_finished`` of them (the oldest go first). Used from the event loop only."""

    def __init__(self, max_active: int, keep_finished: int | None = None) -> None:
        self.max_active = max_active
        self.keep_finished = keep_finished if keep_finished is not None else 4 * max_active
        self._jobs: dict[str, Job] = {}

    def add(self, name: str) -> Job:
        self._forget_finished()
        active = sum(job.finished_at is None for job in self._jobs.values())
        if active >= self.max_active:
            raise Full(f"too many background jobs ({active} queued or running); retry later")
        job = Job(name=name)
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def drop(self, job: Job) -> None:
        self._jobs.pop(job.id, None)

    def finish(self, job: Job) -> None:
        job.finished_at = time.monotonic()
        self._forget_finished()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    def __len__(self) -> int:
        return len(self._jobs)

    def _forget_finished(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at)
        cutoff = time.monotonic() - JOB_RETENTION_S
        excess = len(finished) - self.keep_finished
        for index, job in enumerate(finished):
            if index < excess or job.finished_at < cutoff:
                del self._jobs[job.id]


class DiskBudget:
    """Bytes of videos on disk waiting to be classified; a video that would pass ``max_bytes`` is refused."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.held = max_bytes, 0
        self._lock = threading.Lock()  # videos are deleted from worker threads

    def reserve(self, size: int) -> None:
        with self._lock:
            if self.held + size > self.max_bytes:
                raise Full(f"the server holds {self.held / (1 << 20):.0f} MB of videos waiting to be classified; "
                           "retry later")
            self.held += size

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size


class HeldVideo:
    """A video file waiting for inference: its path, the name the client knows it by, and its disk reservation."""

    def __init__(self, path: Path, name: str, budget: DiskBudget, reserved: int) -> None:
        self.path, self.name, self._budget, self._reserved = path, name, budget, reserved
        self._lock = threading.Lock()

    def settle(self, size: int) -> None:
        """Count the file's real size instead of what was reserved before it was known (never more)."""
        with self._lock:
            size = min(size, self._reserved)
            self._budget.release(self._reserved - size)
            self._reserved = size

    def discard(self) -> None:
        """Delete the file and give its bytes back; safe to call more than once, from any thread."""
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._budget.release(self._reserved)
            self._reserved = 0

    def redact(self, message: str) -> str:
        """A message about the file that names it as the client does, not by the server's path."""
        return message.replace(str(self.path), self.name)
