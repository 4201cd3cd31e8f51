"""End to end: what a user waits for, the seed reference's whole run against vidtempo's, per run length.

Data: ``train_throughput.make_data`` (generated, feature_dim 1280, 40..73 frames, gzip HDF5), by default
96/32/16 videos (train/val/test). Full model (default ModelConfig), batch 48, seed 42.

Rows, each one call timed from start to end (data loading, model and optimiser set-up, the epochs, the
checkpoint writes, and what follows the epochs):

- ``seed reference``: ``seed_reference.train_seed_reference``: float32; opens the split files (per-item gzip
  reads), writes ``best_seed_reference.pt`` (weights + AdamW state, ``torch.save``) on each strict
  improvement of validation accuracy, reloads it at the end, scores test plain and with 4-view TTA.
- ``vidtempo train_single_model``: a new ``EnhancedTemporalModelTrainer`` and ``train_single_model`` with the
  default training config (``precision="auto"``, workers by ``default_num_workers``, checkpoint every 20
  epochs) but ``patience`` off: reads the splits, trains, writes the best checkpoint (weights + AdamW state)
  on each improvement (in a background thread while the next epoch trains), adds the class centroids (a pass over train) and the run history to it, scores test
  plain and with TTA, writes the results JSON and the run record.
- ``vidtempo train_ensemble, 1 member``: the same member through ``train_ensemble(num_models=1)`` with
  ``collapse_retries=0`` (the seed retrains nothing; a 2-epoch member is often at chance and would be
  retrained twice), then the assembly: loading the member, every TTA view over val to fit member weights,
  views, temperatures and trust thresholds, scoring val and test plain and with TTA, the manifest, the
  results JSON and the report (plots and report.md). The seed reference has no such step: this row is more
  work than the seed row.

Columns: "total s" is the call; "epochs s" the sum of ``history["epoch_time"]`` (train + validation, no
checkpoint writes, on both sides); "rest s" = total - epochs (the fixed costs: loading, set-up, checkpoints,
test, centroids, assembly); "per epoch s" the mean epoch after the first (the first is a warm-up) or the
only one. Each row is run ``--repeats`` times, the rows taking turns, and the best run is shown; the load
average is printed with each run, as other work on the machine slows any of them.

    python benchmarks/train_end_to_end.py [--epochs 2,10] [--repeats 2] [--rows seed,single,ensemble]
        [--train-videos 96] [--val-videos 32] [--test-videos 16] [--batch-size 48] [--data-dir DIR]
        [--pieces] [--json out.json]

``--pieces`` also times the steps after the epochs inside vidtempo's calls (checkpoint writes and reads,
centroids, test scoring, assembly steps), from each row's best run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_reference import train_seed_reference  # noqa: E402
from train_throughput import FEATURE_DIM, MAX_FRAMES, MIN_FRAMES, make_data  # noqa: E402

from vidtempo import EnhancedTemporalModelTrainer  # noqa: E402

ROWS = {"seed": "seed reference (fp32)", "single": "vidtempo train_single_model",
        "ensemble": "vidtempo train_ensemble, 1 member"}
# The steps --pieces times (module:qualified name); a name this version does not have is left out.
PIECES = (
    "vidtempo.checkpoint:save_checkpoint",  # in the background thread during the epochs
    "vidtempo.checkpoint:CheckpointWriter.write",  # what the training thread spends: the snapshot
    "vidtempo.checkpoint:CheckpointWriter.wait",  # ... and waiting for a write still running
    "vidtempo.checkpoint:load_checkpoint",
    "vidtempo.training.single:SingleModelTrainer._representation_stats",
    "vidtempo.training.single:SingleModelTrainer._score_test",
    "vidtempo.training.single:SingleModelTrainer._score",
    "vidtempo.ensemble.ensemble:Ensemble.from_checkpoints",
    "vidtempo.ensemble.fit:view_probabilities",
    "vidtempo.ensemble.fit:evaluate_ensemble",
    "vidtempo.ensemble.fit:write_evaluation_report",
)


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@contextlib.contextmanager
def timed_pieces(enabled: bool):
    """Wrap the PIECES functions with timers while the block runs; yields {name: [seconds per call]}."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    restore = []
    for spec in PIECES if enabled else ():
        module_name, _, qualified = spec.partition(":")
        owner = importlib.import_module(module_name)
        *path, attr = qualified.split(".")
        for name in path:
            owner = getattr(owner, name)
        raw = vars(owner).get(attr)
        if raw is None:
            continue
        if isinstance(raw, classmethod):
            setattr(owner, attr, classmethod(_timer(times, qualified, raw.__func__)))
        else:
            setattr(owner, attr, _timer(times, qualified, raw))
        restore.append((owner, attr, raw))
    try:
        yield times
    finally:
        for owner, attr, raw in reversed(restore):
            setattr(owner, attr, raw)


def _timer(times: dict[str, list[float]], name: str, function):
    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times[name].append(time.perf_counter() - start)

    return timed


def run_seed(data: Path, work: Path, epochs: int, args) -> dict:
    result = train_seed_reference(data, output_dir=work, num_epochs=epochs, batch_size=args.batch_size,
                                  num_workers=0, patience=10**6, seed=42)
    return {"total": result["total_time"], "epoch_time": result["history"]["epoch_time"]}


def _trainer(data: Path, work: Path, args, **training) -> EnhancedTemporalModelTrainer:
    config = {"batch_size": args.batch_size, "patience": 10**6, "seed": 42, **training}
    return EnhancedTemporalModelTrainer(data, work / "checkpoints", device="cpu", training_config=config, quiet=True)


def run_single(data: Path, work: Path, epochs: int, args) -> dict:
    start = time.perf_counter()
    _, results = _trainer(data, work, args).train_single_model(
        num_epochs=epochs, model_name="ensemble_model_1", feature_file_suffix="_multiscale",
        results_dir=work / "results")
    return {"total": time.perf_counter() - start, "epoch_time": results["history"]["epoch_time"]}


def run_ensemble(data: Path, work: Path, epochs: int, args) -> dict:
    start = time.perf_counter()
    _, results = _trainer(data, work, args, collapse_retries=0).train_ensemble(
        num_models=1, num_epochs=epochs, feature_file_suffix="_multiscale", results_dir=work / "results")
    return {"total": time.perf_counter() - start, "epoch_time": results["members"][0]["history"]["epoch_time"]}


RUNNERS = {"seed": run_seed, "single": run_single, "ensemble": run_ensemble}


def measure(data: Path, scratch: Path, rows: list[str], epochs: int, args) -> dict[str, dict]:
    """Best of ``args.repeats`` runs per row, the rows taking turns."""
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for row in rows:
            work = scratch / f"{row}_{epochs}_{repeat}"
            before = load_average()
            with timed_pieces(args.pieces and row != "seed") as pieces:
                out = RUNNERS[row](data, work, epochs, args)
            shutil.rmtree(work, ignore_errors=True)  # checkpoints of the full model are ~0.8 GB each
            out["pieces"] = {name: sum(values) for name, values in pieces.items()}
            out["piece_calls"] = {name: len(values) for name, values in pieces.items()}
            out["load"] = f"{before} -> {load_average()}"
            print(f"  {epochs} epochs, {ROWS[row]}, run {repeat + 1}: total {out['total']:.1f}s, epochs "
                  f"{[round(t, 1) for t in out['epoch_time']]} ({out['load']})", flush=True)
            if out["pieces"]:
                print(f"    steps: {_steps(out)}", flush=True)
            if row not in best or out["total"] < best[row]["total"]:
                best[row] = out
    return best


def print_table(epochs: int, best: dict[str, dict]) -> None:
    head = f"{'row':<36} {'total s':>8} {'epochs s':>9} {'per epoch s':>12} {'rest s':>7} {'seed / row':>11}"
    print(f"\n{epochs} epochs\n{head}\n{'-' * len(head)}")
    seed = best.get("seed")
    for row, out in best.items():
        times = out["epoch_time"]
        epoch_sum = sum(times)
        per_epoch = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
        ratio = f"{seed['total'] / out['total']:.2f}x" if seed else "-"
        print(f"{ROWS[row]:<36} {out['total']:8.1f} {epoch_sum:9.1f} {per_epoch:12.2f} "
              f"{out['total'] - epoch_sum:7.1f} {ratio:>11}")
    for row, out in best.items():
        if out["pieces"]:
            print(f"  {ROWS[row]}, steps: {_steps(out)}")


def _steps(out: dict) -> str:
    return ", ".join(f"{name} {seconds:.2f}s ({out['piece_calls'][name]}x)" for name, seconds in out["pieces"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="2,10", help="comma list of run lengths")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", default="seed,single,ensemble", help="comma list of " + ", ".join(ROWS))
    parser.add_argument("--train-videos", type=int, default=96)
    parser.add_argument("--val-videos", type=int, default=32)
    parser.add_argument("--test-videos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--data-dir", default=None, help="reuse/keep the generated feature files here")
    parser.add_argument("--pieces", action="store_true", help="also time vidtempo's steps after the epochs")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    lengths = [int(e) for e in args.epochs.split(",") if e.strip()]
    # Every torch optimiser imports torch._dynamo on first use (~1-2 s), once per process: both systems pay
    # it, so it is paid here, before any row, and no row is charged for it.
    torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())

    results = {}
    with tempfile.TemporaryDirectory(prefix="vidtempo_e2e_") as tmp:
        scratch = Path(tmp)
        data = Path(args.data_dir) if args.data_dir else scratch / "features"
        make_data(data, args.train_videos, args.val_videos, args.test_videos)
        print(f"data: {args.train_videos}/{args.val_videos}/{args.test_videos} videos (train/val/test), "
              f"D={FEATURE_DIM}, T uniform {MIN_FRAMES}..{MAX_FRAMES}; full model, batch {args.batch_size}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
              f"best of {args.repeats}", flush=True)
        for epochs in lengths:
            results[epochs] = measure(data, scratch, rows, epochs, args)
    for epochs, best in results.items():
        print_table(epochs, best)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
