"""What decoding in watched processes costs: a library run (``classify_library``, as ``predict --videos-dir``)
with decoder processes from a forkserver under the watchdog, against the same run decoding in the calling
process (``workers=0``: no isolation, no watchdog) and, with ``--baseline-src``, against an earlier version's
source tree (for instance the forked DataLoader workers that came before: ``git worktree add /tmp/old REV``).

Each case runs in a fresh process, alternating, ``--repeats`` times; the table gives the best and median
seconds of the whole run and videos per second. Run ``vidtempo demo --output-dir DEMO_DIR`` first; the
library is the demo's clips, plus ``--long`` copies of a longer clip made here.

    python benchmarks/watchdog_cost.py --demo-dir /tmp/vidtempo-demo --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = r"""
import json, sys, time
from pathlib import Path
from vidtempo.inference import VideoClassifier
checkpoints, library, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
classifier = VideoClassifier.from_checkpoints(checkpoints)
if workers != "default":
    classifier.extractor.workers = int(workers)
start = time.perf_counter()
rows = list(classifier.classify_library(library))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "videos": len(rows), "errors": sum(bool(r["error"]) for r in rows),
                  "workers": classifier.extractor.workers}))
"""


def make_library(demo: Path, folder: Path) -> Path:
    for clip in sorted((demo / "videos").rglob("*.mp4")):
        target = folder / clip.relative_to(demo / "videos")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    return folder


def run_case(src: Path | None, checkpoints: Path, library: Path, workers: str) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    result = subprocess.run([sys.executable, "-c", RUN, str(checkpoints), str(library), workers], env=env,
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, required=True)
    parser.add_argument("--baseline-src", type=Path, help="an earlier version's src folder to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = {"watched decoder processes (this version)": (None, "default"),
             "in the calling process (workers=0)": (None, "0")}
    if args.baseline_src:
        cases[f"baseline {args.baseline_src}"] = (args.baseline_src, "default")
    with tempfile.TemporaryDirectory() as folder:
        library = make_library(args.demo_dir, Path(folder) / "library")
        times: dict[str, list[float]] = {name: [] for name in cases}
        info: dict[str, dict] = {}
        run_case(None, args.demo_dir / "checkpoints", library, "default")  # warm the page cache
        for _ in range(args.repeats):
            for name, (src, workers) in cases.items():
                result = run_case(src, args.demo_dir / "checkpoints", library, workers)
                times[name].append(result["seconds"])
                info[name] = result
    print("| decoding | decoder processes | videos | best (s) | median (s) | videos/s (best) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seconds in times.items():
        videos = info[name]["videos"]
        print(f"| {name} | {info[name]['workers']} | {videos} | {min(seconds):.2f} | "
              f"{statistics.median(seconds):.2f} | {videos / min(seconds):.2f} |")


if __name__ == "__main__":
    main()
