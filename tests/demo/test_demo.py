"""The built-in default run, end to end on the real sample videos."""

from __future__ import annotations

import json

import pytest

from vidtempo.demo import run_demo


@pytest.mark.slow  # real videos, extraction and training (about 30 s)
def test_the_demo_runs_every_stage_and_writes_one_report(tmp_path):
    summary = run_demo(tmp_path / "demo", epochs=3, num_models=2, quiet=True)
    reports = sorted(p.relative_to(tmp_path / "demo").as_posix() for p in (tmp_path / "demo").rglob("report.md"))
    assert reports == ["results/report/report.md"]
    assert summary["report"] == str(tmp_path / "demo" / "results" / "report" / "report.md")
    assert "vidtempo demo" in (tmp_path / "demo" / reports[0]).read_text()
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
