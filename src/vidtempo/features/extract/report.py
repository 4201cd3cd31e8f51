"""What an extraction did, and how it is told to the user."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SplitReport:
    split: str
    output: Path
    videos: int = 0
    extracted: int = 0  # videos whose features this run computed
    resumed: int = 0  # videos taken from an interrupted run's saved progress
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video_id, reason)
    frames: int = 0  # frames that went through the CNN in this run
    seconds: float = 0.0
    skipped: bool = False  # already extracted, left as it was
    failures_file: Path | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"{self.split}: already extracted, kept {self.output} (use --overwrite to redo)"
        done = self.videos - len(self.failed)
        resumed = f" ({self.extracted} extracted, {self.resumed} resumed)" if self.resumed else ""
        parts = [
            f"{self.split}: {done}/{self.videos} videos done{resumed},",
            f"{len(self.failed)} failed,",
            f"{self.frames} frames in {self.seconds:.1f} s ({self.frames_per_second:.1f} frames/s)",
        ]
        return " ".join(parts) + f" -> {self.output}"

    def announce(self, quiet: bool) -> None:
        """Print the summary (unless quiet) and, always, where the failures are listed."""
        if not quiet:
            print(self.summary())
            for video_id, reason in self.failed:
                print(f"  failed: {video_id}: {reason}")
        if self.failed:
            print(
                f"vidtempo: warning: {self.split}: {len(self.failed)} video(s) could not be decoded, "
                f"listed in {self.failures_file}",
                file=sys.stderr,
            )


@dataclass
class ExtractionReport:
    splits: dict[str, SplitReport] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(len(r.failed) for r in self.splits.values())
