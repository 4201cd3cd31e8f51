"""The report's most confident misses: which videos are chosen and in what order, the frame strips decoded from
the videos, and the rows that stay when a video cannot be shown."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest

from extract_fixtures import write_frames, write_random_bytes
from helpers import assert_refused, vidtempo
from vidtempo.ensemble.report import (
    MISSES_DIR,
    STRIP_FRAME_SIZE,
    STRIP_FRAMES,
    build_report,
    confident_misses,
    write_miss_strips,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["Animation", "Gaming", "Natural_Content"]
# Row: true class, then the ensemble's probabilities. Class 0 has four misses of distinct confidence (rows
# listed out of order), one right answer with a higher top probability than any miss, and a miss whose
# confidence ties another's; class 1 has one miss; class 2 none.
CASES = [
    (0, [0.30, 0.60, 0.10]),  # 0: miss, 0.60
    (0, [0.05, 0.05, 0.90]),  # 1: miss, 0.90
    (0, [0.99, 0.01, 0.00]),  # 2: right, more confident than every miss
    (0, [0.20, 0.75, 0.05]),  # 3: miss, 0.75
    (0, [0.45, 0.50, 0.05]),  # 4: miss, 0.50 (barely lost)
    (0, [0.20, 0.05, 0.75]),  # 5: miss, 0.75, ties row 3: after it, in split order
    (1, [0.10, 0.30, 0.60]),  # 6: miss, 0.60
    (1, [0.00, 1.00, 0.00]),  # 7: right
    (2, [0.10, 0.10, 0.80]),  # 8: right
]
Y_TRUE = np.array([label for label, _ in CASES])
PROBS = np.array([p for _, p in CASES])


def test_misses_are_the_wrong_ones_most_confident_first_at_most_n_per_class():
    misses = confident_misses(Y_TRUE, PROBS, per_class=3)
    assert sorted(misses) == [0, 1, 2]
    assert [m.index for m in misses[0]] == [1, 3, 5]  # 0.90, 0.75, 0.75 (tie in split order); not 0 or 4
    assert [m.index for m in misses[1]] == [6]
    assert misses[2] == []
    first = misses[0][0]
    assert (first.true_class, first.predicted, first.confidence, first.true_probability) == (0, 2, 0.90, 0.05)
    assert [m.predicted for m in misses[0]] == [2, 1, 2]
    # Every miss of the class when N allows; none with N = 0.
    assert [m.index for m in confident_misses(Y_TRUE, PROBS, per_class=10)[0]] == [1, 3, 5, 0, 4]
    assert all(shown == [] for shown in confident_misses(Y_TRUE, PROBS, per_class=0).values())


def test_misses_refuse_probabilities_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        confident_misses(Y_TRUE[:-1], PROBS)
    with pytest.raises(ValueError, match="at least 0"):
        confident_misses(Y_TRUE, PROBS, per_class=-1)


def misses_tables(text: str) -> dict[str, tuple[str, list[list[str]]]]:
    """The misses section of report.md: class -> (its heading's tail, table rows as cells)."""
    section = text.split("## Most confident misses", 1)[1].split("\n## ", 1)[0]
    tables = {}
    for block in section.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        name, _, tail = heading.partition(": ")
        rows = [[c.strip() for c in line.strip().strip("|").split(" | ")]
                for line in body.splitlines() if line.startswith("| ") and not line.startswith(("| video ", "| --- "))]
        tables[name] = (tail, rows)
    return tables


def test_report_without_the_videos_lists_the_misses_and_says_what_strips_need(tmp_path):
    ids = [f"test/{CLASSES[label]}/clip_{i}.mp4" for i, (label, _) in enumerate(CASES)]
    report = build_report(tmp_path / "out", None, y_true=Y_TRUE, y_pred=PROBS.argmax(1), class_names=CLASSES,
                          probabilities=PROBS, video_ids=ids, split="test", misses_per_class=2)
    text = report.read_text()
    assert "## Most confident misses (test)" in text and "`vidtempo evaluate --videos-dir DIR`" in text
    tables = misses_tables(text)
    assert tables["Animation"][0] == "5 of 6 missed"
    assert tables["Animation"][1] == [["`test/Animation/clip_1.mp4`", "Natural_Content", "90.00", "5.00"],
                                      ["`test/Animation/clip_3.mp4`", "Gaming", "75.00", "20.00"]]
    assert tables["Gaming"] == ("1 of 2 missed", [["`test/Gaming/clip_6.mp4`", "Natural_Content", "60.00", "30.00"]])
    assert tables["Natural_Content"] == ("0 of 1 missed", [])
    assert "No misses." in text
    assert not (tmp_path / "out" / MISSES_DIR).exists()
    # A feature file without ids: rows are named by their place in the split.
    text = build_report(tmp_path / "rows", None, y_true=Y_TRUE, y_pred=PROBS.argmax(1), class_names=CLASSES,
                        probabilities=PROBS).read_text()
    assert misses_tables(text)["Gaming"][1][0][0] == "row 6" and "records no video ids" in text


def coloured_video(path: Path, frames: int = 30) -> Path:
    """Frames whose red channel rises with time and whose green says which video: a strip's frames show
    whether they were spread over the whole video."""
    images = [np.zeros((72, 96, 3), dtype=np.uint8) for _ in range(frames)]
    for i, image in enumerate(images):
        image[..., 0] = round(255 * i / (frames - 1))
    return write_frames(path, images)


def test_strips_show_frames_spread_over_each_missed_video(tmp_path):
    videos = tmp_path / "videos"
    ids = [f"test/{CLASSES[label]}/clip_{i}.mp4" for i, (label, _) in enumerate(CASES)]
    for row in (1, 5):
        coloured_video(videos / ids[row])
    # A folder of links to files kept elsewhere, as a data set often is.
    (videos / ids[6]).parent.mkdir(parents=True)
    (videos / ids[6]).symlink_to(coloured_video(tmp_path / "elsewhere" / "clip.mp4"))
    write_random_bytes(videos / ids[3])  # not a video; row 0, 2, 4, 7, 8 are not there at all
    out = tmp_path / "out"
    (out / MISSES_DIR).mkdir(parents=True)
    (out / MISSES_DIR / "00099_old.png").write_bytes(PNG_SIGNATURE)  # left by an earlier report
    text = build_report(out, None, y_true=Y_TRUE, y_pred=PROBS.argmax(1), class_names=CLASSES, probabilities=PROBS,
                        video_ids=ids, videos_dir=videos, split="test").read_text()

    rows = misses_tables(text)["Animation"][1] + misses_tables(text)["Gaming"][1]
    assert [r[0] for r in rows] == [f"`{ids[i]}`" for i in (1, 3, 5, 6)]
    links = {}
    for row in rows:
        match = re.fullmatch(r"!\[(.+)\]\((.+\.png)\)", row[4])
        if match:
            assert f"`{match.group(1)}`" == row[0]
            links[row[0]] = out / match.group(2)
    assert sorted(links) == sorted(f"`{ids[i]}`" for i in (1, 5, 6))
    assert rows[1][4].startswith("no strip: cannot be decoded")
    assert sorted(p.name for p in (out / MISSES_DIR).iterdir()) == sorted(p.name for p in links.values())
    for path in links.values():
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        strip = matplotlib.image.imread(path)
        assert strip.shape == (STRIP_FRAME_SIZE, STRIP_FRAMES * STRIP_FRAME_SIZE + (STRIP_FRAMES - 1) * 4, 3)
        # The red of each frame's centre: from the video's first frame to its last, rising.
        centres = [strip[STRIP_FRAME_SIZE // 2, i * (STRIP_FRAME_SIZE + 4) + STRIP_FRAME_SIZE // 2, 0]
                   for i in range(STRIP_FRAMES)]
        assert centres[0] < 0.05 and centres[-1] > 0.95 and np.all(np.diff(centres) > 0), centres

    # A video not in the folder: its row says so and has no strip.
    missing = build_report(tmp_path / "gone", None, y_true=Y_TRUE, y_pred=PROBS.argmax(1), class_names=CLASSES,
                           probabilities=PROBS, video_ids=ids, videos_dir=tmp_path / "empty").read_text()
    assert misses_tables(missing)["Gaming"][1][0][4] == f"no strip: not found in {tmp_path / 'empty'}"
    # An id that leads out of the videos folder is not followed, even to a video that is there.
    outside = confident_misses(Y_TRUE, PROBS)[1]
    strips, reasons = write_miss_strips(outside, {6: f"../{ids[6]}"}, videos / "test", tmp_path / "outside")
    assert strips == {} and reasons == {6: f"its id leads outside {videos / 'test'}"}


@pytest.mark.slow
def test_evaluate_shows_the_most_confident_misses_of_real_videos(video_model, tmp_path):
    """Real clips whose test labels are shifted by one class, as a mislabelled folder would be: the ensemble
    is confidently wrong about many, and the report shows them, the most confident first, with their frames."""
    from vidtempo.ensemble.ensemble import Ensemble
    from vidtempo.features.store import detect_suffix, read_split, split_path

    features = tmp_path / "features"
    shutil.copytree(video_model.features, features)
    path = split_path(features, "test", detect_suffix(features))
    classes = len(read_split(path).class_names)
    with h5py.File(path, "r+") as f:
        f["labels"][...] = (f["labels"][()] + 1) % classes
    test = read_split(path)
    ensemble = Ensemble.from_checkpoints(video_model.checkpoints, precision="fp32")
    probs = ensemble.combine(ensemble.split_view_probabilities(test, ("original",))[0][:, 0]).numpy()

    report_dir = tmp_path / "report"
    result = vidtempo("evaluate", "--features-dir", features, "--checkpoints", video_model.checkpoints,
                      "--report-dir", report_dir, "--output", tmp_path / "results.json",
                      "--videos-dir", video_model.videos, "--precision", "fp32", "--threads", "2")
    assert result.returncode == 0, result.stderr
    tables = misses_tables((report_dir / "report.md").read_text())
    shown = 0
    for cls, name in enumerate(test.class_names):
        rows = tables[name][1]
        wrong = np.flatnonzero((test.labels == cls) & (probs.argmax(1) != cls))
        expected = sorted(wrong, key=lambda i: -probs[i].max())[:3]
        assert [r[0] for r in rows] == [f"`{test.video_ids[i]}`" for i in expected]
        assert [float(r[2]) for r in rows] == pytest.approx([100 * probs[i].max() for i in expected], abs=0.01)
        for row in rows:
            strip = report_dir / re.fullmatch(r"!\[.+\]\((.+\.png)\)", row[4]).group(1)
            assert strip.read_bytes()[:8] == PNG_SIGNATURE and matplotlib.image.imread(strip).std() > 0.01
        shown += len(rows)
    assert shown >= 2 * len(test.class_names)  # shifted labels: the trained model misses most of them
    assert len(list((report_dir / MISSES_DIR).glob("*.png"))) == shown

    refused = vidtempo("evaluate", "--features-dir", features, "--checkpoints", video_model.checkpoints,
                       "--videos-dir", tmp_path / "nowhere")
    assert_refused(refused, "--videos-dir", "not a folder")
