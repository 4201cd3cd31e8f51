"""An evaluation report: PNG plots and one Markdown file that links them and tabulates the numbers.

The inputs are the dicts vidtempo already produces: ``metrics.classification_metrics`` output (percent),
the trainer's per-epoch ``history`` and ``calibration.reliability_bins``. Every file is written under a
temporary name and renamed, so a reader never sees half a PNG or half a report.

With the ensemble's probabilities on the scored split, the report also shows, per true class, the videos it
misses most confidently (:func:`confident_misses`), each with a strip of frames decoded from the video when
its folder is known (:func:`write_miss_strips`): one look tells a wrong label from a wrong model.

``evaluation`` (for :func:`write_report` and :func:`build_report`) is shaped like::

    {"test": {"plain": {"members": {name: metrics}, "ensemble": metrics}, "tta": {...}},
     "val": {...}}

Any split or mode may be left out; the report shows what is there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

# Plots are only ever written to files, also on machines with no display: select the file-only backend
# before pyplot is imported, so pyplot never tries to open a window.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix  # noqa: E402
from sklearn.metrics import precision_recall_fscore_support  # noqa: E402

from .calibration import ece_from_bins  # noqa: E402
from ..files import atomic_write, write_text  # noqa: E402

REPORT_NAME = "report.md"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
TRAINING_CURVES_PNG = "training_curves.png"
RELIABILITY_PNG = "reliability.png"
# Report order of splits and of evaluation modes; others follow in the order given.
SPLIT_ORDER = ("val", "test")
MODE_ORDER = ("plain", "tta")
MODE_LABELS = {"plain": "", "tta": " (TTA)"}
_DPI = 100
# Misses: the folder of their frame strips (inside the report's folder), how many per true class are shown
# (and decoded: the bound on the report's decoding work), and each strip's frames, their size in pixels,
# the white gap between them and each video's decoding time limit.
MISSES_DIR = "misses"
MISSES_PER_CLASS = 3
STRIP_FRAMES = 6
STRIP_FRAME_SIZE = 128
_STRIP_GAP = 4
STRIP_DECODE_SECONDS = 60.0


# --------------------------------------------------------------------------------------------- plots


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    normalize: bool = True,
) -> Path:
    """A confusion matrix (rows: true class) with each cell's count written in it.

    With ``normalize`` the colours (and a percentage under each count) are row fractions, so a rare class's
    errors show as clearly as a common one's; the counts stay visible either way.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {len(class_names)}-class matrix must be square of that size, got {counts.shape}")
    shown = _row_fractions(counts) if normalize else counts.astype(np.float64)
    size = 2.0 + 1.1 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    try:
        image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shown.max()))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
        _annotate_cells(ax, counts, shown, normalize)
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, labels=list(class_names), rotation=30, ha="right")
        ax.set_yticks(ticks, labels=list(class_names))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title or "Confusion matrix")
        fig.tight_layout()
        return _save_png(fig, path)
    finally:
        plt.close(fig)


def _row_fractions(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def _annotate_cells(ax, counts: np.ndarray, shown: np.ndarray, normalize: bool) -> None:
    # White text on dark cells, black on light ones, so every number stays readable.
    dark = shown > 0.5 * (shown.max() if shown.max() > 0 else 1.0)
    for row in range(counts.shape[0]):
        for col in range(counts.shape[1]):
            text = f"{counts[row, col]}\n{100 * shown[row, col]:.0f}%" if normalize else f"{counts[row, col]}"
            ax.text(col, row, text, ha="center", va="center", fontsize=9,
                    color="white" if dark[row, col] else "black")


def plot_training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike) -> Path:
    """Four panels per epoch, one line colour per member: loss (train solid, val dashed), accuracy (same),
    validation weighted F1, learning rate (log scale). Keys missing from a history are skipped."""
    if not histories:
        raise ValueError("no histories to plot")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    try:
        panels = [
            (axes[0, 0], "Loss", ("train_loss", "val_loss")),
            (axes[0, 1], "Accuracy (%)", ("train_acc", "val_acc")),
            (axes[1, 0], "Validation weighted F1 (%)", ("val_f1",)),
            (axes[1, 1], "Learning rate", ("lr",)),
        ]
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, (name, history) in enumerate(histories.items()):
            colour = colours[index % len(colours)]
            for ax, _, keys in panels:
                _plot_history_lines(ax, name, history, keys, colour)
        for ax, label, _ in panels:
            ax.set_title(label)
            ax.grid(True, alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        for ax in axes[1]:
            ax.set_xlabel("epoch")
        _log_scale_if_positive(axes[1, 1])
        fig.tight_layout()
        return _save_png(fig, path)
    finally:
        plt.close(fig)


def _plot_history_lines(ax, member: str, history: Mapping[str, Sequence[float]], keys: Sequence[str],
                        colour: str) -> None:
    for key in keys:
        values = list(history.get(key) or [])
        if not values:
            continue
        split = key.split("_")[0] if len(keys) > 1 else ""
        label = f"{member} {split}".strip()
        ax.plot(range(1, len(values) + 1), values, color=colour, label=label,
                linestyle="--" if split == "val" else "-")


def _log_scale_if_positive(ax) -> None:
    # Cosine warm restarts span orders of magnitude; a log axis shows every cycle, but needs values > 0.
    values = np.concatenate([line.get_ydata() for line in ax.lines]) if ax.lines else np.array([])
    if values.size and (values > 0).all():
        ax.set_yscale("log")


def plot_reliability_diagram(
    bins_before: Mapping[str, Sequence[float]],
    bins_after: Mapping[str, Sequence[float]] | None,
    path: str | os.PathLike,
) -> Path:
    """Reliability diagrams (accuracy against confidence per bin, ECE in the title) before and after
    temperature scaling, side by side; ``bins_*`` are ``calibration.reliability_bins`` output."""
    panels = [("Before temperature scaling", bins_before)]
    if bins_after is not None:
        panels.append(("After temperature scaling", bins_after))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5.5), squeeze=False)
    try:
        for ax, (label, bins) in zip(axes[0], panels):
            _draw_reliability(ax, bins, label)
        fig.tight_layout()
        return _save_png(fig, path)
    finally:
        plt.close(fig)


def _draw_reliability(ax, bins: Mapping[str, Sequence[float]], label: str) -> None:
    edges = np.asarray(bins["edges"], dtype=np.float64)
    accuracy = np.asarray(bins["accuracy"], dtype=np.float64)
    confidence = np.asarray(bins["confidence"], dtype=np.float64)
    filled = np.asarray(bins["count"]) > 0  # an empty bin has no accuracy to show
    widths = np.diff(edges)
    left, width = edges[:-1][filled], widths[filled]
    # The gap to each bin's mean confidence, behind the accuracy bars so that it never covers one: above a
    # bar the bin is over-confident; an under-confident bin's gap lies inside its bar, and its confidence
    # line shows where it ends.
    ax.bar(left, confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=width, align="edge",
           edgecolor="tab:red", color="tab:red", alpha=0.25, hatch="//", zorder=1, label="gap to confidence")
    ax.bar(left, accuracy[filled], width=width, align="edge", edgecolor="black", color="tab:blue", alpha=0.8,
           zorder=2, label="accuracy")
    ax.hlines(confidence[filled], left, left + width, colors="tab:red", linewidth=2, zorder=3,
              label="mean confidence")
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{label}\nECE {100 * ece_from_bins(bins):.2f}%")
    ax.legend(loc="upper left", fontsize=8)


def _save_png(fig, path: str | os.PathLike) -> Path:
    # The temporary name has no .png suffix, so the format is given explicitly.
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))


# --------------------------------------------------------------------------------------------- tables


def per_class_table(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per class: ``class``, ``precision``, ``recall``, ``f1`` (percent) and ``support``."""
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), labels=labels, average=None, zero_division=0
    )
    return [
        {
            "class": name,
            "precision": 100.0 * float(precision[i]),
            "recall": 100.0 * float(recall[i]),
            "f1": 100.0 * float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cell(text: Any) -> str:
    # A pipe would end the table cell early.
    return str(text).replace("|", "\\|")


def _percent(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2f}"


def _ordered(keys: Sequence[str], preferred: Sequence[str]) -> list[str]:
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


def _results_section(evaluation: Mapping[str, Mapping[str, Any]], not_held_out: Mapping[str, str]) -> list[str]:
    """The scores table of each split; a split the members learned from says so under its title."""
    lines = ["## Accuracy and weighted F1 (%)", ""]
    for split in _ordered(list(evaluation), SPLIT_ORDER):
        modes = _ordered(list(evaluation[split]), MODE_ORDER)
        if not modes:
            continue
        header = ["model"]
        for mode in modes:
            suffix = MODE_LABELS.get(mode, f" ({mode})")
            header += [f"accuracy{suffix}", f"F1{suffix}"]
        rows = [[_cell(name)] + _scores(evaluation[split], modes, name) for name in _member_names(evaluation[split])]
        rows.append(["**ensemble**"] + [f"**{v}**" for v in _scores(evaluation[split], modes, None)])
        lines += [f"### {split}{_sample_count(evaluation[split])}", ""]
        if not_held_out.get(split):
            lines += [f"*{split.capitalize()} scores are {not_held_out[split]}.*", ""]
        lines += _markdown_table(header, rows) + [""]
    return lines


def _member_names(split_results: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for mode_results in split_results.values():
        names += [n for n in (mode_results.get("members") or {}) if n not in names]
    return names


def _scores(split_results: Mapping[str, Any], modes: Sequence[str], member: str | None) -> list[str]:
    """Accuracy and F1 per mode of one member (``None``: the ensemble); a dash where it was not measured."""
    cells = []
    for mode in modes:
        results = split_results[mode]
        metrics = results.get("ensemble") if member is None else (results.get("members") or {}).get(member)
        metrics = metrics or {}
        cells += [_percent(metrics.get("accuracy")), _percent(metrics.get("f1_weighted"))]
    return cells


def _sample_count(split_results: Mapping[str, Any]) -> str:
    for results in split_results.values():
        count = (results.get("ensemble") or {}).get("num_samples")
        if count is not None:
            return f" ({count} videos)"
    return ""


def _per_class_section(rows: Sequence[Mapping[str, Any]], caption: str | None) -> list[str]:
    lines = ["## Per class", ""]
    if caption:
        lines += [caption, ""]
    table_rows = [
        [_cell(r["class"]), _percent(r["precision"]), _percent(r["recall"]), _percent(r["f1"]), str(r["support"])]
        for r in rows
    ]
    return lines + _markdown_table(["class", "precision (%)", "recall (%)", "F1 (%)", "support"], table_rows) + [""]


def _calibration_section(calibration: Mapping[str, Any]) -> list[str]:
    lines = ["## Calibration", ""]
    fitted_on = calibration.get("calibrated_on") or calibration.get("split")
    if fitted_on:
        lines += [f"Temperatures fitted on {fitted_on}, for plain and for TTA-averaged predictions apart; ECE "
                  "over equal-width confidence bins.", ""]
    modes = calibration.get("modes") or {"plain": calibration}
    rows = []
    for mode, values in modes.items():
        # ECE is a fraction in [0, 1]; the rest of the report is in percent.
        ece = [f"{100 * float(values[k]):.2f}" if values.get(k) is not None else "–" for k in ("ece_before", "ece_after")]
        rows.append([mode, f"{float(values['temperature']):.4f}", *ece])
    lines += _markdown_table(["predictions", "temperature", "ECE before scaling (%)", "ECE after scaling (%)"], rows)
    for mode, reason in (calibration.get("skipped") or {}).items():
        lines += ["", f"{'TTA' if mode == 'tta' else mode.capitalize()} predictions: {reason}."]
    return lines + [""]


def _training_section(histories: Mapping[str, Mapping[str, Sequence[float]]],
                      best_epochs: Mapping[str, int | None]) -> list[str]:
    rows = []
    for name, history in histories.items():
        val_acc = list(history.get("val_acc") or [])
        times = list(history.get("epoch_time") or [])
        best = best_epochs.get(name)  # the epoch the trainer kept (0-based, as checkpoints store it)
        known = best is not None and 0 <= best < len(val_acc)
        rows.append([
            _cell(name),
            str(len(history.get("train_loss") or val_acc)),
            f"{val_acc[best]:.2f}" if known else "–",
            str(best + 1) if known else "–",
            "–" if not times else f"{float(np.mean(times)):.1f}",
        ])
    header = ["member", "epochs", "best val accuracy (%)", "best epoch", "mean epoch time (s)"]
    return ["## Training", ""] + _markdown_table(header, rows) + [""]


def _figure_lines(output_dir: Path, caption: str, figure: str | os.PathLike) -> list[str]:
    # Relative links keep the report readable when the folder is moved or published as a whole.
    figure = Path(figure)
    if figure.is_absolute():
        figure = Path(os.path.relpath(figure, output_dir.resolve()))
    relative = figure.as_posix()
    return [f"![{caption}]({relative})", ""]


# --------------------------------------------------------------------------------------------- misses


@dataclass(frozen=True)
class Miss:
    """A video the ensemble gets wrong."""

    index: int  # its row in the split
    true_class: int
    predicted: int
    confidence: float  # the ensemble's probability for the (wrong) class it predicted
    true_probability: float  # and for the true class


def confident_misses(
    y_true: Sequence[int] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    per_class: int = MISSES_PER_CLASS,
) -> dict[int, list[Miss]]:
    """For every class index, up to ``per_class`` of its videos whose top class in ``probabilities``
    (``[N, C]``) is another, the most confident wrong prediction first (ties: in split order).

    The most confident misses are the telling ones: a confident miss is either a wrong label or a real
    blind spot, while a barely-lost vote says little."""
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(y_true).astype(np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probabilities must be [N, C] for N labels, got {probs.shape} for {labels.shape}")
    if per_class < 0:
        raise ValueError(f"per_class must be at least 0, got {per_class}")
    rows = np.arange(len(labels))
    predicted = probs.argmax(axis=1)
    confidence = probs[rows, predicted]
    misses: dict[int, list[Miss]] = {}
    for cls in range(probs.shape[1]):
        wrong = rows[(labels == cls) & (predicted != cls)]
        # A stable sort on the negated confidence: most confident first, equal ones in split order.
        chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:per_class]
        misses[cls] = [Miss(int(i), cls, int(predicted[i]), float(confidence[i]), float(probs[i, cls]))
                       for i in chosen]
    return misses


def write_miss_strips(
    misses: Sequence[Miss],
    video_ids: Sequence[str],
    videos_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    frames: int = STRIP_FRAMES,
    frame_size: int = STRIP_FRAME_SIZE,
    max_seconds: float | None = STRIP_DECODE_SECONDS,
) -> tuple[dict[int, Path], dict[int, str]]:
    """One PNG per miss under ``output_dir/misses``: ``frames`` frames spread evenly over the video
    ``videos_dir/video_ids[miss.index]``, side by side, each resized and centre-cropped to ``frame_size`` as
    the extractor crops the model's input, so the strip shows what the model saw. Returns
    ``({index: strip path}, {index: why there is no strip})``: a video that is missing or cannot be decoded
    gets a reason, never an exception."""
    # Imported here: PyAV and torch load only when there are videos to decode.
    import functools

    from ..features.extract.decoder_pool import DecoderPool
    from ..features.extract.video import decode_clip

    videos_dir, folder = Path(videos_dir), Path(output_dir) / MISSES_DIR
    strips: dict[int, Path] = {}
    reasons: dict[int, str] = {}
    found: list[tuple[Miss, Path]] = []
    for miss in misses:
        video_id = video_ids[miss.index]
        # Checked by name, not by resolving: a videos folder of symbolic links to files elsewhere is common,
        # but an id of the feature file must not lead out of the folder it names.
        relative = Path(os.path.normpath(video_id))
        if relative.is_absolute() or relative.parts[:1] == ("..",):
            reasons[miss.index] = f"its id leads outside {videos_dir}"
        elif not (videos_dir / relative).is_file():
            reasons[miss.index] = f"not found in {videos_dir}"
        else:
            found.append((miss, videos_dir / relative))
    if not found:
        return strips, reasons
    # In a watched decoder process, as every decode: a file that hangs the decoder costs max_seconds, no more.
    decode = functools.partial(decode_clip, num_frames=frames, image_size=frame_size, sampling="auto",
                               max_seconds=max_seconds)
    with DecoderPool(1, max_seconds) as pool:
        for (miss, path), (clip, error) in zip(found, pool.imap(decode, ((p,) for _, p in found), ahead=2)):
            if error is not None:
                # The row names the video already; the error's own copy of the path is left out.
                reasons[miss.index] = f"cannot be decoded ({error.removeprefix(f'{path}: ')})"
                continue
            strip = _strip(clip.frames.permute(0, 2, 3, 1).numpy())
            target = folder / f"{miss.index:05d}_{_slug(video_ids[miss.index])}.png"
            strips[miss.index] = atomic_write(target, lambda tmp: _save_rgb(strip, tmp))
    return strips, reasons


def _remove_stale_strips(output_dir: Path, kept: Sequence[Path]) -> None:
    """Strips an earlier report left in ``output_dir/misses`` go, so the folder holds what report.md links."""
    folder = output_dir / MISSES_DIR
    if folder.is_dir():
        for stale in set(folder.glob("*.png")) - set(kept):
            stale.unlink(missing_ok=True)


def _strip(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames side by side, a white gap between each."""
    count, height, _, _ = frames.shape
    gap = np.full((height, _STRIP_GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        parts += [gap] if i else []
        parts.append(frame)
    return np.concatenate(parts, axis=1) if count else np.zeros((1, 1, 3), dtype=np.uint8)


def _save_rgb(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    # The temporary name has no .png suffix, so the format is given explicitly.
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(path, format="PNG")


def _slug(video_id: str) -> str:
    # A file name from the video's: letters, digits, '.', '-' and '_' only, short; the row index before it
    # keeps two videos of one name apart.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(video_id).stem).strip("._")[:60] or "video"


@dataclass
class MissesSection:
    """What the report's misses section shows: :func:`confident_misses` of the scored split, its labels and
    top classes, the videos' ids (None when the feature file has none) and, when the videos were looked for,
    the strips and the reasons some have none (:func:`write_miss_strips`)."""

    misses: Mapping[int, Sequence[Miss]]
    class_names: Sequence[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    video_ids: Sequence[str] | None = None
    strips: Mapping[int, Path] | None = None  # None: the videos' folder was not given
    reasons: Mapping[int, str] | None = None
    split: str | None = None
    per_class: int = MISSES_PER_CLASS

    def lines(self, output_dir: Path) -> list[str]:
        intro = (f"Per true class, up to {self.per_class} of the videos the ensemble gets wrong, the most confident "
                 "first; confidence is the ensemble's calibrated probability for the class it wrongly chose, "
                 "beside its probability for the true class.")
        if self.strips is not None:
            intro += (f" Each strip shows {STRIP_FRAMES} frames spread over the video, cropped as the model sees "
                      "them: a video that plainly shows the predicted class points to a wrong label, one that "
                      "plainly shows its true class to a model error.")
        elif self.video_ids is not None:
            intro += (" Frame strips need the folder the features were extracted from: `vidtempo evaluate "
                      "--videos-dir DIR`.")
        if self.video_ids is None:
            intro += " The feature file records no video ids, so each video is named by its row in the split."
        lines = [f"## Most confident misses{f' ({self.split})' if self.split else ''}", "", intro, ""]
        header = ["video", "predicted", "confidence (%)", "true class (%)"]
        header += ["frames"] if self.strips is not None else []
        for cls, name in enumerate(self.class_names):
            shown = self.misses.get(cls) or []
            total = int(np.sum(self.y_true == cls))
            wrong = int(np.sum((self.y_true == cls) & (self.y_pred != cls)))
            lines += [f"### {_cell(name)}: {wrong} of {total} missed", ""]
            if not shown:
                lines += ["No misses." if total else "No videos of this class in the split.", ""]
                continue
            lines += _markdown_table(header, [self._row(output_dir, miss) for miss in shown]) + [""]
        return lines

    def _row(self, output_dir: Path, miss: Miss) -> list[str]:
        name = self.video_ids[miss.index] if self.video_ids is not None else f"row {miss.index}"
        row = [f"`{_cell(name)}`" if self.video_ids is not None else name, _cell(self.class_names[miss.predicted]),
               f"{100 * miss.confidence:.2f}", f"{100 * miss.true_probability:.2f}"]
        if self.strips is not None:
            strip = self.strips.get(miss.index)
            reason = (self.reasons or {}).get(miss.index, "not decoded")
            # Square brackets in the alt text would end it early.
            alt = _cell(name).replace("[", "(").replace("]", ")")
            row.append(_figure_lines(output_dir, alt, strip.resolve())[0] if strip else f"no strip: {_cell(reason)}")
        return row


# --------------------------------------------------------------------------------------------- report


def write_report(
    output_dir: str | os.PathLike,
    *,
    title: str,
    evaluation: Mapping[str, Mapping[str, Any]] | None = None,
    histories: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    best_epochs: Mapping[str, int | None] | None = None,
    calibration: Mapping[str, Any] | None = None,
    per_class: Sequence[Mapping[str, Any]] | None = None,
    per_class_caption: str | None = None,
    figures: Mapping[str, str | os.PathLike] | None = None,
    notes: Sequence[str] | None = None,
    misses: MissesSection | None = None,
    not_held_out: Mapping[str, str] | None = None,
) -> Path:
    """Write ``output_dir/report.md`` and return its path.

    ``evaluation``: see the module docstring. ``histories``: member name -> trainer history;
    ``best_epochs``: member name -> the epoch the trainer kept (0-based; shown 1-based).
    ``calibration``: ``temperature``, optional ``ece_before``, ``ece_after`` (fractions in [0, 1]) and
    ``split`` (where the temperature was fitted). ``per_class``: :func:`per_class_table` rows.
    ``figures``: PNG paths (absolute, or relative to ``output_dir``) keyed ``confusion_matrix``,
    ``training_curves`` or ``reliability``, each shown in its section; other keys go under "Figures".
    ``notes``: free text, one bullet each. ``misses``: the most confident misses, after the confusion matrix.
    """
    output_dir = Path(output_dir)
    figures = dict(figures or {})
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    if evaluation:
        lines += _results_section(evaluation, not_held_out or {})
    if per_class:
        lines += _per_class_section(per_class, per_class_caption)
    if "confusion_matrix" in figures:
        lines += _figure_lines(output_dir, "Confusion matrix", figures.pop("confusion_matrix"))
    if misses is not None:
        lines += misses.lines(output_dir)
    if calibration:
        lines += _calibration_section(calibration)
    if "reliability" in figures:
        lines += _figure_lines(output_dir, "Reliability diagram", figures.pop("reliability"))
    if histories:
        lines += _training_section(histories, best_epochs or {})
    if "training_curves" in figures:
        lines += _figure_lines(output_dir, "Training curves", figures.pop("training_curves"))
    if figures:
        lines += ["## Figures", ""]
        for caption, figure in figures.items():
            lines += _figure_lines(output_dir, caption, figure)
    text = "\n".join(lines).rstrip("\n") + "\n"
    return write_text(text, output_dir / REPORT_NAME)


def build_report(
    output_dir: str | os.PathLike,
    evaluation: Mapping[str, Mapping[str, Any]] | None,
    histories: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    best_epochs: Mapping[str, int | None] | None = None,
    calibration: Mapping[str, Any] | None = None,
    y_true: Sequence[int] | np.ndarray | None = None,
    y_pred: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    reliability: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    title: str = "vidtempo evaluation report",
    notes: Sequence[str] | None = None,
    probabilities: Sequence[Sequence[float]] | np.ndarray | None = None,
    video_ids: Sequence[str] | None = None,
    videos_dir: str | os.PathLike | None = None,
    misses_per_class: int = MISSES_PER_CLASS,
    split: str | None = None,
    not_held_out: Mapping[str, str] | None = None,
) -> Path:
    """Write every plot the inputs allow, then ``report.md`` linking them; returns the report's path.
    ``not_held_out``: ``{split: why its scores are not held out}``, said beside those scores.

    ``y_true``/``y_pred`` with ``class_names`` (the ensemble's predictions on one split, say test) give the
    per-class table and the confusion matrix. ``reliability`` is ``{"before": bins, "after": bins}`` from
    ``calibration.reliability_bins`` (``after`` optional).

    ``probabilities`` (``[N, C]``, whose top classes are ``y_pred``) with ``y_true`` and ``class_names`` add
    the ``misses_per_class`` most confident misses of each class; ``video_ids`` name them (paths relative
    to ``videos_dir``) and, with ``videos_dir``, each gets a strip of its frames under ``misses/``.
    ``split`` names the split in that section's title.
    """
    output_dir = Path(output_dir)
    figures = _plot_figures(output_dir, histories, y_true, y_pred, class_names, reliability)
    per_class = None
    if y_true is not None and y_pred is not None and class_names is not None:
        per_class = per_class_table(y_true, y_pred, class_names)
    misses = None
    if probabilities is not None and y_true is not None and class_names is not None:
        misses = _misses(output_dir, np.asarray(y_true), np.asarray(probabilities), class_names, video_ids,
                         videos_dir, misses_per_class, split)
    return write_report(
        output_dir,
        title=title,
        evaluation=evaluation,
        histories=histories,
        best_epochs=best_epochs,
        calibration=calibration,
        per_class=per_class,
        per_class_caption=f"Ensemble predictions, {len(y_true)} videos." if per_class else None,
        figures=figures,
        notes=notes,
        misses=misses,
        not_held_out=not_held_out,
    )


def _plot_figures(output_dir: Path, histories, y_true, y_pred, class_names, reliability) -> dict[str, str]:
    """Every plot the inputs allow, by report section: file names relative to ``output_dir``."""
    figures: dict[str, str] = {}
    if y_true is not None and y_pred is not None and class_names is not None:
        matrix = sklearn_confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=range(len(class_names)))
        plot_confusion_matrix(matrix, class_names, output_dir / CONFUSION_MATRIX_PNG)
        figures["confusion_matrix"] = CONFUSION_MATRIX_PNG
    if histories and any(histories.values()):
        plot_training_curves(histories, output_dir / TRAINING_CURVES_PNG)
        figures["training_curves"] = TRAINING_CURVES_PNG
    if reliability and reliability.get("before") is not None:
        plot_reliability_diagram(reliability["before"], reliability.get("after"), output_dir / RELIABILITY_PNG)
        figures["reliability"] = RELIABILITY_PNG
    return figures


def _misses(output_dir: Path, y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
            video_ids: Sequence[str] | None, videos_dir: str | os.PathLike | None, per_class: int,
            split: str | None) -> MissesSection:
    """The misses section's content, decoding the strips when the videos can be found."""
    if probabilities.shape != (len(y_true), len(class_names)):
        raise ValueError(f"probabilities must be [{len(y_true)}, {len(class_names)}], got {probabilities.shape}")
    if video_ids is not None and len(video_ids) != len(y_true):
        raise ValueError(f"{len(video_ids)} video ids for {len(y_true)} videos")
    misses = confident_misses(y_true, probabilities, per_class)
    strips = reasons = None
    if videos_dir is not None and video_ids is not None:
        strips, reasons = write_miss_strips([m for shown in misses.values() for m in shown], video_ids, videos_dir,
                                            output_dir)
    _remove_stale_strips(output_dir, list((strips or {}).values()))
    return MissesSection(misses, class_names, y_true, probabilities.argmax(axis=1), video_ids, strips, reasons,
                         split, per_class)
