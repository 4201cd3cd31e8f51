"""Report plots are valid PNGs of the expected size; the per-class table and report.md hold the right numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from vidtempo.ensemble.calibration import apply_temperature, expected_calibration_error, reliability_bins
from vidtempo.ensemble.metrics import classification_metrics
from vidtempo.ensemble.report import (
    build_report,
    per_class_table,
    plot_confusion_matrix,
    plot_reliability_diagram,
    plot_training_curves,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["Animation", "Flat_Content", "Gaming", "Natural_Content"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 3, 2, 3, 0])


def history(epochs: int, offset: float) -> dict[str, list[float]]:
    steps = np.arange(1, epochs + 1)
    return {
        "train_loss": (1.0 / steps + offset).tolist(),
        "val_loss": (1.2 / steps + offset).tolist(),
        "train_acc": (100 - 50 / steps).tolist(),
        "val_acc": (95 - 50 / steps - offset).tolist(),
        "val_f1": (94 - 50 / steps - offset).tolist(),
        "lr": (1e-3 * (0.5 + 0.5 * np.cos(np.pi * (steps % 4) / 4)) + 1e-6).tolist(),
        "epoch_time": [1.5] * epochs,
    }


def synthetic_probs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident predictions: sharpened softmax of logits that the labels were drawn from."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(400, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    return sharp, labels


def assert_png(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert abs(image.shape[1] - width) <= 5 and abs(image.shape[0] - height) <= 5, image.shape
    assert image.std() > 0.01  # something was drawn, not a blank canvas
    assert not list(path.parent.glob(".*tmp*"))  # the temporary file was renamed into place


def test_confusion_matrix_png(tmp_path):
    matrix = classification_metrics(Y_TRUE, Y_PRED, CLASSES)["confusion_matrix"]
    path = plot_confusion_matrix(matrix, CLASSES, tmp_path / "cm.png", title="test split")
    assert path == tmp_path / "cm.png"
    assert_png(path, 760, 640)  # (2 + 1.1 * classes + 1.2) x (2 + 1.1 * classes) inches at 100 dpi
    plot_confusion_matrix(matrix, CLASSES, tmp_path / "cm_counts.png", normalize=False)
    assert_png(tmp_path / "cm_counts.png", 760, 640)


def test_confusion_matrix_refuses_a_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2], [3, 4]], CLASSES, tmp_path / "cm.png")


def test_training_curves_png(tmp_path):
    histories = {"ensemble_model_1": history(12, 0.0), "ensemble_model_2": history(9, 0.1)}
    assert_png(plot_training_curves(histories, tmp_path / "curves.png"), 1200, 800)


def test_reliability_diagram_png(tmp_path):
    probs, labels = synthetic_probs()
    before = reliability_bins(probs, labels)
    after = reliability_bins(apply_temperature(probs, 3.0), labels)
    assert_png(plot_reliability_diagram(before, after, tmp_path / "rel.png"), 1100, 550)
    assert_png(plot_reliability_diagram(before, None, tmp_path / "rel_one.png"), 550, 550)


def test_per_class_table_matches_sklearn():
    rows = per_class_table(Y_TRUE, Y_PRED, CLASSES)
    precision, recall, f1, support = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=range(4),
                                                                     zero_division=0)
    assert [r["class"] for r in rows] == CLASSES
    assert [r["precision"] for r in rows] == pytest.approx(100 * precision)
    assert [r["recall"] for r in rows] == pytest.approx(100 * recall)
    assert [r["f1"] for r in rows] == pytest.approx(100 * f1)
    assert [r["support"] for r in rows] == support.tolist() == [3, 2, 3, 2]
    # By hand: Animation is predicted 3 times, 2 of them right; 2 of its 3 videos are found.
    assert rows[0]["precision"] == pytest.approx(200 / 3)
    assert rows[0]["recall"] == pytest.approx(200 / 3)


def test_per_class_table_gives_zero_for_a_class_never_predicted():
    rows = per_class_table([0, 1, 2], [0, 0, 0], ["a", "b", "c"])
    assert rows[1] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def evaluation_fixture() -> dict:
    members_pred = {"ensemble_model_1": Y_PRED, "ensemble_model_2": Y_TRUE}  # member 2 is perfect
    plain = {
        "members": {name: classification_metrics(Y_TRUE, pred, CLASSES) for name, pred in members_pred.items()},
        "ensemble": classification_metrics(Y_TRUE, Y_PRED, CLASSES),
    }
    tta = {"members": {}, "ensemble": classification_metrics(Y_TRUE, Y_TRUE, CLASSES)}
    return {"test": {"plain": plain, "tta": tta}, "val": {"plain": plain}}


def test_build_report_writes_plots_and_markdown(tmp_path):
    probs, labels = synthetic_probs()
    scaled = apply_temperature(probs, 2.75)
    calibration = {
        "temperature": 2.75,
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(scaled, labels),
        "split": "val",
    }
    reliability = {"before": reliability_bins(probs, labels), "after": reliability_bins(scaled, labels)}
    histories = {"ensemble_model_1": history(5, 0.0), "ensemble_model_2": history(5, 0.1)}

    # The trainer kept epoch 3 (0-based 2) of member 1, whatever epoch has the highest validation accuracy.
    best_epochs = {"ensemble_model_1": 2, "ensemble_model_2": None}
    report = build_report(tmp_path / "out", evaluation_fixture(), histories=histories, best_epochs=best_epochs,
                          calibration=calibration,
                          y_true=Y_TRUE, y_pred=Y_PRED, class_names=CLASSES, reliability=reliability,
                          notes=["synthetic data"])

    assert report == tmp_path / "out" / "report.md"
    text = report.read_text()
    for name in ("confusion_matrix.png", "training_curves.png", "reliability.png"):
        assert f"]({name})" in text
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_SIGNATURE
    # Accuracy of the ensemble is 7/10 plain and 10/10 with TTA; member 2 is perfect, plain only.
    assert "| **ensemble** | **70.00** | **70.00** | **100.00** | **100.00** |" in text
    assert "| ensemble_model_2 | 100.00 | 100.00 | – | – |" in text
    assert "### test (10 videos)" in text and "### val (10 videos)" in text
    assert text.index("### val") < text.index("### test")
    # Per class, from sklearn: Animation precision = recall = 2/3.
    assert "| Animation | 66.67 | 66.67 | 66.67 | 3 |" in text
    assert (f"| plain | 2.7500 | {100 * calibration['ece_before']:.2f} | {100 * calibration['ece_after']:.2f} |"
            in text)
    assert "- synthetic data" in text
    kept = f"{histories['ensemble_model_1']['val_acc'][2]:.2f}"
    assert f"| ensemble_model_1 | 5 | {kept} | 3 | " in text
    assert "| ensemble_model_2 | 5 | – | – | " in text
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_build_report_with_only_evaluation_writes_no_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output folder
    report = build_report("out", evaluation_fixture())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md"]
    text = report.read_text()
    assert "![" not in text and "## Calibration" not in text and "## Per class" not in text


def test_write_report_links_figures_relative_to_the_report(tmp_path):
    figure = plot_training_curves({"m": history(3, 0.0)}, tmp_path / "plots" / "curves.png")
    report = write_report(tmp_path, title="Demo", figures={"training_curves": figure, "extra": "plots/x.png"},
                          calibration={"temperature": 1.5})
    text = report.read_text()
    assert text.startswith("# Demo\n")
    assert "![Training curves](plots/curves.png)" in text
    assert "![extra](plots/x.png)" in text
    assert "| plain | 1.5000 | – | – |" in text


def test_the_confidence_gap_never_covers_an_accuracy_bar():
    """An under-confident bin's gap lies inside its bar: drawn behind it, with the confidence as a line."""
    import matplotlib.pyplot as plt

    from vidtempo.ensemble.report import _draw_reliability

    bins = {"edges": [0.0, 0.5, 1.0], "accuracy": [0.2, 0.9], "confidence": [0.4, 0.6], "count": [10, 10]}
    fig, ax = plt.subplots()
    try:
        _draw_reliability(ax, bins, "under- and over-confident")
        accuracy, gap = (next(c for c in ax.containers if c.get_label() == name)
                         for name in ("accuracy", "gap to confidence"))
        assert min(bar.get_zorder() for bar in accuracy) > max(bar.get_zorder() for bar in gap)
        assert [bar.get_height() for bar in accuracy] == pytest.approx([0.2, 0.9])
        [line] = [c for c in ax.collections if c.get_label() == "mean confidence"]
        assert [segment[0][1] for segment in line.get_segments()] == pytest.approx([0.4, 0.6])
    finally:
        plt.close(fig)
