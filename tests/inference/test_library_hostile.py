"""``predict --videos-dir`` over a library with hostile files and a decoder that never returns: one row per
file, an error row for each that cannot be classified, every other video classified, the run ends, and a
rerun does not try the stuck video again."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest

from extract_fixtures import PLAYABLE_HOSTILE, hostile_media
from vidtempo.features.extract.decoder_pool import STALL_ENV

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_a_library_with_hostile_files_and_a_stuck_decoder_ends_with_one_row_each_and_no_retry(video_model,
                                                                                             tmp_path):
    library = tmp_path / "library"
    media = hostile_media(library / "hostile")
    clips = sorted(video_model.videos.rglob("*.mp4"))[:3]
    for i, clip in enumerate(clips):
        shutil.copy(clip, library / f"clip{i}.mp4")
    shutil.copy(clips[0], library / "stuck.mp4")
    output = tmp_path / "preds.csv"
    command = [sys.executable, "-m", "vidtempo", "predict", "--videos-dir", str(library), "--checkpoints",
               str(video_model.checkpoints), "--output", str(output), "--quiet", "--max-decode-seconds", "3"]
    env = {**os.environ, STALL_ENV: "stuck.mp4"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["path"]: row for row in csv.DictReader(output.read_text().splitlines())}
    expected = {f"clip{i}.mp4" for i in range(3)} | {"stuck.mp4"} | {f"hostile/{p.name}" for p in media.values()}
    assert set(rows) == expected
    for i in range(3):
        assert rows[f"clip{i}.mp4"]["predicted_class"] and not rows[f"clip{i}.mp4"]["error"]
    assert "decoder stopped responding after" in rows["stuck.mp4"]["error"]
    for kind, path in media.items():
        row = rows[f"hostile/{path.name}"]
        playable = kind in PLAYABLE_HOSTILE
        assert bool(row["predicted_class"]) == playable and bool(row["error"]) != playable, (kind, row["error"])
    assert "exceed the limit" in rows["hostile/pixel_bomb.mov"]["error"]
    assert "could not be read" in result.stderr
    # Rerun: the rows written stand, the stuck video included; nothing is decoded again.
    written = output.read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stderr
    assert output.read_text() == written and "0 videos classified" in again.stderr

