"""What the HTTP service allows; ``vidtempo serve`` reads its option defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import VidtempoError

# The environment variable that can hold the API key instead of --api-key (keeps it out of `ps` output).
API_KEY_ENV = "VIDTEMPO_API_KEY"


@dataclass
class ServiceSettings:
    max_upload_mb: float = 200  # largest upload or download
    allow_private_urls: bool = False  # URLs may reach private addresses and ports other than 80/443
    url_timeout_s: float = 60.0  # one deadline for a whole URL fetch, waiting for a download slot included
    max_downloads: int = 4  # URL downloads at once, apart from inference
    max_jobs: int = 32  # background jobs queued or running
    max_disk_mb: float = 2048  # bytes of videos waiting to be classified
    max_connections: int = 256  # connections served at once
    api_key: str | None = None
    shutdown_timeout_s: float = 30.0  # what requests and jobs in flight get to finish after SIGTERM
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this (408 after)
    body_timeout_s: float = 120.0  # a body must arrive at least as fast as max_upload_mb in this time

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "url_timeout_s", "max_downloads", "max_jobs", "max_connections",
                     "shutdown_timeout_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise VidtempoError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_disk_mb < self.max_upload_mb:
            raise VidtempoError(f"max_disk_mb ({self.max_disk_mb:g}) must be at least max_upload_mb "
                                f"({self.max_upload_mb:g}): one upload has to fit")
        self.api_key = self.api_key or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def min_body_rate(self) -> float:
        """Bytes per second below which a request body is cut off (after a grace of ``header_timeout_s``)."""
        return self.max_upload_bytes / self.body_timeout_s

    @property
    def max_disk_bytes(self) -> int:
        return int(self.max_disk_mb * (1 << 20))
