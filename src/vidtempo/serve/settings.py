"""What the HTTP service allows; ``vidtempo serve`` reads its option defaults from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceSettings:
    max_upload_mb: float = 200
    allow_private_urls: bool = False
    url_timeout_s: float = 60.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))
