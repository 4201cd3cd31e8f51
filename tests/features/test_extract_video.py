"""Decoding and uniform frame sampling on real videos."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from extract_fixtures import BIKES, CARPHONE, SAMPLE_FRAMES, cut_clip, sample, write_audio_only, write_random_bytes
from vidtempo.errors import VidtempoError
from vidtempo.features.extract.video import (
    VideoDecodeError,
    count_frames,
    decode_clip,
    load_video_frames,
    prepare_frame,
    resized_size,
    uniform_indices,
)


def test_uniform_indices_span_the_whole_video_evenly():
    indices = uniform_indices(250, 64)
    assert len(indices) == 64
    assert indices[0] == 0 and indices[-1] == 249
    gaps = np.diff(indices)
    assert gaps.min() >= 3 and gaps.max() <= 4  # 249 / 63 = 3.95: evenly spread, nothing bunched


def test_uniform_indices_use_every_frame_of_a_short_video_and_invent_none():
    assert uniform_indices(5, 64) == [0, 1, 2, 3, 4]
    assert uniform_indices(64, 64) == list(range(64))
    assert uniform_indices(0, 64) == []


def test_resize_keeps_aspect_with_shorter_side_115_percent():
    assert resized_size(640, 272, 128) == (346, 147)  # round(128 * 1.15) = 147
    assert resized_size(144, 176, 256) == (294, 359)
    assert resized_size(300, 300, 256) == (294, 294)


def test_frame_count_is_exact_for_the_samples():
    for name, frames in SAMPLE_FRAMES.items():
        assert count_frames(sample(name)) == frames


def test_decode_clip_returns_the_frames_at_the_sampled_indices():
    clip = decode_clip(sample(BIKES), 16, 64)
    assert clip.total_frames == 250
    assert clip.indices == uniform_indices(250, 16)
    assert clip.frames.shape == (16, 3, 64, 64) and clip.frames.dtype == torch.uint8

    # The same frames, picked out of a plain full decode.
    with av.open(str(sample(BIKES))) as container:
        every = [prepare_frame(f, 64) for f in container.decode(video=0)]
    expected = np.stack([every[i] for i in clip.indices])
    assert np.array_equal(clip.frames.permute(0, 2, 3, 1).numpy(), expected)


def test_decode_clip_opens_the_file_once_and_reports_the_frame_rate(monkeypatch):
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    clip = decode_clip(sample(CARPHONE), 8, 64)
    assert len(opened) == 1, "frame count, frames and frame rate come from one open of the container"
    assert clip.total_frames == 120 and clip.frame_rate == pytest.approx(30000 / 1001)


@pytest.mark.parametrize("name, codec", [("clip.webm", "libvpx"), ("clip.mkv", "mpeg4"), ("clip.avi", "mpeg4"),
                                         ("clip.mov", "mpeg4")])
def test_every_container_decodes_the_frames_of_a_plain_full_decode(tmp_path, name, codec):
    """Counting the frames first and then decoding from the start, in one open, changes no frame."""
    path = cut_clip(sample(BIKES), tmp_path / name, 30, codec=codec)
    clip = decode_clip(path, 8, 64)
    with av.open(str(path)) as container:
        every = [prepare_frame(f, 64) for f in container.decode(video=0)]
    assert clip.total_frames == len(every) == 30 and clip.frame_rate == 25
    expected = np.stack([every[i] for i in uniform_indices(30, 8)])
    assert np.array_equal(clip.frames.permute(0, 2, 3, 1).numpy(), expected)


def test_short_video_uses_all_its_frames(tmp_path):
    clip_path = cut_clip(sample(CARPHONE), tmp_path / "five.mp4", 5)
    clip = decode_clip(clip_path, 64, 64)
    assert clip.total_frames == 5
    assert clip.indices == [0, 1, 2, 3, 4]
    assert clip.frames.shape[0] == 5
    # Real, distinct frames: no black padding, and the video moves.
    assert all(clip.frames[i].float().mean() > 10 for i in range(5))
    assert not torch.equal(clip.frames[0], clip.frames[4])


def test_load_video_frames_are_float_in_unit_range():
    frames = load_video_frames(sample(CARPHONE), 4, 64)
    assert frames.dtype == torch.float32 and frames.shape == (4, 3, 64, 64)
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0


@pytest.mark.parametrize("kind", ["random", "empty", "audio", "missing"])
def test_undecodable_files_raise_a_one_line_error(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "random":
        write_random_bytes(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "audio":
        write_audio_only(path)
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(path, 8, 64)
    assert isinstance(info.value, VidtempoError)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
