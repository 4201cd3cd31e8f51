"""Two vidtempo processes on one machine: a training run and an extraction, started in either order.

A training run (the demo's model on the demo's features, one member) logs its epoch times; an extraction of the
demo's videos runs beside it, started a few seconds after it ("train first") or before it ("extract first").
The table gives the training run's median epoch alone and while the extraction runs, for each way OpenMP's
threads may wait: ``default`` (vidtempo's own choice), ``unset`` (OpenMP's default, what a run started on a
quiet machine had before), ``PASSIVE``, ``ACTIVE``, or ``spin=N`` (``GOMP_SPINCOUNT=N``: spin that many
rounds, then sleep). Run ``vidtempo demo --output-dir DEMO_DIR`` first.

    python benchmarks/two_runs.py --demo-dir /tmp/vidtempo-demo
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\| ([0-9.]+)s \| ETA (\S+)")
DEMO_MODEL = {"hidden_dim": 64, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.2}


def vidtempo(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidtempo", *args]


def train_command(demo: Path, out: Path, epochs: int) -> list[str]:
    return vidtempo("train", "--features-dir", str(demo / "features"), "--output-dir", str(out), "--num-models", "1",
                    "--epochs", str(epochs), "--model-config", json.dumps(DEMO_MODEL),
                    "--training-config", json.dumps({"patience": 10_000, "checkpoint_every": 0}))


def extract_command(demo: Path, out: Path) -> list[str]:
    return vidtempo("extract", "--videos-dir", str(demo / "videos"), "--output-dir", str(out), "--frames", "32",
                    "--image-size", "224", "--quiet", "--overwrite")


def run_pair(demo: Path, env: dict[str, str], order: str, epochs: int, seconds: float) -> dict:
    """Epoch seconds of the training run, split into those while the extraction ran and those without it;
    both processes are stopped after ``seconds``."""
    work = Path(tempfile.mkdtemp())
    try:
        other = None
        if order == "extract first":
            other = subprocess.Popen(extract_command(demo, work / "features"), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            time.sleep(3)
        train = subprocess.Popen(train_command(demo, work / "ckpt", epochs), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        timer = threading.Timer(seconds, train.kill)
        timer.start()
        together, alone, etas = [], [], []
        for line in train.stdout:
            match = EPOCH_LINE.search(line)
            if not match:
                continue
            seconds = float(match.group(2))
            busy = other is not None and other.poll() is None
            (together if busy else alone).append(seconds)
            if busy:
                etas.append(match.group(3))
            if order == "train first" and other is None and time.monotonic() - started > 3:
                other = subprocess.Popen(extract_command(demo, work / "features"), env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        train.wait()
        timer.cancel()
        if other is not None:
            other.kill()
            other.wait()
        return {"alone": alone, "together": together, "etas": etas}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=90, help="each case stops after this long")
    parser.add_argument("--policies", default="default,unset,PASSIVE,spin=10000")
    args = parser.parse_args()
    print("| OMP_WAIT_POLICY | order | epoch alone (s) | epoch beside extract (s) | ratio | epochs beside | "
          "last ETA beside |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for policy in args.policies.split(","):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        if policy == "unset":
            env["OMP_WAIT_POLICY"] = ""  # set, so vidtempo leaves it; empty, so OpenMP uses its default
        elif policy.startswith("spin="):
            env["OMP_WAIT_POLICY"], env["GOMP_SPINCOUNT"] = "", policy.removeprefix("spin=")
        elif policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        for order in ("train first", "extract first"):
            result = run_pair(args.demo_dir, env, order, args.epochs, args.seconds)
            alone, together = result["alone"], result["together"]
            ratio = (f"{statistics.median(together) / statistics.median(alone):.1f}x"
                     if alone and together else "-")
            last_eta = result["etas"][-1] if result["etas"] else "-"
            print(f"| {policy} | {order} | {median(alone)} | {median(together)} | {ratio} | {len(together)} | "
                  f"{last_eta} |", flush=True)


if __name__ == "__main__":
    main()
