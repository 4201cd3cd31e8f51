"""How classifying a clip and training an epoch fare on a busy or a restricted CPU.

Each case runs in a fresh process: ``vidtempo predict`` work (the demo's ensemble on a held-out clip, best of
3 after a warm-up) and one training epoch on the demo's features (the demo's model, its own process). Cases:
quiet; with two other CPU-bound processes spinning; pinned to one core (``taskset -c 0``); pinned with
``OMP_NUM_THREADS=1`` set by hand; and with ``--threads``-style settings where given. Run ``vidtempo demo
--output-dir DEMO_DIR`` first.

    python benchmarks/busy_cpu.py --demo-dir /tmp/vidtempo-demo
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORK = r"""
import json, sys, time
from pathlib import Path
demo = Path(sys.argv[1])
from vidtempo.inference import VideoClassifier
try:  # as every command does before loading torch: --threads (argv[2], 0 for none), else the usable cores
    import argparse
    from vidtempo.cli.options import use_threads
    use_threads(argparse.Namespace(threads=int(sys.argv[2]) or None))
    from vidtempo.runtime import thread_record
    plan = thread_record()
except ImportError:  # versions before thread plans
    plan = None
clip = sorted((demo / "videos" / "test" / "Animation").glob("*.mp4"))[0]
classifier = VideoClassifier.from_checkpoints(demo / "checkpoints")
classifier.classify_file(clip)
best = min(classifier.classify_file(clip)["timings_s"]["total_s"] for _ in range(10))
from vidtempo import EnhancedTemporalModelTrainer
from vidtempo.demo.run import DEMO_MODEL, DEMO_TRAINING
import tempfile
with tempfile.TemporaryDirectory() as out:
    trainer = EnhancedTemporalModelTrainer(demo / "features", out, device="cpu", model_config=DEMO_MODEL,
                                           training_config={**DEMO_TRAINING, "checkpoint_every": 0}, quiet=True)
    start = time.perf_counter()
    trainer.train_single_model(num_epochs=1, model_name="m", feature_file_suffix="_multiscale",
                               results_dir=Path(out) / "r")
    epoch = time.perf_counter() - start
import torch
print(json.dumps({"predict_s": best, "epoch_s": epoch, "torch_threads": torch.get_num_threads(),
                  "plan": plan}))
"""

SPIN = "while True: pass"


def run_case(demo_dir: Path, env: dict[str, str], prefix: list[str], spinners: int, threads: int) -> dict:
    busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(spinners)]
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", WORK, str(demo_dir), str(threads)], capture_output=True,
                                text=True, env={**os.environ, **env}, timeout=1800)
    finally:
        for process in busy:
            process.kill()
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, required=True)
    args = parser.parse_args()
    cases = [  # name, environment, command prefix, spinning processes, --threads (0: not given)
        ("quiet", {}, [], 0, 0),
        ("2 other CPU-bound processes", {}, [], 2, 0),
        ("2 other CPU-bound processes, --threads 1", {}, [], 2, 1),
        ("2 other CPU-bound processes, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, [], 2, 0),
        ("quiet, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, [], 0, 0),
        ("taskset -c 0", {}, ["taskset", "-c", "0"], 0, 0),
        ("taskset -c 0, OMP_NUM_THREADS=1 by hand", {"OMP_NUM_THREADS": "1"}, ["taskset", "-c", "0"], 0, 0),
    ]
    print(f"{len(os.sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}")
    print("| case | predict s (clip) | one-epoch run s | torch threads | plan |")
    print("| --- | --- | --- | --- | --- |")
    for name, env, prefix, spinners, threads in cases:
        r = run_case(args.demo_dir, env, prefix, spinners, threads)
        print(f"| {name} | {r['predict_s']:.3f} | {r['epoch_s']:.2f} | {r['torch_threads']} | {r['plan']} |", flush=True)


if __name__ == "__main__":
    main()
