"""The built-in default run, end to end on its four classes of clips."""

from __future__ import annotations

import json

import pytest

from vidtempo.demo import run_demo


@pytest.mark.slow  # real videos, gameplay and screen renders, extraction and training (about 60 s)
def test_the_demo_runs_every_stage_and_writes_one_report(tmp_path):
    summary = run_demo(tmp_path / "demo", epochs=3, num_models=2, quiet=True)
    reports = sorted(p.relative_to(tmp_path / "demo").as_posix() for p in (tmp_path / "demo").rglob("report.md"))
    assert reports == ["results/report/report.md"]
    assert summary["report"] == str(tmp_path / "demo" / "results" / "report" / "report.md")
    text = (tmp_path / "demo" / reports[0]).read_text()
    assert "vidtempo demo" in text
    # Four classes, trained and tested: every split has clips of each, and the report says where each
    # class's clips come from and which are renders.
    classes = ["Animation", "Flat_Content", "Gaming", "Natural_Content"]
    assert summary["classes"] == classes and sorted(summary["clips_per_class"]) == classes
    assert all(sorted(summary["clips"][split]) == classes for split in ("train", "val", "test"))
    assert summary["gameplay_categories"] == ["Gaming"] and summary["rendered_categories"] == ["Flat_Content"]
    assert "| Gaming |" in text  # the per-class table of the test split
    for needle in ("Gameplay renders", "Atari alien", "Doom scenario deathmatch", "Rendered, not real",
                   "pydoc textwrap", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        assert needle in text, needle
    # The reported accuracy is the written ensemble's, on the written test features, in percent: predicted
    # again here from the files the run left, it comes out the same.
    from vidtempo.demo.run import DEMO_EXTRACTION
    from vidtempo.ensemble.ensemble import Ensemble
    from vidtempo.features.extract import ExtractionSettings
    from vidtempo.features.store import read_split, split_path

    test = read_split(split_path(tmp_path / "demo" / "features", "test", ExtractionSettings(**DEMO_EXTRACTION).suffix))
    predicted = Ensemble.from_checkpoints(tmp_path / "demo" / "checkpoints").predict_proba(test.features,
                                                                                          test.num_frames)
    correct = int((predicted.argmax(-1).numpy() == test.labels).sum())
    assert len(test.labels) == sum(summary["clips"]["test"].values())
    assert summary["test_accuracy"] == pytest.approx(100 * correct / len(test.labels))
    assert json.loads((tmp_path / "demo" / "demo_summary.json").read_text())["report"] == summary["report"]
