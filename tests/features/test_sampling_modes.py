"""How sampled frames are found (exact, keyframe, auto), on videos made here whose frames show their number."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from vidtempo.errors import CheckpointError, VidtempoError
from vidtempo.features.extract import ExtractionSettings
from vidtempo.features.extract import video
from vidtempo.features.extract.video import VideoDecodeError, decode_clip, uniform_indices

WIDTH, HEIGHT, FPS = 64, 48, 25
IMAGE_SIZE = 32
STEP = 10  # grey levels per unit of a frame's number


def write_numbered_video(path, num_frames, gop=25, codec="libx264", container_options=None, variable_rate=False):
    """Frame i is flat grey: its top half ``10 * (i % 25)``, its bottom half ``10 * (i // 25)``."""
    options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"} if codec == "libx264" else {
        "g": str(gop)}
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = options
        if variable_rate:
            stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(num_frames):
            rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            rgb[: HEIGHT // 2] = STEP * (i % 25)
            rgb[HEIGHT // 2 :] = STEP * (i // 25)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if variable_rate:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += (20, 40, 60)[i % 3]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_number(frame: torch.Tensor) -> int:
    """The number a decoded, cropped frame ``[3, S, S]`` shows."""
    pixels = frame.float().mean(dim=0)
    top, bottom = pixels[2 : IMAGE_SIZE // 2 - 4].mean(), pixels[IMAGE_SIZE // 2 + 4 : -2].mean()
    return int(round(float(top) / STEP)) + 25 * int(round(float(bottom) / STEP))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """400 frames, a keyframe every 25: with 8 targets, 50 frames per target (auto seeks)."""
    return write_numbered_video(tmp_path_factory.mktemp("sampling") / "long.mp4", 400)


def test_frames_show_their_number_as_exact_decodes_them(long_video):
    clip = decode_clip(long_video, 8, IMAGE_SIZE, "exact")
    assert clip.indices == uniform_indices(400, 8)
    assert [frame_number(f) for f in clip.frames] == clip.indices


@pytest.fixture(scope="module")
def sparse_keyframes_video(tmp_path_factory):
    """400 frames, a keyframe every 100: most targets are farther than half a spacing from a keyframe."""
    return write_numbered_video(tmp_path_factory.mktemp("sampling") / "sparse.mp4", 400, gop=100)


@pytest.mark.parametrize("which", ["long_video", "sparse_keyframes_video"])
def test_auto_keeps_a_frame_within_half_a_spacing_of_each_target(request, which):
    clip = decode_clip(request.getfixturevalue(which), 8, IMAGE_SIZE, "auto")
    targets = uniform_indices(400, 8)
    half_spacing = (targets[-1] - targets[0]) / (len(targets) - 1) / 2
    assert len(clip.indices) == len(targets)
    assert all(abs(index - target) <= half_spacing for index, target in zip(clip.indices, targets))
    assert [frame_number(f) for f in clip.frames] == clip.indices, "an index names the frame decoded"
    assert clip.indices == sorted(set(clip.indices))


def test_auto_takes_keyframes_where_they_are_near_enough(long_video):
    clip = decode_clip(long_video, 8, IMAGE_SIZE, "auto")
    on_keyframes = [index for index in clip.indices if index % 25 == 0]
    assert len(on_keyframes) >= len(clip.indices) // 2


def test_keyframe_mode_keeps_distinct_keyframes(long_video):
    clip = decode_clip(long_video, 8, IMAGE_SIZE, "keyframe")
    assert clip.indices and all(index % 25 == 0 for index in clip.indices)
    assert clip.indices == sorted(set(clip.indices))
    assert [frame_number(f) for f in clip.frames] == clip.indices


def test_auto_decodes_a_short_video_whole_as_exact_does(tmp_path):
    path = write_numbered_video(tmp_path / "short.mp4", 60)  # under 8 frames per target: decoded whole
    exact, auto = decode_clip(path, 8, IMAGE_SIZE, "exact"), decode_clip(path, 8, IMAGE_SIZE, "auto")
    assert auto.indices == exact.indices
    assert torch.equal(auto.frames, exact.frames)


def count_packet_scans(monkeypatch) -> list[int]:
    scans = []
    real = video._count_packets
    monkeypatch.setattr(video, "_count_packets", lambda *a: scans.append(1) or real(*a))
    return scans


@pytest.mark.parametrize("mode", ["exact", "auto"])
def test_an_mp4_index_spares_the_packet_scan(long_video, monkeypatch, mode):
    scans = count_packet_scans(monkeypatch)
    clip = decode_clip(long_video, 8, IMAGE_SIZE, mode)
    assert clip.total_frames == 400 and not scans


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_containers_without_a_frame_count_are_counted(tmp_path, monkeypatch, suffix, codec):
    path = write_numbered_video(tmp_path / f"long{suffix}", 400, codec=codec)
    scans = count_packet_scans(monkeypatch)
    for mode in ("exact", "auto"):
        clip = decode_clip(path, 8, IMAGE_SIZE, mode)
        assert clip.total_frames == 400
        assert [frame_number(f) for f in clip.frames] == clip.indices
    assert scans


@pytest.mark.parametrize("mode", ["exact", "keyframe", "auto"])
def test_a_variable_frame_rate_gives_each_frame_its_own_number(tmp_path, mode):
    """Frames last 20, 40 and 60 ms in turn: a frame's index is its place in the video, not its time x the
    average rate."""
    path = write_numbered_video(tmp_path / "vfr.mp4", 400, variable_rate=True)
    clip = decode_clip(path, 8, IMAGE_SIZE, mode)
    assert clip.total_frames == 400
    assert [frame_number(f) for f in clip.frames] == clip.indices, mode
    assert len(clip.indices) >= (4 if mode == "keyframe" else 8) and clip.indices[-1] >= 350


def decodable_packets(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size > 0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["exact", "keyframe", "auto"])
def test_an_index_that_promises_missing_frames_samples_the_frames_that_exist(tmp_path, mode):
    """The index (moved to the front) lists 400 frames; the file ends a quarter of the way through. Every
    mode samples over the frames that are there, and ``total_frames`` says how many that is: the packets the
    file holds, or, where a whole decode reached the cut (exact), the frames decoded before it (the last
    few packets reference frames past the cut)."""
    path = write_numbered_video(tmp_path / "cut.mp4", 400, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    present = decodable_packets(path)
    assert 50 < present < 200  # the cut left part of the video
    clip = decode_clip(path, 8, IMAGE_SIZE, mode)
    assert present - 4 <= clip.total_frames <= present and clip.total_frames < 400
    assert [frame_number(f) for f in clip.frames] == clip.indices
    spacing = present / 8
    assert clip.indices[0] <= spacing and clip.indices[-1] >= present - 1 - 25, clip.indices  # spread over them
    assert len(clip.indices) >= (present // 25 if mode == "keyframe" else 7)


def test_a_stream_without_frames_is_one_error(tmp_path):
    path = write_numbered_video(tmp_path / "empty.mp4", 0)
    for mode in ("exact", "keyframe", "auto"):
        with pytest.raises(VideoDecodeError, match="empty.mp4"):
            decode_clip(path, 8, IMAGE_SIZE, mode)


@pytest.mark.parametrize("mode", ["exact", "auto"])
def test_a_decode_over_its_time_limit_is_stopped(long_video, mode):
    with pytest.raises(VideoDecodeError, match="longer than the limit"):
        decode_clip(long_video, 8, IMAGE_SIZE, mode, max_seconds=1e-9)


def test_new_settings_sample_auto_and_unrecorded_ones_mean_exact():
    assert ExtractionSettings().sampling == "auto"
    assert ExtractionSettings().file_attrs()["sampling"] == "auto"
    recorded_before = {"backbone": "efficientnet_lite0", "image_size": 256, "frames_per_video": 64}
    assert ExtractionSettings.from_dict(recorded_before).sampling == "exact"
    assert ExtractionSettings.from_dict(ExtractionSettings(sampling="keyframe").to_dict()).sampling == "keyframe"
    with pytest.raises(VidtempoError, match="--sampling"):
        ExtractionSettings(sampling="fast")


def test_a_feature_file_made_by_another_sampling_does_not_match():
    exact_file = {"backbone": "efficientnet_lite0", "image_size": 256, "frames_per_video": 64,
                  "scales": [1.0, 0.85, 1.15], "multi_scale": True}  # an earlier version's file: exact
    assert any("sampling" in d for d in ExtractionSettings(sampling="auto").matches_attrs(exact_file))
    assert ExtractionSettings(sampling="exact").matches_attrs(exact_file) == []


def test_members_sampled_differently_do_not_form_an_ensemble(tmp_path):
    from helpers import _with_feature_settings, write_seed_checkpoint
    from vidtempo import Ensemble

    for i, sampling in ((1, "exact"), (2, "auto")):
        path = tmp_path / f"best_ensemble_model_{i}.pt"
        write_seed_checkpoint(path, i)
        settings = ExtractionSettings(image_size=96, frames_per_video=8, sampling=sampling)
        _with_feature_settings(path, {**settings.file_attrs(), "multi_scale": True})
    with pytest.raises(CheckpointError, match="sampling"):
        Ensemble.from_checkpoints(tmp_path)


@pytest.mark.parametrize("which", ["long_video", "sparse_keyframes_video"])
@pytest.mark.parametrize("mode", ["keyframe", "auto"])
def test_the_choice_from_keyframe_positions_is_what_seeking_finds(request, which, mode):
    """The timeline decodes in one pass and picks the plain prediction's frames from the keyframes' positions."""
    path = request.getfixturevalue(which)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = video.StreamFacts(400, float(stream.average_rate), container, stream)
        keyframes = facts.keyframes()
    assert keyframes[:3] == ([0, 25, 50] if which == "long_video" else [0, 100, 200])
    chosen = video.sparse_choice(uniform_indices(400, 8), keyframes, 400, mode == "keyframe")
    assert chosen == decode_clip(path, 8, IMAGE_SIZE, mode).indices
