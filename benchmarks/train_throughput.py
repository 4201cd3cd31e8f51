"""Training throughput of the seed reference vs vidtempo's trainer (fp32 and bf16), in one run.

Data: a generated feature set (``vidtempo.features.synthetic``: the class lives only in frame order) with
feature_dim 1280 and 40..73 frames per video (uniform), written as gzip HDF5 like real feature files.
The seed reference (``seed_reference.py``) reads items from that gzip file one by one through a shared
h5py handle; vidtempo reads each split into memory once.

Rows:
- ``seed reference (fp32)``: the seed's loop (unmasked model, per-item gzip reads, per-batch scheduler step).
- ``vidtempo fp32`` / ``vidtempo bf16``: ``EnhancedTemporalModelTrainer.train_single_model`` with
  ``training_config={"precision": ...}``, ``num_workers=0`` (both systems share the same cores).

Timing: ``--epochs`` epochs per row (default 2); the first is a warm-up and excluded when there are at least
2. "epoch s" is the mean of the timed epochs' ``history["epoch_time"]`` (train + validation), and
"samples/s" is training videos per second over that time. "train-only samples/s" excludes validation
(vidtempo: measured by wrapping the trainer's private epoch function when it exists; "-" otherwise).
"% limit" compares train-only samples/s with ``machine_limits.py``'s matmul-bound upper bound for the row's
precision (for the full model at T=56). Total s is the whole call (loading, checkpoints, test + TTA);
``train_end_to_end.py`` compares whole calls, with the ensemble's assembly, and splits them into epochs and
fixed costs.

Default (full model, 192 training videos, 48 val, 48 test, 2 epochs) takes roughly 5-10 minutes on 2 cores.
``--accuracy`` switches to an accuracy-parity run (defaults: small model, 512 training videos, 128 val,
256 test, 20 epochs) and adds test accuracy plain and with TTA per row.

    python benchmarks/train_throughput.py [--model full|small] [--train-videos 192] [--epochs 2]
        [--batch-size 48] [--threads N] [--accuracy] [--rows seed,fp32,bf16] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine_limits  # noqa: E402
from seed_reference import train_seed_reference  # noqa: E402

from vidtempo import EnhancedTemporalModelTrainer  # noqa: E402
from vidtempo.features.synthetic import write_synthetic_features  # noqa: E402
from vidtempo.training.run import TrainingRun  # noqa: E402

SMALL_MODEL = {"hidden_dim": 128, "num_lstm_layers": 2, "num_attention_heads": 4}
FEATURE_DIM, MIN_FRAMES, MAX_FRAMES = 1280, 40, 73


def make_data(folder: Path, train: int, val: int, test: int, seed: int = 0) -> Path:
    """Write (or reuse, if the sizes match) the synthetic feature files."""
    stamp = folder / "sizes.json"
    want = {"train": train, "val": val, "test": test, "feature_dim": FEATURE_DIM, "frames": [MIN_FRAMES, MAX_FRAMES],
            "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    write_synthetic_features(folder, videos_per_split={"train": train, "val": val, "test": test},
                             feature_dim=FEATURE_DIM, min_frames=MIN_FRAMES, max_frames=MAX_FRAMES, seed=seed)
    stamp.write_text(json.dumps(want))
    return folder


class _TrainEpochTimer:
    """Times vidtempo's training batches only, by wrapping ``TrainingRun.train_epoch``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._original = TrainingRun.train_epoch

    def __enter__(self):
        original, times = self._original, self.times

        def timed(run, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(run, *args, **kwargs)
            finally:
                times.append(time.perf_counter() - start)

        TrainingRun.train_epoch = timed
        return self

    def __exit__(self, *exc) -> None:
        TrainingRun.train_epoch = self._original


def run_vidtempo(data: Path, work: Path, precision: str, args, model_config) -> dict:
    cfg = {"precision": precision, "num_workers": 0, "checkpoint_every": 0, "batch_size": args.batch_size,
           "patience": 10 ** 6, "seed": args.seed}
    if args.accuracy:
        cfg["collapse_retries"] = 0
    trainer = EnhancedTemporalModelTrainer(data, work / f"ckpt_{precision}", device="cpu",
                                           model_config=model_config, training_config=cfg, quiet=True)
    start = time.perf_counter()
    with _TrainEpochTimer() as timer:
        _, results = trainer.train_single_model(num_epochs=args.epochs, model_name=f"bench_{precision}",
                                                feature_file_suffix="_multiscale", results_dir=work / "results")
    return {"epoch_time": results["history"]["epoch_time"], "train_time": timer.times or None,
            "test_acc": results["test"]["accuracy"], "test_tta_acc": results["test_tta"]["accuracy"],
            "best_val_acc": results["best_val_acc"], "total": time.perf_counter() - start}


def run_seed(data: Path, work: Path, args, model_config) -> dict:
    res = train_seed_reference(data, output_dir=work / "ckpt_seed", num_epochs=args.epochs,
                               batch_size=args.batch_size, model_config=model_config, num_workers=0,
                               patience=10 ** 6)
    return {"epoch_time": res["history"]["epoch_time"], "train_time": res["history"]["train_time"],
            "test_acc": res["test"]["accuracy"], "test_tta_acc": res["test_tta"]["accuracy"],
            "best_val_acc": res["best_val_acc"], "total": res["total_time"]}


def _timed(values: list[float] | None) -> float | None:
    if not values:
        return None
    timed = values[1:] if len(values) >= 2 else values  # first epoch is the warm-up
    return sum(timed) / len(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("full", "small"), default=None)
    parser.add_argument("--train-videos", type=int, default=None)
    parser.add_argument("--val-videos", type=int, default=None)
    parser.add_argument("--test-videos", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--accuracy", action="store_true", help="longer run, small model, report test accuracy")
    parser.add_argument("--rows", default="seed,fp32,bf16", help="comma list of seed, fp32, bf16")
    parser.add_argument("--seed", type=int, default=42, help="training seed of the vidtempo rows")
    parser.add_argument("--data-dir", default=None, help="reuse/keep the synthetic files here")
    parser.add_argument("--no-limits", action="store_true", help="skip the matmul measurement (%% limit column)")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    acc = args.accuracy
    args.model = args.model or ("small" if acc else "full")
    args.train_videos = args.train_videos or (512 if acc else 192)
    args.val_videos = args.val_videos or (128 if acc else 48)
    args.test_videos = args.test_videos or (256 if acc else 48)
    args.epochs = args.epochs or (20 if acc else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = SMALL_MODEL if args.model == "small" else None

    with tempfile.TemporaryDirectory(prefix="vidtempo_bench_") as tmp:
        work = Path(tmp)
        data = Path(args.data_dir) if args.data_dir else work / "features"
        t = time.perf_counter()
        make_data(data, args.train_videos, args.val_videos, args.test_videos)
        print(f"data: {args.train_videos}/{args.val_videos}/{args.test_videos} videos (train/val/test), "
              f"D={FEATURE_DIM}, T uniform {MIN_FRAMES}..{MAX_FRAMES}, gzip HDF5 at {data} "
              f"(ready in {time.perf_counter() - t:.1f}s)", flush=True)
        print(f"model {args.model} {model_config or '(default, 65.3 M params)'}, batch {args.batch_size}, "
              f"{args.epochs} epochs ({'first excluded as warm-up' if args.epochs >= 2 else 'no warm-up'}), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
              flush=True)

        rows = []
        for name in [r.strip() for r in args.rows.split(",") if r.strip()]:
            t = time.perf_counter()
            if name == "seed":
                label, precision, out = "seed reference (fp32)", "fp32", run_seed(data, work, args, model_config)
            elif name in ("fp32", "bf16"):
                label, precision = f"vidtempo {name}", name
                out = run_vidtempo(data, work, name, args, model_config)
            else:
                raise SystemExit(f"unknown row {name!r}")
            out.update(label=label, precision=precision)
            rows.append(out)
            print(f"  {label}: epochs {[round(x, 1) for x in out['epoch_time']]} s, "
                  f"total {time.perf_counter() - t:.1f}s", flush=True)

    limits = {}
    if not args.no_limits:
        for precision in sorted({r["precision"] for r in rows}):
            limits[precision] = machine_limits.implied_samples_per_s(
                precision, {**(model_config or {}), "feature_dim": FEATURE_DIM})

    n = args.train_videos
    head = f"{'configuration':<24} {'samples/s':>10} {'epoch s':>9} {'train-only samples/s':>21} {'% limit':>8} {'total s':>8}"
    if acc:
        head += f" {'best val %':>10} {'test acc %':>10} {'test TTA %':>10}"
    print(f"\n{head}\n{'-' * len(head)}")
    for r in rows:
        epoch = _timed(r["epoch_time"])
        train = _timed(r["train_time"])
        r["samples_per_s"] = n / epoch
        r["train_samples_per_s"] = n / train if train else None
        limit = limits.get(r["precision"])
        r["percent_of_limit"] = 100.0 * r["train_samples_per_s"] / limit if limit and train else None
        train_txt = f"{r['train_samples_per_s']:.2f}" if train else "-"
        limit_txt = f"{r['percent_of_limit']:.1f}" if r["percent_of_limit"] else "-"
        line = (f"{r['label']:<24} {r['samples_per_s']:10.2f} {epoch:9.1f} {train_txt:>21} {limit_txt:>8} "
                f"{r['total']:8.1f}")
        if acc:
            line += f" {r['best_val_acc']:10.2f} {r['test_acc']:10.2f} {r['test_tta_acc']:10.2f}"
        print(line)
    if limits:
        print("limit (matmul-bound samples/s at T=56): " + ", ".join(f"{k} {v:.2f}" for k, v in limits.items()))
    base = next((r for r in rows if r["label"].startswith("seed")), None)
    if base:
        print("speed-up vs seed reference (samples/s): "
              + ", ".join(f"{r['label']} {r['samples_per_s'] / base['samples_per_s']:.2f}x" for r in rows if r is not base))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "limits": limits, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
