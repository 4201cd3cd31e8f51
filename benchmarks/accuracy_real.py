"""Accuracy of training recipes on small real public time-series classification sets, and on the demo's clips.

Each item of these sets is, like a video in vidtempo, a sequence of feature vectors with a class label. Every
(set, variant, seed) run trains an ensemble with one small configuration (TRAINING_CONFIG, MODEL_CONFIG below)
plus the variant's TrainingConfig overrides (VARIANTS) and records its test accuracy. Run:

    python benchmarks/accuracy_real.py [--sets ArrowHead,BasicMotions] [--variants "seed recipe,bucket"]
        [--seeds 1,2,3] [--epochs 60] [--jobs 1] [--results-dir ~/.cache/vidtempo/accuracy_real]
        [--cache-dir ~/.cache/vidtempo] [--aeon-wheel aeon-1.6.0-py3-none-any.whl]

Data. The sets ship as ``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts`` inside the aeon wheel on PyPI:
the wheel is downloaded once with ``pip download aeon --no-deps --only-binary=:all:`` into
``CACHE/aeon`` (or given with ``--aeon-wheel``) and read with zipfile; aeon itself is never imported. The
"demo clips" set is the demo's real clips (``vidtempo demo``), its features extracted once into
``CACHE/accuracy_real_demo``.

Preprocessing, one rule for every set. Each item becomes a sequence of at most MAX_STEPS frames: the series is
cut into non-overlapping patches of p = ceil(longest length in the set / MAX_STEPS) time points, and an item
of length L has ceil(L / p) frames. As vidtempo's frames come from a frozen CNN, a frame's features come from
a frozen bank of FEATURE_KERNELS random dilated convolutions over the series (all dimensions): the mean and
the max of each over the frame's time points. Missing values ('?') carry the last value
forward (0 before the first). Validation is a stratified VAL_FRACTION of the archive's train split (fixed
seed); test is the archive's own test split.

Results. Each run's result is a JSON file in ``--results-dir``, named by the set, the seed and a hash of
everything that decides the run (data, model, resolved TrainingConfig, members); runs already there are
skipped, so a killed benchmark continues where it stopped and a changed setting trains anew. Variants that
resolve to the same TrainingConfig share their runs. Override keys this TrainingConfig does not know are
dropped (one line says which), so the table works before and after new settings exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from vidtempo import EnhancedTemporalModelTrainer, ModelConfig, TrainingConfig
from vidtempo._version import __version__
from vidtempo.config import make_config
from vidtempo.files import write_json
from vidtempo.features.store import SPLITS, read_split, split_path, write_split

MAX_STEPS = 64
# Frame features. vidtempo's frames are rich vectors from a frozen pretrained CNN. A patch's raw values are not:
# 1 to 12 numbers, whose overall level the model's input projection (Linear + LayerNorm) normalises away, and
# the level is what most of these sets' classes differ by (on raw patches the model stayed at chance on
# ArrowHead, at 51% on ItalyPowerDemand). The stand-in for the CNN is a frozen bank of random dilated
# convolutions (Dempster et al. 2020, ROCKET), pooled over each frame's time points.
FEATURE_KERNELS = 64
KERNEL_LENGTH = 9
DILATIONS = (1, 2, 4, 8)
BANK_SEED = 0
VAL_FRACTION = 0.25
SPLIT_SEED = 0
DEMO_SET = "demo clips"
NUM_MEMBERS = 3
# Run seed s trains member i with seed RUN_SEED_STRIDE * s + i - 1 (a collapse retry adds multiples of
# NUM_MEMBERS). With seed s itself, the runs of seeds 1, 2 and 3 would share two of their three members
# (seeds 2 and 3), and their spread would understate the seed-to-seed spread.
RUN_SEED_STRIDE = 100

# One configuration for every set (the demo clips too: feature_dim and num_classes come from the files).
MODEL_CONFIG = {"hidden_dim": 64, "num_lstm_layers": 2, "num_attention_heads": 4, "dropout": 0.3}
# Batches of 8 and up to 100 epochs give the smallest sets (27 training items) a few hundred steps; with
# batches of 16 and 60 epochs the members stopped before they had learned anything. No collapse retries: they
# would multiply the time of a run without changing what the variants are compared on.
TRAINING_CONFIG = {"batch_size": 8, "learning_rate": 1e-3, "num_epochs": 100, "patience": 40,
                   "checkpoint_every": 0, "precision": "auto", "num_workers": 0, "collapse_retries": 0}

SEED_RECIPE = {"ensemble_strategy": "seeds", "weight_averaging": "none", "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
               "bucket_by_length": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "seed recipe": SEED_RECIPE,
    "cross_fit": {**SEED_RECIPE, "ensemble_strategy": "cross_fit"},
    "ema": {**SEED_RECIPE, "weight_averaging": "ema"},
    "mixup": {**SEED_RECIPE, "mixup_alpha": 0.4},
    "cutmix": {**SEED_RECIPE, "cutmix_alpha": 1.0},
    "bucket": {**SEED_RECIPE, "bucket_by_length": True},
    "default": {},  # TrainingConfig's defaults at the time of the run
}
BASELINE = "seed recipe"
# --recipe tuned: per set, `vidtempo tune`'s study (run_tuning) on the set's train + val, starting from the
# default recipe (its first trial), for at most --tune-minutes; then the best recipe trains like any variant.
TUNED = "tuned"
TUNE_TRIALS = 1000  # the time budget ends a study first
TUNE_SEED = 0  # the study's folds and sampler; the final runs use the run seeds
MAX_TUNE_MINUTES = 20


@dataclass(frozen=True)
class ArchiveSet:
    """A set of the archive with its documented sizes and its published 1-NN DTW test accuracy."""

    name: str
    train: int
    test: int
    classes: int
    dims: int
    length: int | None  # None: variable length
    dtw_accuracy: float | None  # None: no published number found


# Sizes and the published 1-NN DTW accuracy with a full warping window, as 1 - the error rate in column
# "DTW (w=100)" of the UCR Time Series Classification Archive (2018) DataSummary.csv. Read from the copy of
# that file at github.com/Chang-George-Dong/TrojanTime, DataSummary.csv (commit 72aef950); the copy at
# github.com/sensorlab/KAN_TS, DataSummary.csv (commit 5b57adf9) has the same values for the equal-length sets.
# BasicMotions (UEA multivariate archive): sizes from the archive (40/40 cases, 6 dimensions, length 100,
# 4 classes); accuracy 1-NN DTW_D 0.975 (DTW_I 1.000) from Bagnall et al. 2018, "The UEA multivariate time
# series classification archive, 2018" (arXiv:1811.00075), as quoted in the table of github.com/pfmarteau/teNN,
# README.md (columns DTW-1NN-D, DTW-1NN-I).
ARCHIVE_SETS = (
    ArchiveSet("PickupGestureWiimoteZ", 50, 50, 10, 1, None, 1 - 0.3400),
    ArchiveSet("BasicMotions", 40, 40, 4, 6, 100, 0.975),
    ArchiveSet("ArrowHead", 36, 175, 3, 1, 251, 1 - 0.2971),
    ArchiveSet("OSULeaf", 200, 242, 6, 1, 427, 1 - 0.4091),
    ArchiveSet("ACSF1", 100, 100, 10, 1, 1460, 1 - 0.3600),
    ArchiveSet("ItalyPowerDemand", 67, 1029, 2, 1, 24, 1 - 0.0496),
)
PUBLISHED_NOTE = ("1-NN DTW: UCR archive 2018 DataSummary.csv, 1 - error of 'DTW (w=100)'; BasicMotions: UEA archive "
                  "paper (Bagnall et al. 2018), 1-NN DTW_D (DTW_I: 100.0)")
SET_NAMES = tuple(s.name for s in ARCHIVE_SETS) + (DEMO_SET,)


def fail(message: str) -> None:
    print(f"accuracy_real.py: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------- .ts format
@dataclass
class TsData:
    series: list[np.ndarray]  # one float32 [dims, length] array per item, missing values filled
    labels: list[str]
    class_labels: list[str]  # the header's @classLabel list, in its order (empty when it gives none)


def parse_ts(text: str, where: str = "<ts>") -> TsData:
    """Parse a .ts file: '@' header lines up to '@data', then one item per line, its dimensions separated by
    ':', their values by ',', the class label last; '?' marks a missing value. '#' lines are comments."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    start = next((i for i, line in enumerate(lines) if line.lower() == "@data"), None)
    if start is None:
        raise ValueError(f"{where}: no @data line")
    header = _parse_header(lines[:start], where)
    items = [_parse_item(line, where, row) for row, line in enumerate(lines[start + 1:], 1)]
    dims = {values.shape[0] for values, _ in items}
    if len(dims) > 1:
        raise ValueError(f"{where}: items have different numbers of dimensions {sorted(dims)}")
    return TsData([values for values, _ in items], [label for _, label in items], header.get("classlabel", []))


def _parse_header(lines: list[str], where: str) -> dict[str, list[str]]:
    header = {}
    for line in lines:
        if not line.startswith("@"):
            raise ValueError(f"{where}: unexpected line before @data: {line[:60]!r}")
        key, *values = line[1:].split()
        header[key.lower()] = values
    if header.get("timestamps", ["false"])[0].lower() == "true":
        raise ValueError(f"{where}: series with time stamps are not supported")
    labels = header.get("classlabel", ["true"])
    if labels[0].lower() != "true":
        raise ValueError(f"{where}: the items have no class labels (@classLabel false)")
    header["classlabel"] = labels[1:]
    return header


def _parse_item(line: str, where: str, row: int) -> tuple[np.ndarray, str]:
    *dims, label = line.split(":")
    if not dims:
        raise ValueError(f"{where}: item {row} has no values")
    try:
        values = [[math.nan if v.strip() == "?" else float(v) for v in dim.split(",") if v.strip()] for dim in dims]
    except ValueError as exc:
        raise ValueError(f"{where}: item {row}: {exc}") from None
    length = max(len(v) for v in values)
    array = np.full((len(values), length), np.nan, dtype=np.float32)  # a shorter dimension is missing at its end
    for d, v in enumerate(values):
        array[d, : len(v)] = v
    return fill_missing(array), label.strip()


def fill_missing(values: np.ndarray) -> np.ndarray:
    """[dims, length] with NaN -> each NaN takes the last value before it in its dimension, 0 if none."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    last = np.where(missing, 0, np.arange(values.shape[1]))
    np.maximum.accumulate(last, axis=1, out=last)
    filled = np.take_along_axis(values, last, axis=1)
    return np.where(np.isnan(filled), 0.0, filled).astype(np.float32)


# ------------------------------------------------------------------------------------------- frames
def patch_size(longest: int, max_steps: int = MAX_STEPS) -> int:
    """Time points per frame, so that the longest item has at most ``max_steps`` frames."""
    return max(1, math.ceil(longest / max_steps))


def convolution_bank(dims: int) -> list[torch.nn.Conv1d]:
    """The frozen feature extractor: FEATURE_KERNELS random convolutions over all ``dims`` dimensions,
    KERNEL_LENGTH taps, an equal share at each of DILATIONS; zero-mean normal weights and uniform biases in
    [-1, 1] (as in ROCKET), drawn from BANK_SEED, so every set and run gets the same bank for its ``dims``."""
    generator = torch.Generator().manual_seed(BANK_SEED)
    bank = []
    for dilation in DILATIONS:
        conv = torch.nn.Conv1d(dims, FEATURE_KERNELS // len(DILATIONS), KERNEL_LENGTH, dilation=dilation,
                               padding=dilation * (KERNEL_LENGTH // 2))
        with torch.no_grad():
            weight = torch.randn(conv.weight.shape, generator=generator)
            conv.weight.copy_(weight - weight.mean(-1, keepdim=True))
            conv.bias.copy_(torch.rand(conv.bias.shape, generator=generator) * 2 - 1)
        bank.append(conv.requires_grad_(False))
    return bank


def frame_features(series: np.ndarray, patch: int, bank: list[torch.nn.Conv1d]) -> np.ndarray:
    """[dims, length] -> [ceil(length / patch), 2 * FEATURE_KERNELS]: frame t covers time points t*patch ..
    (t+1)*patch - 1 (the last frame: those the series has); its features are the mean, then the max, of each
    convolution's output over them."""
    length = series.shape[1]
    with torch.no_grad():
        channels = torch.cat([conv(torch.from_numpy(series)[None]) for conv in bank], dim=1)[0]  # [K, length]
    steps = math.ceil(length / patch)
    frames = np.zeros((steps, 2 * channels.shape[0]), dtype=np.float32)
    for t in range(steps):
        window = channels[:, t * patch : (t + 1) * patch]
        frames[t] = torch.cat([window.mean(1), window.amax(1)]).numpy()
    return frames


def frame_arrays(series: list[np.ndarray], patch: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Items as a zero-padded ``[N, max_frames, 2 * FEATURE_KERNELS]`` array and their frame counts."""
    bank = convolution_bank(series[0].shape[0])
    frames = [frame_features(s, patch, bank) for s in series]
    features = np.zeros((len(frames), max_frames, frames[0].shape[1]), dtype=np.float32)
    for row, f in enumerate(frames):
        features[row, : len(f)] = f
    return features, np.array([len(f) for f in frames], dtype=np.int32)


# ------------------------------------------------------------------------------------------- data sets
def aeon_wheel(given: Path | None, cache_dir: Path) -> Path:
    """The aeon wheel: ``given``, else the newest in ``cache_dir/aeon``, else downloaded there with pip."""
    if given is not None:
        if not zipfile.is_zipfile(given):
            fail(f"--aeon-wheel {given}: not a wheel (zip) file")
        return given
    folder = cache_dir / "aeon"
    if not list(folder.glob("aeon-*.whl")):
        command = [sys.executable, "-m", "pip", "download", "aeon", "--no-deps", "--only-binary=:all:", "-q",
                   "-d", str(folder)]
        if subprocess.run(command).returncode != 0:
            fail("pip could not download the aeon wheel; download it and pass --aeon-wheel PATH")
    return max(folder.glob("aeon-*.whl"), key=lambda p: p.stat().st_mtime)


def read_archive_set(wheel: Path, name: str) -> tuple[TsData, TsData]:
    with zipfile.ZipFile(wheel) as archive:
        parts = []
        for split in ("TRAIN", "TEST"):
            member = f"aeon/datasets/data/{name}/{name}_{split}.ts"
            try:
                text = archive.read(member).decode("utf-8", errors="replace")  # non-ASCII only in comments
            except KeyError:
                fail(f"{wheel}: has no {member}")
            parts.append(parse_ts(text, f"{wheel.name}:{member}"))
    return parts[0], parts[1]


def category_mapping(train: TsData, test: TsData) -> dict[str, int]:
    names = train.class_labels or sorted(set(train.labels) | set(test.labels))
    unknown = sorted((set(train.labels) | set(test.labels)) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the header's class list {names}")
    return {name: index for index, name in enumerate(names)}


def write_archive_set(spec: ArchiveSet, wheel: Path, folder: Path) -> dict[str, Any]:
    """Patch one set into feature stores ``folder/{train,val,test}_features.h5``; returns its summary."""
    train, test = read_archive_set(wheel, spec.name)
    mapping = category_mapping(train, test)
    lengths = [s.shape[1] for s in train.series + test.series]
    patch = patch_size(max(lengths))
    max_frames = math.ceil(max(lengths) / patch)
    labels = np.array([mapping[label] for label in train.labels])
    fit, val = train_test_split(np.arange(len(labels)), test_size=VAL_FRACTION, stratify=labels,
                                random_state=SPLIT_SEED)
    parts = {"train": (train, np.sort(fit)), "val": (train, np.sort(val)), "test": (test, np.arange(len(test.labels)))}
    for split, (data, rows) in parts.items():
        features, num_frames = frame_arrays([data.series[i] for i in rows], patch, max_frames)
        write_split(split_path(folder, split), features, [mapping[data.labels[i]] for i in rows], num_frames,
                    mapping, multi_scale=False, video_ids=[f"{spec.name}_{split}_{i}" for i in rows])
    return {"set": spec.name, **{s: len(rows) for s, (_, rows) in parts.items()}, "classes": len(mapping),
            "dims": train.series[0].shape[0], "length": (min(lengths), max(lengths)), "patch": patch,
            "frames": max_frames, "feature_dim": 2 * FEATURE_KERNELS}


def archive_check(spec: ArchiveSet, summary: dict[str, Any]) -> str:
    """'ok', or what differs from the archive's documented sizes."""
    lo, hi = summary["length"]
    read = {"train": summary["train"] + summary["val"], "test": summary["test"], "classes": summary["classes"],
            "dims": summary["dims"]}
    issues = [f"{k} {v} (archive: {getattr(spec, k)})" for k, v in read.items() if v != getattr(spec, k)]
    if spec.length is not None and (lo, hi) != (spec.length, spec.length):
        issues.append(f"length {lo}..{hi} (archive: {spec.length})")
    if spec.length is None and lo == hi:
        issues.append(f"length {lo} for all items (archive: variable)")
    return "ok" if not issues else "MISMATCH: " + "; ".join(issues)


def demo_features(cache_dir: Path) -> dict[str, Any]:
    """The demo's clips (vidtempo.demo.videos) as features extracted with the demo's settings, once, into
    ``cache_dir``; returns where they are and what identifies them."""
    from vidtempo.demo.run import DEMO_EXTRACTION
    from vidtempo.demo.videos import build_demo_videos
    from vidtempo.errors import VidtempoError
    from vidtempo.features.extract import ExtractionSettings, RunOptions, extract_features

    settings = ExtractionSettings(**DEMO_EXTRACTION)
    folder = cache_dir / "accuracy_real_demo"
    if not all(split_path(folder / "features", s, settings.suffix).is_file() for s in SPLITS):
        try:
            videos = build_demo_videos(folder / "videos")
            extract_features(videos.root, folder / "features", settings, RunOptions(device="cpu", quiet=True))
        except VidtempoError as exc:
            fail(f"demo clips: {exc}")
    return {"dir": folder / "features", "suffix": settings.suffix, "data_id": {"demo_extraction": DEMO_EXTRACTION}}


def demo_summary(features_dir: Path, suffix: str) -> dict[str, Any]:
    splits = {s: read_split(split_path(features_dir, s, suffix)) for s in SPLITS}
    frames = np.concatenate([s.num_frames for s in splits.values()])
    return {"set": DEMO_SET, **{name: split.num_videos for name, split in splits.items()},
            "classes": splits["train"].num_classes, "dims": splits["train"].feature_dim,
            "length": (int(frames.min()), int(frames.max())), "patch": "-", "frames": splits["train"].max_frames,
            "feature_dim": splits["train"].feature_dim}


# ------------------------------------------------------------------------------------------- runs
def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The overrides TrainingConfig knows, and the names of those it does not (yet)."""
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    return {k: v for k, v in overrides.items() if k in known}, [k for k in overrides if k not in known]


def resolved_training(variant: str, seed: int, epochs: int, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variant's TrainingConfig for one run, as the dict the trainer gets (every field spelled out). The
    tuned recipe brings its own schedule (epochs included)."""
    if variant == TUNED:
        config = {**TRAINING_CONFIG, **tuned["training_config"], "seed": RUN_SEED_STRIDE * seed}
    else:
        applied, _ = split_overrides(VARIANTS[variant])
        config = {**TRAINING_CONFIG, **applied, "num_epochs": epochs, "seed": RUN_SEED_STRIDE * seed}
    return dataclasses.asdict(make_config(TrainingConfig, config))


def run_key(data_id: dict[str, Any], model: dict[str, Any], training: dict[str, Any]) -> str:
    """A hash of everything that decides a run's result (workers only change the speed)."""
    decided = {"data": data_id, "model": model, "members": NUM_MEMBERS,
               "training": {k: v for k, v in training.items() if k != "num_workers"}}
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:12]


def plan_runs(data: dict[str, dict[str, Any]], variants: list[str], seeds: list[int], epochs: int,
              results_dir: Path, tuned: dict[str, dict[str, Any]] | None = None
              ) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(set, variant, seed) -> its run: the model and training configs, result path and where its features are.
    The tuned variant is planned for the sets in ``tuned`` (set -> its tuning result) only."""
    plan = {}
    for seed in seeds:
        for variant in variants:
            for name, source in data.items():
                if variant == TUNED and name not in (tuned or {}):
                    continue
                recipe = (tuned or {}).get(name) if variant == TUNED else None
                model = {**MODEL_CONFIG, **recipe["model_config"]} if recipe else MODEL_CONFIG
                training = resolved_training(variant, seed, epochs, recipe)
                key = run_key(source["data_id"], model, training)
                path = results_dir / f"{name.replace(' ', '-')}__seed{seed}__{key}.json"
                plan[name, variant, seed] = {"set": name, "variant": variant, "seed": seed, "training": training,
                                             "model": model, "result_path": str(path),
                                             "features_dir": str(source["dir"]), "suffix": source["suffix"],
                                             "key": key}
    return plan


def run_training(job: dict[str, Any]) -> dict[str, Any]:
    """Train and score one ensemble in a fresh folder; write and return its result."""
    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidtempo-accuracy-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse retries and the like are recorded in the result instead
        trainer = EnhancedTemporalModelTrainer(job["features_dir"], Path(tmp) / "checkpoints", device="auto",
                                               model_config=job["model"], training_config=job["training"],
                                               quiet=True)
        _, results = trainer.train_ensemble(num_models=NUM_MEMBERS, feature_file_suffix=job["suffix"],
                                            results_dir=Path(tmp) / "results")
        record_path = Path(tmp) / "checkpoints" / "ensemble_model_1_config.json"
        precision = json.loads(record_path.read_text()).get("precision")
    record = {
        **{k: job[k] for k in ("set", "seed", "key", "training")},  # variants that resolve alike share it
        "model": job["model"], "members": NUM_MEMBERS, "precision": precision, "device": str(trainer.device),
        "threads": job["threads"], "seconds": round(time.perf_counter() - started, 1),
        "ensemble": results["ensemble"]["test"]["accuracy"],
        "ensemble_tta": results["ensemble"]["test_tta"]["accuracy"],
        "members_average": results["members_average"]["accuracy"],
        "members_average_tta": results["members_average"]["accuracy_tta"],
        "member_runs": [{"best_epoch": m["best_epoch"], "epochs_trained": m["epochs_trained"],
                         "attempts": len(m["collapse_check"]["attempts"])} for m in results["members"]],
        "vidtempo_version": __version__, "torch_version": torch.__version__,
    }
    write_json(record, job["result_path"])
    return record


def execute(jobs: list[dict[str, Any]], parallel: int, work=run_training
            ) -> Iterator[tuple[dict[str, Any], dict | BaseException]]:
    """Each job with ``work``'s result for it (or its exception), as they finish."""
    if parallel == 1:
        for job in jobs:
            try:
                yield job, work(job)
            except Exception as exc:  # one failed run does not stop the others
                yield job, exc
        return
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(work, job): job for job in jobs}
        for future in as_completed(futures):
            exc = future.exception()
            yield futures[future], exc if exc is not None else future.result()


def run_missing(plan: dict, parallel: int) -> None:
    """Train every planned run without a result yet (runs that share a result file train once)."""
    distinct: dict[str, dict[str, Any]] = {}
    for job in plan.values():  # variants that resolve alike share one run, named by the first
        distinct.setdefault(job["result_path"], job)
    threads = max(1, available_cores() // parallel)
    todo = [{**job, "threads": threads} for path, job in distinct.items() if not Path(path).is_file()]
    print(f"\n{len(plan)} (set, variant, seed) runs, {len(distinct)} distinct, {len(distinct) - len(todo)} with a "
          f"result already; training {len(todo)} ({parallel} at a time, {threads} torch threads each)")
    for done, (job, outcome) in enumerate(execute(todo, parallel), 1):
        where = f"[{done}/{len(todo)}] {job['set']} | {job['variant']} | seed {job['seed']}"
        if isinstance(outcome, BaseException):
            print(f"{where}: FAILED: {''.join(traceback.format_exception_only(outcome)).strip()}", flush=True)
            continue
        attempts = sum(m["attempts"] for m in outcome["member_runs"])
        print(f"{where}: ensemble {outcome['ensemble']:.1f}% (TTA {outcome['ensemble_tta']:.1f}%), members "
              f"{outcome['members_average']:.1f}%, {outcome['seconds']:.0f} s, {attempts} member runs", flush=True)


def tuning_jobs(data: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One study per set, in a folder named by everything that decides it."""
    jobs = []
    for name, source in data.items():
        decided = {"data": source["data_id"], "model": MODEL_CONFIG, "training": TRAINING_CONFIG,
                   "epochs": args.epochs, "members": NUM_MEMBERS, "minutes": args.tune_minutes, "seed": TUNE_SEED}
        key = hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:12]
        folder = args.results_dir / "tuning" / f"{name.replace(' ', '-')}__{key}"
        jobs.append({"set": name, "variant": "tuning", "seed": TUNE_SEED, "folder": str(folder),
                     "features_dir": str(source["dir"]), "suffix": source["suffix"], "epochs": args.epochs,
                     "budget_s": 60 * args.tune_minutes, "result_path": str(folder / "tuned.json")})
    return jobs


def run_tuning_job(job: dict[str, Any]) -> dict[str, Any]:
    """`vidtempo tune` on one set from the default recipe, within the budget; writes and returns its record."""
    from vidtempo.training.tuning import Recipe, run_tuning

    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    recipe = Recipe(MODEL_CONFIG, {**TRAINING_CONFIG, "num_epochs": job["epochs"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_tuning(job["features_dir"], job["folder"], job["suffix"], trials=TUNE_TRIALS,
                          timeout_s=job["budget_s"], seed=TUNE_SEED, folds=NUM_MEMBERS, quiet=True, device="auto",
                          recipe=recipe)
    record = {"set": job["set"], "seconds": round(time.perf_counter() - started, 1), "budget_s": job["budget_s"],
              "threads": job["threads"]}
    return choice_record(job, record)


def choice_record(job: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the study's trials and the recipe it hands on, chosen from the stored study as
    ``vidtempo tune`` chooses (so a change in how it chooses needs no new trials); written and returned."""
    import optuna

    from vidtempo.training.tuning import write_outputs

    study = optuna.load_study(study_name="vidtempo", storage=f"sqlite:///{Path(job['folder']) / 'study.db'}")
    splits = {s: read_split(split_path(Path(job["features_dir"]), s, job["suffix"])) for s in ("train", "val")}
    videos = sum(split.num_videos for split in splits.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = write_outputs(study, Path(job["folder"]), videos)
    top = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)  # pruned: one fold's
    states = [t.state.name.lower() for t in study.trials]
    record = {
        **record, "trials": {state: states.count(state) for state in sorted(set(states))},
        "best_trial": chosen["trial"], "best_value": chosen["value"], "chosen_because": chosen["why"],
        "top_trial": top.number, "top_value": top.value,
        "first_trial_value": study.trials[0].value,  # the default recipe's out-of-fold accuracy
        "model_config": json.loads((Path(job["folder"]) / "best_model_config.json").read_text()),
        "training_config": json.loads((Path(job["folder"]) / "best_training_config.json").read_text()),
    }
    write_json(record, job["result_path"])
    return record


def run_tuning_studies(jobs: list[dict[str, Any]], parallel: int) -> dict[str, dict[str, Any]]:
    """Run the studies without a result yet; returns set -> tuning record for every set that has one."""
    threads = max(1, available_cores() // parallel)
    todo = [{**job, "threads": threads} for job in jobs if not Path(job["result_path"]).is_file()]
    print(f"\ntuning: {len(jobs)} studies, {len(jobs) - len(todo)} done already; running {len(todo)} "
          f"({parallel} at a time, {threads} torch threads each, at most {jobs[0]['budget_s'] / 60:.0f} min "
          "of new trials each)" if jobs else "\ntuning: no sets")
    for job in jobs:  # studies already run: the recipe they hand on is chosen again, with no new trials
        if Path(job["result_path"]).is_file():
            choice_record(job, json.loads(Path(job["result_path"]).read_text()))
    for done, (job, outcome) in enumerate(execute(todo, parallel, run_tuning_job), 1):
        if isinstance(outcome, BaseException):
            print(f"[{done}/{len(todo)}] tuning {job['set']}: FAILED: "
                  f"{''.join(traceback.format_exception_only(outcome)).strip()}", flush=True)
            continue
        print(f"[{done}/{len(todo)}] tuning {job['set']}: chosen trial {outcome['best_trial']} "
              f"{outcome['best_value']:.1f}% out-of-fold (default recipe {outcome['first_trial_value']:.1f}%), "
              f"trials {outcome['trials']}, {outcome['seconds']:.0f} s", flush=True)
    return load_tuned(jobs)


def load_tuned(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """set -> tuning record, for the studies that have one."""
    return {job["set"]: json.loads(Path(job["result_path"]).read_text()) for job in jobs
            if Path(job["result_path"]).is_file()}


# ------------------------------------------------------------------------------------------- tables
def load_results(plan: dict) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(set, variant) -> the results of its seeds that exist."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (name, variant, _), job in plan.items():
        path = Path(job["result_path"])
        if path.is_file():
            found.setdefault((name, variant), []).append(json.loads(path.read_text()))
    return found


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def cell(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "") + f" (n={len(values)})"


def print_metric_table(title: str, metric: str, results: dict, sets: list[str], variants: list[str],
                       published: bool = False) -> None:
    print(f"\n{title}\n")
    print("| variant | " + " | ".join(sets) + " |")
    print("| --- |" + " --- |" * len(sets))
    for variant in variants:
        cells = [cell([r[metric] for r in results.get((name, variant), [])]) for name in sets]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    if published:
        dtw = {s.name: s.dtw_accuracy for s in ARCHIVE_SETS}
        cells = ["n/a" if dtw.get(name) is None else f"{100 * dtw[name]:.1f}" for name in sets]
        print("| 1-NN DTW (published) | " + " | ".join(cells) + " |")


def print_comparison(results: dict, sets: list[str], variants: list[str]) -> None:
    """Per variant: on how many sets its mean beats the seed recipe's, and its largest drop against the
    seed recipe's seed-to-seed spread on that set."""
    print(f"\nAgainst the {BASELINE} (ensemble test accuracy, means over seeds)\n")
    print(f"| variant | sets where it beats the {BASELINE} | largest drop (set) | {BASELINE} std on that set |")
    print("| --- | --- | --- | --- |")
    for variant in (v for v in variants if v != BASELINE):
        pairs = {name: (results[name, variant], results[name, BASELINE]) for name in sets
                 if results.get((name, variant)) and results.get((name, BASELINE))}
        if pairs and all({r["key"] for r in ours} == {r["key"] for r in base} for ours, base in pairs.values()):
            print(f"| {variant} | same TrainingConfig as the {BASELINE} here | - | - |")
            continue
        deltas = {name: mean_std([r["ensemble"] for r in ours])[0] - mean_std([r["ensemble"] for r in base])[0]
                  for name, (ours, base) in pairs.items()}
        print(f"| {variant} | " + " | ".join(_comparison_cells(deltas, results)) + " |")


def _comparison_cells(deltas: dict[str, float], results: dict) -> list[str]:
    if not deltas:
        return ["-", "-", "-"]
    wins = sum(d > 0 for d in deltas.values())
    worst = min(deltas, key=deltas.get)
    if deltas[worst] >= 0:
        return [f"{wins} of {len(deltas)}", "none", "-"]
    base_std = mean_std([r["ensemble"] for r in results[worst, BASELINE]])[1]
    return [f"{wins} of {len(deltas)}", f"{deltas[worst]:+.1f} ({worst})", "-" if base_std is None else f"{base_std:.1f}"]


def print_tuned_comparison(results: dict, sets: list[str], tuned: dict[str, dict[str, Any]], epochs: int) -> None:
    """The tuned recipe against the default recipe and 1-NN DTW, per set, and the goal's two counts."""
    dtw = {s.name: s.dtw_accuracy for s in ARCHIVE_SETS}
    default = {**dataclasses.asdict(ModelConfig()), **MODEL_CONFIG, **dataclasses.asdict(TrainingConfig()),
               **TRAINING_CONFIG, "num_epochs": epochs}
    print("\nTuned recipe against the default recipe (ensemble test accuracy %, mean ± std over seeds)\n")
    print("| set | default | tuned | tuned - default | default's std | 1-NN DTW | tuning: minutes, trials "
          "(complete/pruned/failed) | out-of-fold: default -> best; chosen | tuned recipe |")
    print("| --- |" + " --- |" * 8)
    ahead, behind, compared = [], [], 0
    for name in sets:
        ours, base = results.get((name, TUNED), []), results.get((name, "default"), [])
        if not ours or not base:
            continue
        compared += 1
        (mean, _), (base_mean, base_std) = mean_std([r["ensemble"] for r in ours]), mean_std([r["ensemble"] for r in base])
        if dtw.get(name) is not None and mean > 100 * dtw[name]:
            ahead.append(name)
        if mean - base_mean < -(base_std or 0.0):
            behind.append(name)
        t = tuned[name]
        counts = "/".join(str(t["trials"].get(k, 0)) for k in ("complete", "pruned", "fail"))
        recipe = {k: v for k, v in {**t["model_config"], **t["training_config"]}.items() if default.get(k) != v}
        print(f"| {name} | {cell([r['ensemble'] for r in base])} | {cell([r['ensemble'] for r in ours])} | "
              f"{mean - base_mean:+.1f} | {'-' if base_std is None else f'{base_std:.1f}'} | "
              f"{'n/a' if dtw.get(name) is None else f'{100 * dtw[name]:.1f}'} | {t['seconds'] / 60:.1f}, {counts} | "
              f"{t['first_trial_value']:.1f} -> {t['top_value']:.1f} (trial {t['top_trial']}); trial {t['best_trial']} | "
              f"{json.dumps({k: _rounded(v) for k, v in recipe.items()}) if recipe else 'the default'} |")
    print(f"\nTuned ahead of 1-NN DTW on {len(ahead)} of {compared} sets ({', '.join(ahead) or 'none'}); behind the "
          f"default recipe by more than its seed-to-seed std on {len(behind)} ({', '.join(behind) or 'none'})")


def _rounded(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


def print_data_table(summaries: list[dict[str, Any]], checks: dict[str, str]) -> None:
    print("\n| set | train | val | test | classes | dims | length | patch p | frames (max) | feature dim | "
          "against the archive |")
    print("| --- |" + " --- |" * 10)
    for s in summaries:
        lo, hi = s["length"]
        print(f"| {s['set']} | {s['train']} | {s['val']} | {s['test']} | {s['classes']} | {s['dims']} | "
              f"{lo if lo == hi else f'{lo}..{hi}'} | {s['patch']} | {s['frames']} | {s['feature_dim']} | "
              f"{checks.get(s['set'], '-')} |")


# ------------------------------------------------------------------------------------------- main
def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {available_cores()} cores{gpu}; torch {torch.__version__}, vidtempo {__version__}"


def choose(value: str, known: tuple[str, ...] | list[str], what: str, parser: argparse.ArgumentParser) -> list[str]:
    by_lower = {k.lower(): k for k in known}
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        parser.error(f"{what}: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return [by_lower[n.lower()] for n in names]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path.home() / ".cache" / "vidtempo"
    parser.add_argument("--sets", help="comma-separated; default: all (with --recipe tuned: the six archive sets)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; default: all")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated run seeds")
    parser.add_argument("--epochs", type=int, default=TRAINING_CONFIG["num_epochs"])
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time, in separate processes")
    parser.add_argument("--results-dir", type=Path, default=cache / "accuracy_real")
    parser.add_argument("--cache-dir", type=Path, default=cache)
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables from the results already there; train nothing")
    parser.add_argument("--aeon-wheel", type=Path, default=None, help="default: downloaded into CACHE/aeon")
    parser.add_argument("--recipe", choices=("fixed", TUNED), default="fixed",
                        help="fixed: the variants of one recipe; tuned: per set, a `vidtempo tune` study from the "
                             "default recipe, then the tuned recipe against the default one (the six archive sets "
                             "unless --sets says otherwise)")
    parser.add_argument("--tune-minutes", type=float, default=12.0,
                        help=f"time each study may start new trials in (at most {MAX_TUNE_MINUTES}; a trial under "
                             "way then runs to its end)")
    args = parser.parse_args()
    if args.sets is None:
        args.sets = ",".join(s.name for s in ARCHIVE_SETS) if args.recipe == TUNED else ",".join(SET_NAMES)
    args.sets = choose(args.sets, SET_NAMES, "--sets", parser)
    args.variants = ["default", TUNED] if args.recipe == TUNED else choose(args.variants, tuple(VARIANTS), "--variants", parser)
    if not 0 < args.tune_minutes <= MAX_TUNE_MINUTES:
        parser.error(f"--tune-minutes must be in (0, {MAX_TUNE_MINUTES}], got {args.tune_minutes}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not args.seeds or args.epochs < 1 or args.jobs < 1:
        parser.error("--seeds needs at least one seed; --epochs and --jobs must be at least 1")
    return args


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[dict[str, dict[str, Any]], list, dict]:
    """Write each chosen set's feature stores; returns set -> {dir, suffix, data_id}, summaries and checks."""
    data, summaries, checks = {}, [], {}
    specs = [s for s in ARCHIVE_SETS if s.name in args.sets]
    if specs:
        wheel = aeon_wheel(args.aeon_wheel, args.cache_dir)
        print(f"data: {wheel.name} (read with zipfile; aeon is not imported)")
        for spec in specs:
            summary = write_archive_set(spec, wheel, work / spec.name)
            summaries.append(summary)
            checks[spec.name] = archive_check(spec, summary)
            data[spec.name] = {"dir": work / spec.name, "suffix": "", "data_id": {
                "wheel": wheel.name, "max_steps": MAX_STEPS, "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED,
                "frames": {"kernels": FEATURE_KERNELS, "length": KERNEL_LENGTH, "dilations": DILATIONS,
                           "seed": BANK_SEED}}}
    if DEMO_SET in args.sets:
        data[DEMO_SET] = demo_features(args.cache_dir)
        summaries.append(demo_summary(data[DEMO_SET]["dir"], data[DEMO_SET]["suffix"]))
    return data, summaries, checks


def print_variant_notes(variants: list[str], plan: dict, seed: int) -> None:
    dropped = sorted({k for v in variants for k in split_overrides(VARIANTS[v])[1]})
    if dropped:
        print(f"TrainingConfig does not know {', '.join(dropped)}: those overrides are dropped")
    first_with: dict[str, str] = {}
    for variant in variants:
        key = next(job["key"] for (_, v, s), job in plan.items() if v == variant and s == seed)
        if key in first_with:
            print(f"'{variant}' resolves to the same TrainingConfig as '{first_with[key]}' here: they share runs")
        first_with.setdefault(key, variant)


def main() -> None:
    args = parse_args()
    print(f"machine: {machine()}")
    print(f"model {MODEL_CONFIG}; training {TRAINING_CONFIG} with num_epochs={args.epochs}; {NUM_MEMBERS} members; "
          f"run seed s trains with seed {RUN_SEED_STRIDE}*s; device auto")
    with tempfile.TemporaryDirectory(prefix="vidtempo-accuracy-data-") as work:
        data, summaries, checks = prepare_data(args, Path(work))
        print_data_table(summaries, checks)
        if any(c != "ok" for c in checks.values()):
            fail("the data read differ from the archive's documented sizes (see the table)")
        tuned = None
        if args.recipe == TUNED:
            jobs = tuning_jobs(data, args)
            tuned = load_tuned(jobs) if args.report_only else run_tuning_studies(jobs, args.jobs)
        plan = plan_runs(data, args.variants, args.seeds, args.epochs, args.results_dir, tuned)
        print_variant_notes([v for v in args.variants if v != TUNED], plan, args.seeds[0])
        if not args.report_only:
            run_missing(plan, args.jobs)
    results = load_results(plan)
    sets = [name for name in SET_NAMES if name in args.sets]
    print_metric_table("Ensemble test accuracy, % (plain: vidtempo evaluate/predict use no TTA unless --tta), "
                       "mean ± std over seeds", "ensemble", results, sets, args.variants, published=True)
    print(f"\n{PUBLISHED_NOTE}")
    print_metric_table("Ensemble test accuracy with TTA, %", "ensemble_tta", results, sets, args.variants)
    print_metric_table("Members' average test accuracy, %", "members_average", results, sets, args.variants)
    print_metric_table("Seconds per run (train + assemble + score)", "seconds", results, sets, args.variants)
    if BASELINE in args.variants:
        print_comparison(results, sets, args.variants)
    if tuned is not None:
        print_tuned_comparison(results, sets, tuned, args.epochs)


if __name__ == "__main__":
    main()
