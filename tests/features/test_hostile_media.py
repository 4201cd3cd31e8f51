"""Files that are not plain videos end as frames or one clear error each, in a decoder process, and a frame
too large to hold is refused before any is decoded."""

from __future__ import annotations

import pytest

from extract_fixtures import PLAYABLE_HOSTILE, hostile_media
from vidtempo.features.extract import ExtractionSettings, FeatureExtractor
from vidtempo.features.extract.catalog import VideoItem
from vidtempo.features.extract.settings import MAX_FRAME_PIXELS, SAMPLING_MODES, RunOptions
from vidtempo.features.extract.video import VideoDecodeError, decode_clip
from vidtempo.errors import VidtempoError



@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return hostile_media(tmp_path_factory.mktemp("hostile"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sampling", SAMPLING_MODES)
def test_each_hostile_file_is_frames_or_one_error_line(media, sampling):
    extractor = FeatureExtractor(ExtractionSettings(frames_per_video=8, image_size=64, sampling=sampling), workers=2)
    items = [VideoItem(path=path, video_id=kind, category="", label=-1) for kind, path in media.items()]
    rows = {item.video_id: (frames, error) for item, frames, error in extractor.decoded_videos(items)}
    assert set(rows) == set(media)
    for kind, (frames, error) in rows.items():
        if kind in PLAYABLE_HOSTILE:
            assert error is None and frames is not None and frames.shape[1:] == (3, 64, 64), kind
        else:
            assert frames is None and error and "\n" not in error, kind
    assert "exceed the limit" in rows["pixel_bomb"][1] and "16000 x 16000" in rows["pixel_bomb"][1]


def test_a_pixel_bomb_is_refused_before_a_frame_is_decoded(media, monkeypatch):
    import vidtempo.features.extract.video as video

    decoded = []
    monkeypatch.setattr(video, "prepare_frame", lambda frame, size: decoded.append(frame) or None)
    with pytest.raises(VideoDecodeError, match=f"exceed the limit of {MAX_FRAME_PIXELS}"):
        decode_clip(media["pixel_bomb"], 8, 64)
    assert decoded == []


def test_the_frame_limit_is_a_setting(media):
    clip = decode_clip(media["two_frames_ten_hours"], 8, 64, max_pixels=64 * 64)
    assert clip.indices == [0, 1]
    with pytest.raises(VideoDecodeError, match="64 x 64 pixels exceed the limit of 4095"):
        decode_clip(media["two_frames_ten_hours"], 8, 64, max_pixels=64 * 64 - 1)
    assert len(decode_clip(media["pixel_bomb"], 1, 32, max_pixels=None).indices) == 1


def test_a_frame_limit_below_one_pixel_is_refused():
    with pytest.raises(VidtempoError, match="--max-frame-pixels must be positive"):
        RunOptions(max_frame_pixels=0)
