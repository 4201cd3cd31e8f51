"""``vidtempo extract``: arguments and the command itself, for the top-level CLI to mount."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import VidtempoError
from ..sharding import resolve_shard
from ..store import SPLITS
from .backbones import DEFAULT_BACKBONE, backbone_names
from .extractor import ExtractionFailed, extract_features
from .settings import ExtractionSettings, RunOptions
from .shards import merge_all


def add_extract_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--videos-dir", required=True, help="folder with {split}/{Category}/**/*.mp4 videos")
    parser.add_argument("--output-dir", required=True, help="folder for the {split}_features*.h5 files")
    parser.add_argument("--frames", type=int, default=64, help="frames sampled per video (default 64)")
    parser.add_argument("--image-size", type=int, default=256, help="square crop fed to the CNN (default 256)")
    parser.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        choices=backbone_names(),
        help=f"frozen ImageNet CNN (default {DEFAULT_BACKBONE}; the others need torchvision)",
    )
    parser.add_argument("--weights", default=None, metavar="FILE", help="offline weights file for the backbone")
    parser.add_argument(
        "--no-multi-scale",
        dest="multi_scale",
        action="store_false",
        help="store plain sequences (files without the _multiscale suffix)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="frames per CNN batch (default 32)")
    parser.add_argument(
        "--workers", type=int, default=None, help="decoder processes (default: half the CPU cores on a CPU)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    parser.add_argument(
        "--splits", default=None, help=f"comma-separated splits (default: those of {','.join(SPLITS)} present)"
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N|auto",
        help="extract only shard I of N (1-based) of each split into {split}_features{suffix}.shard-I-of-N.h5; "
        "join the shards with 'vidtempo merge-features'. auto: from a Slurm array, a Kubernetes Indexed Job "
        "(with VIDTEMPO_NUM_SHARDS) or torchrun",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo splits that are already extracted")
    parser.add_argument("--strict", action="store_true", help="stop with exit status 1 if any video fails")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def run_extract(args: argparse.Namespace) -> int:
    """Run the command. VidtempoError (bad input) propagates for the caller to report with exit status 2."""
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    shard = resolve_shard(args.shard) if getattr(args, "shard", None) is not None else None
    settings = ExtractionSettings(
        backbone=args.backbone,
        image_size=args.image_size,
        frames_per_video=args.frames,
        multi_scale=args.multi_scale,
        weights=args.weights,
    )
    options = RunOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        overwrite=args.overwrite,
        strict=args.strict,
        quiet=args.quiet,
    )
    try:
        extract_features(args.videos_dir, args.output_dir, settings, options, splits, shard=shard)
    except ExtractionFailed as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_merge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--features-dir", required=True, help="folder with the {split}_features*.shard-I-of-N.h5 files")
    parser.add_argument(
        "--splits", default=None, help="comma-separated splits (default: every split with shard files)"
    )
    parser.add_argument("--suffix", default=None, help="feature file suffix (default: the one the shard files have)")
    parser.add_argument("--delete-shards", action="store_true", help="remove the shard files once merged")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def run_merge(args: argparse.Namespace) -> int:
    """``vidtempo merge-features``. VidtempoError (missing or disagreeing shards) propagates: exit status 2."""
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    merged = merge_all(args.features_dir, splits, args.suffix, delete_shards=args.delete_shards)
    if not args.quiet:
        for split, path in merged.items():
            print(f"{split}: merged -> {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m vidtempo.extract.cli``), same behaviour as ``vidtempo extract``."""
    parser = add_extract_arguments(argparse.ArgumentParser(prog="vidtempo extract"))
    args = parser.parse_args(argv)
    try:
        return run_extract(args)
    except VidtempoError as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
