"""Videos in, one HDF5 feature file per split out.

Decoder worker processes (``decoder_pool``: started clean, watched from this process) decode and sample
frames while the main process runs the CNN on the previous video, so decoding and inference overlap. Each video's frames go through the
CNN in chunks of ``batch_size`` frames of that video only: a video's features then depend on nothing but the
video and the settings, so they are the same in every run and every split.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import h5py
import numpy as np
import torch

from ...errors import VidtempoError
from ...progress import progress_bar
from ...files import write_json
from ...runtime import resolve_device, usable_cores
from ..sharding import shard_items
from ..store import MEDIAN_SECONDS_ATTR, SplitWriter, median_seconds, parse_category_mapping, split_path
from .backbone_table import feature_dim
from .backbones import FrozenBackbone, build_backbone
from .catalog import VideoItem, scan_videos
from .multiscale import multiscale_sequence
from .resume import PartialSplit, Record
from .shards import SHARD_SECONDS_DATASET, shard_failures_path, shard_path
from .settings import ExtractionSettings, RunOptions
from .decoder_pool import DecoderPool
from .report import ExtractionReport, SplitReport
from .video import DecodedClip, VideoDecodeError, decode_clip, video_seconds

# How much to lower decoder processes' priority when they share the CPU with the CNN. The CNN's threads meet
# at a barrier after every layer, so a decoder that preempts one of them stalls them all; at a lower priority
# decoders take the cycles the CNN leaves idle (and all of them while it waits for the next video).
DECODER_NICENESS = 10
# Decodes submitted ahead of the one the CNN waits for, per decoder process.
DECODES_AHEAD_PER_WORKER = 2


class ExtractionFailed(Exception):
    """A video failed under ``strict``: the run stops with exit status 1 (not a usage error)."""


def failures_path(
    output_dir: str | os.PathLike, split: str, suffix: str = "", shard: tuple[int, int] | None = None
) -> Path:
    """Where the videos a split (or one shard of it) could not decode are listed, next to its feature file."""
    if shard is not None:
        return shard_failures_path(output_dir, split, suffix, *shard)
    return Path(output_dir) / f"{split}_failures{suffix}.json"


def default_workers(device: torch.device) -> int:
    """Decoder processes, from the cores this process may use (runtime.usable_cores). On a CPU they share
    the cores with the CNN, so leave it half of them."""
    cores = usable_cores()[0]
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return max(1, min(8, cores // 2))


class FeatureExtractor:
    """Turns videos into feature sequences with one set of ExtractionSettings."""

    def __init__(
        self,
        settings: ExtractionSettings | None = None,
        *,
        device: str = RunOptions.device,
        batch_size: int = RunOptions.batch_size,
        workers: int | None = None,
        backbone: FrozenBackbone | None = None,
        max_decode_seconds: float | None = RunOptions.max_decode_seconds,
        max_frame_pixels: int | None = RunOptions.max_frame_pixels,
    ):
        self.settings = settings or ExtractionSettings()
        self.max_decode_seconds = max_decode_seconds
        self.max_frame_pixels = max_frame_pixels
        self.device = resolve_device(device)
        if batch_size < 1:
            raise VidtempoError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        # 0 decodes in the calling process, with no watchdog (for profiling a decode; not for real runs).
        self.workers = default_workers(self.device) if workers is None else workers
        self._backbone = backbone
        self._single_decoder: DecoderPool | None = None  # for one file at a time (predict, the service)
        self._single_decoder_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: ExtractionSettings | Mapping[str, Any], **runtime: Any
    ) -> "FeatureExtractor":
        """An extractor that reproduces the features of a file whose attributes (or a checkpoint's copy of
        them) are ``settings``; ``runtime`` takes device, batch_size, workers."""
        if not isinstance(settings, ExtractionSettings):
            settings = ExtractionSettings.from_dict(settings)
        return cls(settings, **runtime)

    @property
    def backbone(self) -> FrozenBackbone:
        if self._backbone is None:
            self._backbone = build_backbone(self.settings.backbone, self.settings.weights, self.device)
        return self._backbone

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.settings.backbone)

    def frame_features(self, frames: torch.Tensor) -> np.ndarray:
        """CNN features of each frame: uint8 (or 0..1 float) ``[T, 3, S, S]`` -> float32 ``[T, D]``."""
        outputs = []
        for start in range(0, frames.shape[0], self.batch_size):
            chunk = frames[start : start + self.batch_size].to(self.device, non_blocking=True)
            outputs.append(self.backbone(chunk).cpu())
        return torch.cat(outputs).numpy()

    def sequence_features(self, frames: torch.Tensor) -> np.ndarray:
        """The stored sequence of a video from its sampled frames: ``[T, D]``, or ``[T', D]`` multi-scale."""
        features = self.frame_features(frames)
        if self.settings.multi_scale:
            features = multiscale_sequence(features, self.settings.scales)
        return np.ascontiguousarray(features, dtype=np.float32)

    def clip_decoder(self) -> functools.partial:
        """The picklable decode of one path into its sampled frames (a DecodedClip), with this run's limits."""
        return functools.partial(decode_clip, num_frames=self.settings.frames_per_video,
                                 image_size=self.settings.image_size, sampling=self.settings.sampling,
                                 max_seconds=self.max_decode_seconds, max_pixels=self.max_frame_pixels)

    def decode(self, path: str | os.PathLike) -> DecodedClip:
        """The sampled frames of one video file. Raises VideoDecodeError (a VidtempoError)."""
        return self.decode_with(self.clip_decoder(), path)

    def decode_with(self, decode: Callable[..., Any], path: str | os.PathLike) -> Any:
        """``decode(path)`` (picklable, raising VideoDecodeError) in this extractor's own decoder process,
        under the watchdog; calls from several threads share it. Raises VideoDecodeError."""
        if self.workers == 0:
            return decode(path)
        with self._single_decoder_lock:
            if self._single_decoder is None:
                self._single_decoder = DecoderPool(1, self.max_decode_seconds)
            pool = self._single_decoder
        return pool.submit(decode, path).result()

    def close(self) -> None:
        """Stop this extractor's decoder process for single files, if it started one."""
        with self._single_decoder_lock:
            if self._single_decoder is not None:
                self._single_decoder.close()
                self._single_decoder = None

    def extract_video(self, path: str | os.PathLike) -> np.ndarray:
        """Features of one video file, exactly as a split extraction would store them. Raises
        VideoDecodeError (a VidtempoError) when the file cannot be decoded."""
        return self.sequence_features(self.decode(path).frames)

    def decoded_videos(
        self, items: Sequence[VideoItem], decode: Callable[[Path], Any] | None = None
    ) -> Iterator[tuple[VideoItem, Any, str | None]]:
        """``(item, uint8 frames [T, 3, S, S] or None, failure reason or None)`` for each item in order,
        decoded by worker processes ahead of the caller, which runs the CNN on the previous video meanwhile.
        With ``decode`` (a picklable function of the path that raises VideoDecodeError), what it returns takes
        the frames' place. A decode that fails, overruns ``max_decode_seconds`` or kills its process is that
        item's failure reason; the others go on."""
        plain = decode is None
        decode = self.clip_decoder() if plain else decode
        if self.workers == 0:
            yield from self._decoded_here(items, decode, plain)
            return
        niceness = DECODER_NICENESS if self.device.type == "cpu" else 0
        with DecoderPool(self.workers, self.max_decode_seconds, niceness) as pool:
            results = pool.imap(decode, ((item.path,) for item in items), DECODES_AHEAD_PER_WORKER * self.workers)
            for item, (value, error) in zip(items, results):
                if error is not None:
                    yield item, None, error.removeprefix(f"{item.path}: ")
                else:
                    yield item, value.frames if plain else value, None

    @staticmethod
    def _decoded_here(items: Sequence[VideoItem], decode: Callable[..., Any], plain: bool
                      ) -> Iterator[tuple[VideoItem, Any, str | None]]:
        for item in items:
            try:
                value = decode(item.path)
            except VideoDecodeError as exc:
                yield item, None, str(exc).removeprefix(f"{item.path}: ")
                continue
            yield item, value.frames if plain else value, None

    def extract_split(
        self,
        split: str,
        items: Sequence[VideoItem],
        output_path: Path,
        category_mapping: Mapping[str, int],
        *,
        strict: bool = False,
        quiet: bool = False,
        shard: tuple[int, int] | None = None,
        split_videos: int | None = None,
        retry_failed: bool = False,
    ) -> SplitReport:
        """Extract ``items`` into ``output_path``, resuming saved progress; videos that failed in an earlier
        run stay failed unless ``retry_failed`` (``--overwrite``). The file appears under its final name only
        when complete. With ``shard`` (i, n), ``items`` are shard i of the split's ``split_videos`` videos: the
        file records that, its failures go to the shard's own list, and it may hold no video."""
        report = SplitReport(split=split, output=output_path, videos=len(items))
        partial = PartialSplit(output_path, self.settings.identity(), self.feature_dim)
        try:
            pending = [item for item in items
                       if (record := partial.finished(item)) is None or (retry_failed and record.failed)]
            report.resumed = len(items) - len(pending)
            started = time.perf_counter()
            self._run(split, pending, partial, report, strict=strict, quiet=quiet)
            report.seconds = time.perf_counter() - started
            self._write(
                items, partial, output_path, category_mapping, report, strict=strict, shard=shard,
                split_videos=split_videos,
            )
        except BaseException:
            partial.close()  # keep the progress for the next run
            raise
        partial.remove()
        return report

    def _run(
        self,
        split: str,
        pending: list[VideoItem],
        partial: PartialSplit,
        report: SplitReport,
        *,
        strict: bool,
        quiet: bool,
    ) -> None:
        if not pending:
            return
        started = time.perf_counter()
        with progress_bar(total=report.videos, initial=report.resumed, desc=split, unit="video", quiet=quiet) as bar:
            for item, frames, error in self.decoded_videos(pending):
                if frames is None:
                    partial.add_failure(item, error)
                    if strict:
                        raise ExtractionFailed(f"{item.video_id}: {error} (--strict)")
                else:
                    partial.add_features(item, self.sequence_features(frames))
                    report.extracted += 1
                    report.frames += int(frames.shape[0])
                bar.update(1)
                bar.set_postfix_str(f"{report.frames / max(time.perf_counter() - started, 1e-9):.1f} frames/s",
                                    refresh=False)

    def _write(
        self,
        items: Sequence[VideoItem],
        partial: PartialSplit,
        output_path: Path,
        category_mapping: Mapping[str, int],
        report: SplitReport,
        *,
        strict: bool,
        shard: tuple[int, int] | None = None,
        split_videos: int | None = None,
    ) -> None:
        kept: list[tuple[VideoItem, Record]] = []
        for item in items:
            record = partial.records.get(item.video_id)
            if record is None:
                report.failed.append((item.video_id, "changed or vanished during extraction"))
            elif record.failed:
                report.failed.append((item.video_id, record.error or "failed"))
            else:
                kept.append((item, record))
        suffix = self.settings.suffix
        failures_file = failures_path(output_path.parent, report.split, suffix, shard)
        if report.failed:
            _write_failures(failures_file, report)
            report.failures_file = failures_file
        elif failures_file.exists():
            failures_file.unlink()  # from an earlier run; nothing failed this time
        if strict and report.failed:
            video_id, reason = report.failed[0]
            raise ExtractionFailed(f"{video_id}: {reason} (--strict)")
        extra_attrs = self.settings.file_attrs()
        seconds = np.array([video_seconds(item.path) or np.nan for item, _ in kept], dtype=np.float64)
        if np.isfinite(seconds).any():
            extra_attrs[MEDIAN_SECONDS_ATTR] = median_seconds(seconds)
        if shard is not None:
            # A shard may hold no video (fewer videos than shards, or all of its own failed); the merge decides.
            extra_attrs.update(
                shard=shard[0],
                num_shards=shard[1],
                shard_videos=len(items),
                split_videos=len(items) if split_videos is None else split_videos,
            )
        elif not kept:
            raise VidtempoError(
                f"{report.split}: none of its {len(items)} videos could be decoded (listed in {failures_file})"
            )
        # The saved progress holds every sequence: copy them one by one, never the whole split at once.
        max_steps = max((record.steps for _, record in kept), default=0)
        # A shard keeps its videos' durations, so that the merge finds the median of the whole split.
        extra_datasets = {SHARD_SECONDS_DATASET: seconds} if shard is not None else None
        with SplitWriter(output_path, len(kept), max_steps, self.feature_dim, category_mapping,
                         self.settings.multi_scale, extra_attrs=extra_attrs, extra_datasets=extra_datasets) as writer:
            for item, record in kept:
                writer.add(partial.features(record), item.label, item.video_id)


def _write_failures(path: Path, report: SplitReport) -> None:
    payload = {
        "split": report.split,
        "failed": [{"video": video_id, "error": reason} for video_id, reason in report.failed],
    }
    write_json(payload, path)


def _existing_attrs(path: Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except OSError:
        return {}


def extract_features(
    videos_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: ExtractionSettings | None = None,
    options: RunOptions | None = None,
    splits: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
) -> ExtractionReport:
    """Extract every split of ``videos_dir`` into ``output_dir``. Raises VidtempoError for bad input and
    ExtractionFailed when a video fails under ``options.strict``.

    With ``shard=(i, n)`` only shard i of each split's videos is extracted, into its own shard file
    (``shards.shard_path``); ``shards.merge_shards`` joins the n shard files into the split file."""
    settings = settings or ExtractionSettings()
    options = options or RunOptions()
    catalog = scan_videos(videos_dir, splits)
    extractor = FeatureExtractor(settings, device=options.device, batch_size=options.batch_size, workers=options.workers,
                                 max_decode_seconds=options.max_decode_seconds,
                                 max_frame_pixels=options.max_frame_pixels)
    _ = extractor.backbone  # load it now: a missing torchvision or weights file is reported before anything else
    output_dir = Path(output_dir)
    report = ExtractionReport()
    todo: list[str] = []
    for split in catalog.splits:
        final = split_path(output_dir, split, settings.suffix)
        path = final if shard is None else shard_path(output_dir, split, settings.suffix, *shard)
        # A sharded run also keeps a split whose shards were merged already (and perhaps deleted).
        existing = next((p for p in (path, final) if p.exists()), None)
        if existing is not None and not options.overwrite:
            _check_existing(existing, settings, catalog.category_mapping)
            skipped = SplitReport(split=split, output=existing, videos=len(catalog.splits[split]), skipped=True)
            report.splits[split] = skipped
            if not options.quiet:
                print(skipped.summary())
        else:
            todo.append(split)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split in todo:
        items = catalog.splits[split]
        if not items:
            if not options.quiet:
                print(f"{split}: no videos, nothing to extract")
            continue
        if shard is None:
            path = split_path(output_dir, split, settings.suffix)
            split_report = extractor.extract_split(
                split, items, path, catalog.category_mapping, strict=options.strict, quiet=options.quiet,
                retry_failed=options.overwrite,
            )
        else:
            path = shard_path(output_dir, split, settings.suffix, *shard)
            split_report = extractor.extract_split(
                split, shard_items(items, *shard), path, catalog.category_mapping, strict=options.strict,
                quiet=options.quiet, shard=shard, split_videos=len(items), retry_failed=options.overwrite,
            )
        report.splits[split] = split_report
        split_report.announce(options.quiet)
    return report


def _check_existing(path: Path, settings: ExtractionSettings, category_mapping: Mapping[str, int]) -> None:
    """Raise VidtempoError if the finished file ``path`` was made with other settings or another mapping."""
    attrs = _existing_attrs(path)
    differing = settings.matches_attrs(attrs)
    if "category_mapping" in attrs and parse_category_mapping(attrs["category_mapping"], str(path)) != (
        category_mapping
    ):
        # Every split of one folder must share the mapping; the videos now imply another one.
        differing.append(f"category_mapping (now {json.dumps(category_mapping)})")
    if differing:
        raise VidtempoError(
            f"{path}: already extracted with other settings ({'; '.join(differing)}); "
            "use --overwrite to replace it"
        )
