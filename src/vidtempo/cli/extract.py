"""``vidtempo extract``: arguments and the command itself, for the top-level CLI to mount."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .options import (add_decode_limit_options, add_device_option, add_quiet_option, add_suffix_option,
                      add_threads_option, decode_limits, default_of, use_threads, with_default)
from ..errors import VidtempoError
from ..features.sharding import resolve_shard
from ..features.store import MULTISCALE_SUFFIX, SPLITS
from ..features.extract.backbone_table import backbone_names
from ..features.extract.settings import SAMPLING_MODES, ExtractionSettings, RunOptions


def add_extract_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--videos-dir", required=True, help="folder with {split}/{Category}/**/*.mp4 videos")
    parser.add_argument("--output-dir", required=True, help="folder for the {split}_features*.h5 files")
    parser.add_argument("--frames", type=int, default=default_of(ExtractionSettings, "frames_per_video"),
                        help=with_default("frames sampled per video", ExtractionSettings, "frames_per_video"))
    parser.add_argument("--image-size", type=int, default=default_of(ExtractionSettings, "image_size"),
                        help=with_default("square crop fed to the CNN", ExtractionSettings, "image_size"))
    parser.add_argument("--backbone", default=default_of(ExtractionSettings, "backbone"), choices=backbone_names(),
                        help=with_default("frozen ImageNet CNN; all but efficientnet_lite0 need torchvision",
                                          ExtractionSettings, "backbone"))
    parser.add_argument("--weights", default=None, metavar="FILE", help="offline weights file for the backbone")
    parser.add_argument("--no-multi-scale", dest="multi_scale", action="store_false",
                        help=f"store plain sequences (files without the {MULTISCALE_SUFFIX} suffix)")
    parser.add_argument("--sampling", choices=SAMPLING_MODES, default=default_of(ExtractionSettings, "sampling"),
                        help=with_default("how sampled frames are found: exact (decode up to each), keyframe (the "
                                          "keyframe before each), auto (whole short videos; keyframes near their "
                                          "targets in long ones)", ExtractionSettings, "sampling"))
    add_decode_limit_options(parser)
    parser.add_argument("--batch-size", type=int, default=default_of(RunOptions, "batch_size"),
                        help=with_default("frames per CNN batch", RunOptions, "batch_size"))
    parser.add_argument("--workers", type=int, default=None,
                        help="decoder processes (default: half the CPU cores on a CPU)")
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("--splits", default=None,
                        help=f"comma-separated splits (default: those of {','.join(SPLITS)} present)")
    parser.add_argument(
        "--shard", default=None, metavar="I/N|auto",
        help="extract only shard I of N (1-based) of each split into {split}_features{suffix}.shard-I-of-N.h5; "
        "join the shards with 'vidtempo merge-features'. auto: from a Slurm array, a Kubernetes Indexed Job "
        "(with VIDTEMPO_NUM_SHARDS) or torchrun",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo splits that are already extracted")
    parser.add_argument("--strict", action="store_true", help="stop with exit status 1 if any video fails")
    add_quiet_option(parser, help="no progress bar or summary")
    return parser


def run_extract(args: argparse.Namespace) -> int:
    """Run the command. VidtempoError (bad input) propagates for the caller to report with exit status 2."""
    from ..features.extract.extractor import ExtractionFailed, extract_features

    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    shard = resolve_shard(args.shard) if getattr(args, "shard", None) is not None else None
    settings = ExtractionSettings(
        backbone=args.backbone,
        image_size=args.image_size,
        frames_per_video=args.frames,
        multi_scale=args.multi_scale,
        weights=args.weights,
        sampling=args.sampling,
    )
    options = RunOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        overwrite=args.overwrite,
        strict=args.strict,
        quiet=args.quiet,
        **decode_limits(args),
    )
    use_threads(args)
    try:
        extract_features(args.videos_dir, args.output_dir, settings, options, splits, shard=shard)
    except ExtractionFailed as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_merge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--features-dir", required=True, help="folder with the {split}_features*.shard-I-of-N.h5 files")
    parser.add_argument("--splits", default=None, help="comma-separated splits (default: every split with shard files)")
    add_suffix_option(parser, help="feature file suffix (default: the one the shard files have)")
    parser.add_argument("--delete-shards", action="store_true", help="remove the shard files once merged")
    add_quiet_option(parser, help="print nothing on success")
    return parser


def run_merge(args: argparse.Namespace) -> int:
    """``vidtempo merge-features``. VidtempoError (missing or disagreeing shards) propagates: exit status 2."""
    from ..features.extract.shards import merge_all

    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    merged = merge_all(args.features_dir, splits, args.suffix, delete_shards=args.delete_shards)
    if not args.quiet:
        for split, path in merged.items():
            print(f"{split}: merged -> {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m vidtempo.cli.extract``), same behaviour as ``vidtempo extract``."""
    parser = add_extract_arguments(argparse.ArgumentParser(prog="vidtempo extract"))
    args = parser.parse_args(argv)
    try:
        return run_extract(args)
    except VidtempoError as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
