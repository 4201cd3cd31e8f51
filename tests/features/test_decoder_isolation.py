"""Decoder processes start clean of the caller's FFmpeg state, and a watchdog outside them ends a stuck one.

PyAV (17 and later) resizes with a pool of slice threads, and 18.1.1 keeps one scaling context per thread. A
child forked after its parent resized a frame inherits that context without the pool's threads, and its next
resize waits for ever. These tests do what a user's script (or the demo) does: decode and resize in the main
process first, then run the decoders.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import av
import pytest

from extract_fixtures import BIKES, CARPHONE, decode_or_stall, sample
from vidtempo.features.extract import ExtractionSettings, FeatureExtractor
from vidtempo.features.extract.catalog import VideoItem
from vidtempo.features.extract.decoder_pool import DecoderPool
from vidtempo.features.extract.video import VideoDecodeError, decode_clip

SMALL = ExtractionSettings(frames_per_video=4, image_size=64)


def resize_in_this_process() -> None:
    """What the demo's clip cutting or a user's own script does before extraction: resize with PyAV's
    default (threaded) scaler in the main thread."""
    with av.open(str(sample(CARPHONE))) as container:
        frame = next(container.decode(video=0))
        frame.to_ndarray(width=96, height=80, format="rgb24")


def items(*names: str) -> list[VideoItem]:
    return [VideoItem(path=sample(name), video_id=f"{i}/{name}", category="", label=-1)
            for i, name in enumerate(names)]


@pytest.mark.timeout(60)
def test_decoder_workers_finish_after_the_caller_resized_a_frame():
    resize_in_this_process()
    extractor = FeatureExtractor(SMALL, workers=2)
    rows = list(extractor.decoded_videos(items(CARPHONE, BIKES, CARPHONE)))
    assert [error for _, _, error in rows] == [None, None, None]
    assert [tuple(frames.shape) for _, frames, _ in rows] == [(4, 3, 64, 64)] * 3


@pytest.mark.timeout(60)
def test_a_single_file_decode_finishes_after_the_caller_resized_a_frame():
    resize_in_this_process()
    extractor = FeatureExtractor(SMALL)
    try:
        clip = extractor.decode(sample(CARPHONE))
    finally:
        extractor.close()
    assert tuple(clip.frames.shape) == (4, 3, 64, 64)


def test_the_decoder_process_gives_what_a_decode_in_this_process_gives():
    extractor = FeatureExtractor(SMALL)
    try:
        pooled = extractor.decode(sample(BIKES))
    finally:
        extractor.close()
    local = decode_clip(sample(BIKES), 4, 64, SMALL.sampling)
    assert pooled.indices == local.indices and pooled.total_frames == local.total_frames
    assert bool((pooled.frames == local.frames).all())


@pytest.mark.timeout(60)
def test_a_stuck_decoder_is_stopped_and_every_other_video_is_decoded(tmp_path):
    # The stalled decoder ignores SIGTERM, as one blocked inside a C call would: only the watchdog's kill ends it.
    stuck = tmp_path / "stuck.mp4"
    os.symlink(sample(BIKES), stuck)
    videos = items(CARPHONE, BIKES, CARPHONE)
    videos[1] = VideoItem(path=stuck, video_id="stuck.mp4", category="", label=-1)
    started = time.monotonic()
    extractor = FeatureExtractor(SMALL, workers=1, max_decode_seconds=2)
    rows = [(item, None if clip is None else clip.frames, error)
            for item, clip, error in extractor.decoded_videos(videos, decode_or_stall)]
    seconds = time.monotonic() - started
    errors = [error for _, _, error in rows]
    assert errors[0] is None and errors[2] is None
    assert errors[1] is not None and "decoder stopped responding after" in errors[1]
    assert rows[1][1] is None and tuple(rows[2][1].shape) == (4, 3, 64, 64)
    assert seconds < 30  # ended by the watchdog, not by the stall


@pytest.mark.timeout(60)
def test_a_decoder_killed_mid_video_is_one_error_and_the_run_goes_on(tmp_path):
    link = tmp_path / "stuck.mp4"
    os.symlink(sample(BIKES), link)
    with DecoderPool(workers=1, max_seconds=None) as pool:
        stalled = pool.submit(decode_or_stall, link)
        pid = _wait_for_busy_worker(pool)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(VideoDecodeError, match="decoder process ended"):
            stalled.result(timeout=30)
        # A fresh process took the dead one's place.
        clip = pool.submit(decode_clip, sample(CARPHONE), 4, 64).result(timeout=30)
    assert tuple(clip.frames.shape) == (4, 3, 64, 64)


def _wait_for_busy_worker(pool: DecoderPool) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = pool.busy_pids()
        if busy:
            time.sleep(0.2)  # inside the stall by now
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no decoder took the task")


@pytest.mark.timeout(60)
def test_the_pool_serves_several_threads_at_once():
    with DecoderPool(workers=2, max_seconds=30) as pool:
        results: list = [None] * 4

        def work(i: int) -> None:
            results[i] = pool.submit(decode_clip, sample(CARPHONE), 2, 32).result(timeout=30)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(tuple(r.frames.shape) == (2, 3, 32, 32) for r in results)


@pytest.mark.slow  # a command-line process that loads the backbone
@pytest.mark.timeout(300)
def test_extract_lists_a_stuck_video_as_failed_and_writes_the_others(tmp_path):
    import json
    import subprocess
    import sys

    from extract_fixtures import cli_env, link
    from vidtempo.features.extract.decoder_pool import STALL_ENV
    from vidtempo.features.store import read_split

    videos = tmp_path / "videos"
    link(sample(CARPHONE), videos / "train" / "A" / "fine.mp4")
    link(sample(BIKES), videos / "train" / "B" / "stuck.mp4")
    link(sample(BIKES), videos / "train" / "B" / "also_fine.mp4")
    out = tmp_path / "features"
    command = [sys.executable, "-m", "vidtempo", "extract", "--videos-dir", str(videos), "--output-dir", str(out),
               "--frames", "4", "--image-size", "64", "--workers", "1", "--max-decode-seconds", "2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                            env={**cli_env(), STALL_ENV: "stuck.mp4"})
    assert result.returncode == 0, result.stderr
    failed = json.loads((out / "train_failures_multiscale.json").read_text())["failed"]
    assert [f["video"] for f in failed] == ["train/B/stuck.mp4"]
    assert "decoder stopped responding after" in failed[0]["error"]
    assert sorted(read_split(out / "train_features_multiscale.h5").video_ids) == ["train/A/fine.mp4",
                                                                                 "train/B/also_fine.mp4"]


@pytest.mark.parametrize("retry", [False, True])
def test_a_video_that_failed_in_an_interrupted_run_is_retried_only_when_asked(tmp_path, retry):
    from vidtempo.features.extract.resume import PartialSplit

    extractor = FeatureExtractor(SMALL, workers=1)
    videos = items(CARPHONE, BIKES)
    output = tmp_path / "train_features.h5"
    # An interrupted run recorded the second video's decoder as stuck.
    partial = PartialSplit(output, extractor.settings.identity(), extractor.feature_dim)
    partial.add_failure(videos[1], "decoder stopped responding after 602 s")
    partial.close()
    report = extractor.extract_split("train", videos, output, {"A": 0}, quiet=True, retry_failed=retry)
    assert report.resumed == (0 if retry else 1)
    assert [video for video, _ in report.failed] == ([] if retry else [videos[1].video_id])


@pytest.mark.timeout(60)
def test_a_decoder_that_died_while_idle_is_replaced_before_the_next_video():
    with DecoderPool(workers=1, max_seconds=30) as pool:
        assert tuple(pool.submit(decode_clip, sample(CARPHONE), 2, 32).result(timeout=30).frames.shape)[0] == 2
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        clip = pool.submit(decode_clip, sample(CARPHONE), 2, 32).result(timeout=30)
        assert pool.worker_pids() != [pid]
    assert tuple(clip.frames.shape) == (2, 3, 32, 32)
