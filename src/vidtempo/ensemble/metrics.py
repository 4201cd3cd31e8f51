"""Classification metrics from scikit-learn, reported in percent."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    loss: float | None = None,
) -> dict:
    """Accuracy, weighted F1, per-class F1 (percent) and support, and the confusion matrix (rows: true
    class)."""
    labels = list(range(len(class_names)))
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    metrics = {
        "accuracy": 100.0 * float(accuracy_score(y_true, y_pred)),
        "f1_weighted": 100.0 * float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_class_f1": {name: 100.0 * float(score) for name, score in zip(class_names, per_class)},
        "per_class_support": {name: int(n) for name, n in zip(class_names, np.bincount(y_true, minlength=len(labels)))},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "num_samples": int(y_true.shape[0]),
    }
    if loss is not None:
        metrics["loss"] = float(loss)
    return metrics
