"""The ``vidtempo`` command: a thin layer over the Python API.

Exit status: 0 on success, 2 for bad input or usage (one line naming the file or argument), 1 for anything
unexpected (with its traceback, since that is a bug).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from .._version import __version__
from .options import (
    add_checkpoints_option,
    add_decode_limit_options,
    add_frames_option,
    decode_limits,
    add_device_option,
    add_precision_option,
    add_runtime_option,
    add_threads_option,
    use_threads,
    add_quiet_option,
    add_suffix_option,
    add_tta_option,
    checkpoint_source,
    default_of,
    with_default,
)
from ..config import DEFAULT_NUM_MODELS, ENSEMBLE_STRATEGIES, PRECISIONS, WEIGHT_AVERAGINGS, TrainingConfig, make_config
from ..errors import VidtempoError
from ..serve.settings import API_KEY_ENV, ServiceSettings
from ..features.sharding import resolve_shard
from ..inference.timeline import TimelineOptions, add_timeline_options, check_timeline_args, run_timeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, category, *rest: f"vidtempo: warning: {message}\n"
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not at the interpreter's exit
        return status
    except VidtempoError as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidtempo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``| head``): stop quietly, as a shell tool does, with
        # SIGPIPE's status. Output still buffered goes to /dev/null so that the exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidtempo", description="Sort videos by content type.")
    parser.add_argument("--version", action="version", version=f"vidtempo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_split(sub)
    _add_extract(sub)
    _add_merge(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_distill(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_serve(sub)
    _add_inspect(sub)
    _add_export(sub)
    _add_demo(sub)
    return parser


# ----------------------------------------------------------------------------------------------- split
def _add_split(sub) -> None:
    p = sub.add_parser("split", help="make train/val/test folders from one folder of videos per class")
    p.add_argument("--videos-dir", required=True, type=Path, help="ALL/{Category}/**/*.mp4")
    p.add_argument("--output-dir", required=True, type=Path, help="new folder for {train,val,test}/{Category}/")
    p.add_argument("--val", type=float, default=0.15, help="share of each class for validation (default %(default)s)")
    p.add_argument("--test", type=float, default=0.15, help="share of each class for testing (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the shuffle's seed (default %(default)s)")
    p.add_argument("--copy", action="store_true", help="copy the files (default: symbolic links to them)")
    p.set_defaults(run=_run_split)


def _run_split(args) -> int:
    from ..features.video_splits import split_videos

    counts = split_videos(args.videos_dir, args.output_dir, val=args.val, test=args.test, seed=args.seed,
                          copy=args.copy)
    for split, per_class in counts.items():
        print(f"{split}: " + ", ".join(f"{category} {n}" for category, n in per_class.items()))
    return 0


# --------------------------------------------------------------------------------------------- extract
def _add_extract(sub) -> None:
    try:
        from .extract import add_extract_arguments, run_extract
    except ImportError:  # extraction needs PyAV and the backbone weights package
        return
    p = sub.add_parser("extract", help="decode videos and write per-frame CNN features to the feature store")
    add_extract_arguments(p)
    p.set_defaults(run=run_extract)


def _add_merge(sub) -> None:
    try:
        from .extract import add_merge_arguments, run_merge
    except ImportError:  # lives with extraction, which needs PyAV and the backbone weights package
        return
    p = sub.add_parser("merge-features", help="merge the shard files of 'extract --shard I/N' into split files")
    add_merge_arguments(p)
    p.set_defaults(run=run_merge)


# ----------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model or an ensemble on a feature folder")
    p.add_argument("--features-dir", required=True, type=Path, help="folder with {split}_features{suffix}.h5")
    p.add_argument("--output-dir", required=True, type=Path, help="where checkpoints go")
    p.add_argument("--results-dir", type=Path, help="where results JSON goes (default: OUTPUT_DIR/results)")
    add_suffix_option(p)
    p.add_argument("--num-models", type=int, default=DEFAULT_NUM_MODELS,
                   help=f"ensemble members (default {DEFAULT_NUM_MODELS})")
    _add_recipe_options(p, "random seed of the first member")
    p.add_argument("--ensemble-strategy", choices=ENSEMBLE_STRATEGIES,
                   help=with_default("seeds: members learn from the train split with different seeds; cross_fit: "
                                     "train + val pooled into one fold per member, each member validating on its "
                                     "own fold", TrainingConfig, "ensemble_strategy"))
    p.add_argument("--weight-averaging", choices=WEIGHT_AVERAGINGS,
                   help=with_default("ema: also keep a moving average of the weights, selected when it validates "
                                     "better", TrainingConfig, "weight_averaging"))
    p.add_argument("--mixup-alpha", type=float, help=with_default("mixup of pairs of videos (0: off)", TrainingConfig,
                                                                  "mixup_alpha"))
    p.add_argument("--cutmix-alpha", type=float, help=with_default("cutmix over time (0: off)", TrainingConfig,
                                                                    "cutmix_alpha"))
    add_device_option(p)
    add_threads_option(p)
    p.add_argument("--model-config", help="model settings: a JSON file, or an inline JSON object")
    p.add_argument("--training-config", help="training settings: a JSON file, or an inline JSON object")
    p.add_argument("--resume", metavar="auto|CKPT.pt",
                   help="continue the run saved in this checkpoint; 'auto': continue an interrupted ensemble "
                        "(finished members kept, the interrupted one from its latest periodic checkpoint)")
    p.add_argument("--member", type=int, metavar="I",
                   help="train only member I of the --num-models ensemble (members can train in parallel)")
    p.add_argument("--assemble", action="store_true",
                   help="only combine already trained members into the ensemble (after --member runs)")
    add_quiet_option(p, help="no progress bars or per-epoch lines")
    p.add_argument("--tensorboard", type=Path, metavar="DIR", help="also log each epoch's metrics for TensorBoard")
    p.set_defaults(run=_run_train)


def _add_recipe_options(p, seed_help: str) -> None:
    """The training flags of train and distill, left unset unless given, so the values of --training-config
    stand (``_recipe_flags`` checks them)."""
    p.add_argument("--epochs", type=int, help=with_default("maximum epochs", TrainingConfig, "num_epochs"))
    p.add_argument("--batch-size", type=int, help=with_default("batch size", TrainingConfig, "batch_size"))
    p.add_argument("--lr", type=float, help=with_default("learning rate", TrainingConfig, "learning_rate"))
    p.add_argument("--workers", type=int, help=with_default("data loader workers", TrainingConfig, "num_workers"))
    p.add_argument("--seed", type=int, help=with_default(seed_help, TrainingConfig, "seed"))
    p.add_argument("--precision", choices=PRECISIONS,
                   help=with_default("fp32, tf32, bf16 or fp16 (GPU); auto picks from the hardware", TrainingConfig,
                                     "precision"))


def _recipe_flags(args) -> None:
    """Refuse a flag of ``_add_recipe_options`` out of its range, in one line."""
    for flag, value, least in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                               ("--workers", args.workers, 0)):
        if value is not None and value < least:
            raise VidtempoError(f"{flag} must be {'a positive integer' if least else '0 or more'}, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise VidtempoError(f"--lr must be a positive number, got {args.lr}")


def _settings(cls: type, given: str | None, flag: str, flags: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The settings given to ``flag`` (a JSON file or inline object, checked against ``cls``), with the
    command's own flags that were given (``(key, value)``, None when not given) on top."""
    from ..config import load_config_file

    values = load_config_file(given, cls, flag) if given else {}
    values.update({key: value for key, value in flags if value is not None})
    return values


def _train_configs(args) -> tuple[dict | None, dict]:
    """The model and training settings of ``vidtempo train``: its config files or inline objects, with the
    flags given on top; each flag and field checked."""
    from ..config import ModelConfig, load_config_file

    if args.num_models < 1:
        raise VidtempoError(f"--num-models must be at least 1, got {args.num_models}")
    _recipe_flags(args)
    model_config = load_config_file(args.model_config, ModelConfig, "--model-config") if args.model_config else None
    training_config = _settings(TrainingConfig, args.training_config, "--training-config", (
        ("num_workers", args.workers), ("seed", args.seed), ("precision", args.precision),
        ("ensemble_strategy", args.ensemble_strategy), ("weight_averaging", args.weight_averaging),
        ("mixup_alpha", args.mixup_alpha), ("cutmix_alpha", args.cutmix_alpha)))
    return model_config, training_config


def _run_train(args) -> int:
    from ..features.store import detect_suffix

    model_config, training_config = _train_configs(args)
    suffix = detect_suffix(args.features_dir) if args.suffix is None else args.suffix
    use_threads(args)
    from ..checkpoint import load_checkpoint  # torch: after the arguments are checked
    from ..training.trainer import EnhancedTemporalModelTrainer

    trainer = EnhancedTemporalModelTrainer(
        args.features_dir, args.output_dir, device=args.device, model_config=model_config,
        training_config=training_config, quiet=args.quiet, tensorboard_dir=args.tensorboard,
    )
    results_dir = args.results_dir or args.output_dir / "results"
    say = print if trainer.dist.is_main else (lambda *a, **k: None)  # under torchrun, one process reports
    common = dict(num_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                  feature_file_suffix=suffix, results_dir=results_dir)
    if args.resume == "auto":
        if args.member is not None:
            results = trainer.train_member(args.member, args.num_models, resume=True, **common)
            say(f"{results['model_name']}: test accuracy {results['test']['accuracy']:.2f}%")
        else:
            _, results = trainer.train_ensemble(num_models=args.num_models, resume=True, **common)
            say(f"ensemble test accuracy {results['ensemble']['test']['accuracy']:.2f}% "
                f"-> {results_dir}/ensemble_final_results.json")
    elif args.resume:
        name = load_checkpoint(args.resume, mmap=True).get("model_name") or "ensemble_model_1"
        _, results = trainer.train_single_model(model_name=name, resume_from=args.resume, **common)
        say(f"{name}: test accuracy {results['test']['accuracy']:.2f}% -> {results_dir}/{name}_results.json")
    elif args.member is not None:
        results = trainer.train_member(args.member, args.num_models, **common)
        say(f"{results['model_name']}: test accuracy {results['test']['accuracy']:.2f}%")
    elif args.assemble:
        _, results = trainer.assemble_ensemble(args.num_models, feature_file_suffix=suffix, results_dir=results_dir)
        say(f"ensemble test accuracy {results['ensemble']['test']['accuracy']:.2f}% "
              f"-> {results_dir}/ensemble_final_results.json")
    elif args.num_models == 1:
        _, results = trainer.train_single_model(model_name="ensemble_model_1", **common)
        say(f"test accuracy {results['test']['accuracy']:.2f}% -> {results_dir}/ensemble_model_1_results.json")
    else:
        _, results = trainer.train_ensemble(num_models=args.num_models, **common)
        say(
            f"ensemble test accuracy {results['ensemble']['test']['accuracy']:.2f}% "
            f"(TTA {results['ensemble']['test_tta']['accuracy']:.2f}%) -> {results_dir}/ensemble_final_results.json"
        )
    return 0


# --------------------------------------------------------------------------------------------- distill
def _add_distill(sub) -> None:
    from ..config import STUDENT_MODEL_CONFIG, DistillConfig

    p = sub.add_parser("distill", help="train one small model (a student) to answer as a trained ensemble does")
    p.add_argument("--features-dir", required=True, type=Path,
                   help="folder with {train,val}_features{suffix}.h5 (the test split is never read)")
    p.add_argument("--teacher", required=True, type=Path, help="the ensemble's checkpoint folder (or a checkpoint)")
    p.add_argument("--output-dir", required=True, type=Path, help="the student's folder: a checkpoint folder "
                   "that evaluate, predict, serve and export take as they take an ensemble")
    p.add_argument("--results-dir", type=Path, help="where results JSON goes (default: OUTPUT_DIR/results)")
    add_suffix_option(p)
    _add_recipe_options(p, "random seed")
    p.add_argument("--temperature", type=float,
                   help=with_default("softens the teacher's and the student's distributions", DistillConfig,
                                     "temperature"))
    p.add_argument("--soft-weight", type=float,
                   help=with_default("the teacher's share of the loss (the labels have the rest)", DistillConfig,
                                     "soft_weight"))
    p.add_argument("--model-config", help="the student's model settings, over the default student "
                   f"{json.dumps(STUDENT_MODEL_CONFIG)}: a JSON file, or an inline JSON object")
    p.add_argument("--training-config", help="training settings: a JSON file, or an inline JSON object")
    p.add_argument("--distill-config", help="distillation settings (temperature, soft_weight, random_views, "
                   "min_subset_ratio, selection_folds): a JSON file, or an inline JSON object")
    p.add_argument("--resume", choices=("auto",), help="auto: keep a finished student, continue an interrupted one")
    p.add_argument("--tensorboard", type=Path, metavar="DIR", help="also log each epoch's metrics for TensorBoard")
    add_device_option(p)
    add_threads_option(p)
    add_quiet_option(p)
    p.set_defaults(run=_run_distill)


def _run_distill(args) -> int:
    from ..config import DistillConfig, ModelConfig
    from ..features.store import detect_suffix

    _recipe_flags(args)
    if not args.teacher.exists():
        raise VidtempoError(f"{args.teacher}: --teacher: no such file or folder")
    model_config = _settings(ModelConfig, args.model_config, "--model-config", ())
    training_config = _settings(TrainingConfig, args.training_config, "--training-config", (
        ("num_workers", args.workers), ("seed", args.seed), ("precision", args.precision),
        ("num_epochs", args.epochs), ("batch_size", args.batch_size), ("learning_rate", args.lr)))
    distill_config = _settings(DistillConfig, args.distill_config, "--distill-config", (
        ("temperature", args.temperature), ("soft_weight", args.soft_weight)))
    make_config(DistillConfig, distill_config)  # one line for a bad value, before torch loads
    suffix = detect_suffix(args.features_dir) if args.suffix is None else args.suffix
    use_threads(args)
    from ..training.distill import DISTILL_RESULTS_NAME, distill

    results_dir = args.results_dir or args.output_dir / "results"
    _, results = distill(args.features_dir, args.teacher, args.output_dir, model_config=model_config,
                         training_config=training_config, distill_config=distill_config,
                         feature_file_suffix=suffix, device=args.device, quiet=args.quiet,
                         resume=args.resume == "auto", results_dir=results_dir,
                         tensorboard_dir=args.tensorboard)
    held_out = results["held_out"]
    print(f"student: agreement with the teacher {held_out['agreement']:.2f}%, accuracy {held_out['accuracy']:.2f}% "
          f"on {held_out['videos']} held-out videos; {results['parameters']:,} parameters "
          f"(teacher {results['teacher_parameters']:,}) -> {args.output_dir}, {results_dir / DISTILL_RESULTS_NAME}")
    return 0


# ------------------------------------------------------------------------------------------------ tune
def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search the training recipe on your feature folder (Optuna)")
    p.add_argument("--features-dir", required=True, type=Path, help="folder with {split}_features{suffix}.h5")
    p.add_argument("--output-dir", required=True, type=Path, help="where the best configs, report and study go")
    add_suffix_option(p)
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default %(default)s)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="stop starting new trials after this many seconds; the trial running then finishes, so "
                        "the run can last up to one trial longer")
    p.add_argument("--storage", help="any database URL Optuna takes (default sqlite:///OUTPUT_DIR/study.db); "
                                     "processes given the same one share the study")
    p.add_argument("--study-name", default="vidtempo", help="(default %(default)s)")
    p.add_argument("--space", help="search-space entries replacing the defaults: a JSON file or an inline object")
    p.add_argument("--model-config", help="model settings every trial starts from (JSON file or inline object); "
                                          "the first trial tries them as they are")
    p.add_argument("--training-config", help="training settings every trial starts from, likewise")
    p.add_argument("--folds", type=int, default=DEFAULT_NUM_MODELS, help="cross-fitting folds (default %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="(default %(default)s)")
    add_device_option(p)
    add_threads_option(p)
    add_quiet_option(p, help="only the closing line")
    p.set_defaults(run=_run_tune)


def _run_tune(args) -> int:
    from ..config import ModelConfig, TrainingConfig, load_config_file
    from ..features.store import detect_suffix

    space = load_config_file(args.space, flag="--space") if args.space else None
    model = load_config_file(args.model_config, ModelConfig, "--model-config") if args.model_config else {}
    training = (load_config_file(args.training_config, TrainingConfig, "--training-config")
                if args.training_config else {})
    if args.folds < 2:
        raise VidtempoError(f"--folds must be at least 2, got {args.folds}")
    suffix = detect_suffix(args.features_dir) if args.suffix is None else args.suffix
    use_threads(args)
    from ..training.tuning import Recipe, run_tuning

    best = run_tuning(args.features_dir, args.output_dir, suffix, args.trials, args.timeout, args.storage,
                      args.study_name, space, args.seed, args.folds, args.quiet, args.device, Recipe(model, training))
    print(f"chosen trial {best['trial']} of {best['trials']} ({best['why']}): {best['value']:.2f}% out-of-fold; "
          f"{args.output_dir}/best_model_config.json, best_training_config.json, report.md")
    return 0


# -------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score checkpoints on a feature split, members and ensemble")
    p.add_argument("--features-dir", required=True, type=Path, help="folder with {split}_features{suffix}.h5")
    add_checkpoints_option(p)
    p.add_argument("--split", default="test", help="split to score (default %(default)s)")
    add_suffix_option(p)
    add_tta_option(p, help="also score with test-time augmentation")
    add_device_option(p)
    add_threads_option(p)
    add_precision_option(p)
    add_runtime_option(p)
    p.add_argument("--output", type=Path, help="JSON results (default: CHECKPOINTS/evaluation_{split}.json; "
                                               "with --runtime onnx, evaluation_{split}_onnx.json)")
    p.add_argument("--report-dir", type=Path, help="plots and report.md (default: beside the JSON results)")
    p.add_argument("--videos-dir", type=Path, help="the folder the features were extracted from: the report shows "
                                                   "frames of each class's most confident misses")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from ..features.store import detect_suffix, read_split, split_path

    source = checkpoint_source(args.checkpoints)
    if args.videos_dir is not None and not args.videos_dir.is_dir():
        raise VidtempoError(f"--videos-dir {args.videos_dir}: not a folder")
    use_threads(args)
    from ..ensemble.ensemble import Ensemble  # torch: after the arguments are checked
    from ..ensemble.evaluation import evaluate_ensemble, write_evaluation_report
    from ..files import write_json

    suffix = detect_suffix(args.features_dir) if args.suffix is None else args.suffix
    split = read_split(split_path(args.features_dir, args.split, suffix))
    from ..inference.onnx_model import is_exported_model, resolve_runtime

    runtime = resolve_runtime(args.runtime, source, args.device)
    if runtime == "onnx" and not (args.tta and args.runtime == "auto" and not is_exported_model(source)):
        return _evaluate_exported(args, source, split)
    ensemble = Ensemble.from_checkpoints(source, device=args.device,
                                         precision=args.precision)
    if ensemble.settings.fitted_on == "out_of_fold" and args.split in ("train", "val"):
        warnings.warn(f"this ensemble is cross-fitted: its members learned from the {args.split} videos, so these "
                      "scores are not held-out scores (the test split is)", RuntimeWarning, stacklevel=1)
    evaluation = evaluate_ensemble(ensemble, {args.split: split}, tta=args.tta)
    scores = evaluation[args.split]
    report: dict[str, Any] = {"file": str(split.path), "split": args.split, "classes": ensemble.class_names,
                              **scores, "calibration": evaluation["calibration"]}
    if "early_exit" in evaluation:
        report["early_exit"] = evaluation["early_exit"]
    first = args.checkpoints[0]
    folder = first if first.is_dir() else first.parent
    output = args.output or folder / f"evaluation_{args.split}.json"
    write_json(report, output)
    histories = {name: meta["history"] for name, meta in zip(ensemble.names, ensemble.metadata) if meta.get("history")}
    markdown = write_evaluation_report(args.report_dir or output.parent / f"report_{args.split}", evaluation,
                                       ensemble.class_names, split.labels, histories=histories or None,
                                       best_epochs={name: meta.get("best_epoch")
                                                    for name, meta in zip(ensemble.names, ensemble.metadata)},
                                       title=f"vidtempo evaluation: {split.path.name}", videos_dir=args.videos_dir)
    print(_format_evaluation(report))
    print(f"results: {output}\nreport: {markdown}")
    return 0


def _evaluate_exported(args, source, split) -> int:
    """``evaluate --runtime onnx``: the plain scores of the exported graph (made beside the checkpoints when
    they are not an exported folder), JSON results and the printed table; the plots need ``--runtime torch``."""
    from ..files import write_json
    from ..inference.onnx_model import OnnxEnsemble, evaluate_exported, exported_folder

    if args.tta:
        raise VidtempoError("--tta: the ONNX runtime scores plain predictions; TTA needs --runtime torch")
    if args.videos_dir is not None:
        warnings.warn("--videos-dir: the ONNX runtime writes no report, so no frames of misses; the report needs "
                      "--runtime torch", RuntimeWarning, stacklevel=1)
    model = OnnxEnsemble(exported_folder(source), threads=args.threads)
    report = {"file": str(split.path), "split": args.split, "classes": model.class_names, "runtime": "onnx",
              "model": str(model.folder), **evaluate_exported(model, split)}
    first = args.checkpoints[0]
    output = args.output or (first if first.is_dir() else first.parent) / f"evaluation_{args.split}_onnx.json"
    write_json(report, output)
    print(_format_evaluation(report))
    print(f"ECE (ensemble): {report['calibration']['ece_after']:.4f}\nresults: {output}")
    return 0


def _format_evaluation(report: dict[str, Any]) -> str:
    modes = [m for m in ("plain", "tta") if m in report]
    header = f"{'model':<24}" + "".join(f"{m + ' acc':>12}{m + ' F1':>12}" for m in modes)
    lines = [f"{report['file']} ({report['split']}, {report['plain']['ensemble']['num_samples']} videos)", header]
    names = list(report["plain"]["members"]) + ["ensemble"]
    for name in names:
        row = f"{name:<24}"
        for mode in modes:
            m = report[mode]["members"].get(name) if name != "ensemble" else report[mode]["ensemble"]
            row += f"{m['accuracy']:>11.2f}%{m['f1_weighted']:>11.2f}%"
        lines.append(row)
    ensemble = report["plain"]["ensemble"]
    lines.append("per-class F1 (ensemble): " + ", ".join(f"{k} {v:.1f}%" for k, v in ensemble["per_class_f1"].items()))
    lines.append("confusion matrix (rows: true, columns: predicted; " + ", ".join(report["classes"]) + "):")
    lines.extend("  " + " ".join(f"{v:>6d}" for v in row) for row in ensemble["confusion_matrix"])
    early = report.get("early_exit")
    if early:
        lines.append(f"early exit (features of the prefixes only): answers equal to all steps' on "
                     f"{early['agreement']:.1f}% of videos, accuracy {early['accuracy']:.2f}% "
                     f"(all steps {early['full_accuracy']:.2f}%), {early['mean_steps']:.1f} of "
                     f"{early['full_steps']:.1f} steps read on average")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- predict
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify video files, or every video under a folder")
    p.add_argument("videos", nargs="*", type=Path, help="video files")
    add_checkpoints_option(p)
    add_tta_option(p, help="average over test-time augmentation views")
    p.add_argument("--json", action="store_true", help="print the full results as JSON")
    p.add_argument("--videos-dir", type=Path,
                   help="classify every video file under this folder (recursively) into --output")
    p.add_argument("--output", type=Path, help="with --videos-dir: a .csv or .jsonl file, one row per video, "
                   "written as it goes; rerunning the same command skips the videos it holds; with --timeline, "
                   ".jsonl (each row adds the video's segments)")
    p.add_argument("--shard", metavar="I/N|auto", help="with --videos-dir: classify only shard I of N (1-based) of "
                   "the sorted videos, as 'extract --shard' does; auto: from a Slurm array, a Kubernetes Indexed Job "
                   "(with VIDTEMPO_NUM_SHARDS) or torchrun")
    add_device_option(p)
    add_threads_option(p)
    add_precision_option(p)
    add_runtime_option(p)
    add_quiet_option(p, help="no progress bar (the closing summary line stays)")
    add_decode_limit_options(p)
    add_frames_option(p)
    add_timeline_options(p)
    p.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    check_timeline_args(args)
    if args.videos_dir is not None and args.videos:
        raise VidtempoError("predict: give video files or --videos-dir, not both")
    if args.videos_dir is None and not args.videos:
        raise VidtempoError("predict: no video files given (put them before --checkpoints, which takes several "
                            "paths), or give --videos-dir DIR")
    if args.videos_dir is None and (args.output or args.shard):
        raise VidtempoError("predict: --output and --shard go with --videos-dir")
    if args.videos_dir is not None and args.output is None:
        raise VidtempoError("predict: --videos-dir needs --output FILE.csv or FILE.jsonl")
    from ..inference.library import check_output_path

    if args.output is not None:
        check_output_path(args.output, args.timeline)
    shard = resolve_shard(args.shard) if args.shard else None
    limits = decode_limits(args)
    if args.videos_dir is not None:
        from ..features.extract.video import VIDEO_EXTENSIONS
        from ..inference.library import library_items

        args.library_items = library_items(args.videos_dir, shard)  # the folder is walked once, before models load
        if shard is None and not args.library_items:
            raise VidtempoError(f"{args.videos_dir}: no video files found ({', '.join(VIDEO_EXTENSIONS)})")
    source = checkpoint_source(args.checkpoints)
    use_threads(args)
    from ..inference.classify import VideoClassifier  # torch: after the arguments are checked

    classifier = VideoClassifier.from_checkpoints(source, device=args.device, tta=args.tta,
                                                  precision=args.precision, runtime=args.runtime,
                                                  frames=args.frames, **limits)
    if args.videos_dir is not None:
        return _predict_library(classifier, args, shard)
    if args.timeline:
        return run_timeline(classifier, args)
    results = classifier.classify(args.videos)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"vidtempo: error: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps([r for r in results if "error" not in r], indent=2))
    else:
        for r in results:
            if "error" in r:
                continue
            trust = r["trust"]
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            print(f"{r['video']}: {r['predicted_class']} ({100 * r['confidence']:.1f}%) trust {trust['score']:.2f} "
                  f"[{trust['flag']}] | " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top)
                  + f" | {r['timings_s']['total_s']:.2f}s")
    return 2 if failed else 0


def _predict_library(classifier, args, shard: tuple[int, int] | None) -> int:
    from ..progress import progress_bar

    from ..inference.library import PredictionWriter

    # Checked before the output is opened: checkpoints without a recorded window need --window-seconds.
    timeline = TimelineOptions(args.window_seconds, args.hop_seconds, args.switch_penalty).resolved(classifier) \
        if args.timeline else False
    todo = args.library_items
    with PredictionWriter(args.output, classifier.categories, timeline=args.timeline) as writer:
        pending = sum(item.video_id not in writer.done for item in todo)
        errors, frames_used = 0, []
        with progress_bar(total=len(todo), initial=len(todo) - pending, unit="video", quiet=args.quiet) as bar:
            for row in classifier.classify_items(todo, skip=writer.done, timeline=timeline):
                writer.write(row)
                errors += bool(row["error"])
                if row.get("frames_used") not in (None, ""):
                    frames_used.append(int(row["frames_used"]))
                bar.update(1)
    used = f", {sum(frames_used) / len(frames_used):.1f} frames embedded per video" if frames_used else ""
    print(f"{args.output}: {pending} videos classified ({errors} could not be read){used}, "
          f"{len(todo) - pending} already there", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP service and web page for classifying videos")
    add_checkpoints_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    for flag, field, kind, text in (
        ("--max-upload-mb", "max_upload_mb", float, "largest upload or download, in MB"),
        ("--url-timeout", "url_timeout_s", float, "seconds allowed for a whole URL download, waiting for a "
                                                   "download slot included"),
        ("--max-downloads", "max_downloads", int, "URL downloads at once; more wait"),
        ("--max-jobs", "max_jobs", int, "background jobs queued or running; more get 429 with Retry-After"),
        ("--max-disk-mb", "max_disk_mb", float, "disk for videos waiting to be classified; past it requests "
                                                 "get 429"),
        ("--max-connections", "max_connections", int, "connections served at once; more get 503"),
        ("--shutdown-timeout", "shutdown_timeout_s", float, "seconds that requests and jobs in flight get to "
                                                             "finish after SIGTERM"),
        ("--header-timeout", "header_timeout_s", float, "seconds a client has to send a request's line and "
                                                         "headers; slower ones get 408 and are closed"),
        ("--body-timeout", "body_timeout_s", float, "a body must arrive at least as fast as --max-upload-mb in "
                                                     "this many seconds; slower ones get 408"),
    ):
        p.add_argument(flag, type=kind, default=default_of(ServiceSettings, field),
                       help=with_default(text, ServiceSettings, field))
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let URLs reach private, loopback and link-local addresses and ports other than 80 and 443 "
                        "(for tests and internal networks)")
    p.add_argument("--api-key", help=f"require this key (header X-API-Key or Authorization: Bearer) on every route "
                                     f"but / and /health; or set {API_KEY_ENV}")
    add_tta_option(p, help="average each prediction over test-time augmentation views")
    add_decode_limit_options(p)
    add_frames_option(p)
    add_device_option(p)
    add_threads_option(p)
    add_precision_option(p)
    add_runtime_option(p)
    p.set_defaults(run=_run_serve)


def _run_serve(args) -> int:
    check_port_free(args.host, args.port)
    settings = ServiceSettings(
        max_upload_mb=args.max_upload_mb, allow_private_urls=args.allow_private_urls, url_timeout_s=args.url_timeout,
        max_downloads=args.max_downloads, max_jobs=args.max_jobs, max_disk_mb=args.max_disk_mb,
        max_connections=args.max_connections, api_key=args.api_key or os.environ.get(API_KEY_ENV),
        shutdown_timeout_s=args.shutdown_timeout, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout)
    limits = decode_limits(args)
    source = checkpoint_source(args.checkpoints)
    use_threads(args)
    try:  # torch and the service's packages: after the arguments are checked
        import uvicorn

        from ..serve.app import create_app
        from ..serve.deadlines import deadline_protocol
        from ..serve.observe import log_config
    except ImportError as exc:
        raise VidtempoError(f"serving needs the serve extra: pip install 'vidtempo[serve]' ({exc})") from None
    from ..inference.classify import VideoClassifier

    classifier = VideoClassifier.from_checkpoints(source, device=args.device, tta=args.tta,
                                                  precision=args.precision, runtime=args.runtime,
                                                  frames=args.frames, **limits)
    uvicorn.run(create_app(classifier, settings), host=args.host, port=args.port, log_config=log_config(),
                access_log=False, limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=settings.shutdown_timeout_s,
                http=deadline_protocol(settings.header_timeout_s, settings.min_body_rate))
    return 0


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that cannot be listened on, before any model is loaded."""
    import socket

    if not 0 <= port <= 65535:
        raise VidtempoError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise VidtempoError(f"--host {host}: not an address to listen on ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise VidtempoError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})") from None


# --------------------------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write an ensemble as ONNX graphs with a manifest, to run without vidtempo")
    add_checkpoints_option(p)
    p.add_argument("--output", type=Path, required=True, help="the model folder to write (backbone.onnx, "
                   "ensemble.onnx, model.json)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--quantize", choices=("int8",), help="quantise the CNN (static int8; its measured cost in "
                   "agreement is in benchmarks/RESULTS.md)")
    p.add_argument("--calibration-videos", type=Path, metavar="DIR",
                   help="with --quantize: a folder of training videos whose frames set the int8 ranges")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from ..inference.export import export_model

    videos = []
    if args.calibration_videos is not None:
        from ..inference.library import library_items

        if not args.calibration_videos.is_dir():
            raise VidtempoError(f"{args.calibration_videos}: --calibration-videos is not a folder")
        videos = [item.path for item in library_items(args.calibration_videos)]
        if not videos:
            raise VidtempoError(f"{args.calibration_videos}: --calibration-videos holds no video files")
    folder = export_model(checkpoint_source(args.checkpoints), args.output, opset=args.opset, overwrite=args.overwrite,
                          quantize=args.quantize, calibration_videos=videos)
    print(f"vidtempo: exported {folder}")
    return 0


# --------------------------------------------------------------------------------------------- inspect
def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="validate one feature file, or a model folder, and summarise it")
    p.add_argument("file", type=Path, help="a {split}_features{suffix}.h5 file, or a checkpoint folder or file "
                   "(an ensemble or a distilled student)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_run_inspect)


def _run_inspect(args) -> int:
    from ..features.store import read_split, summarize

    if args.file.suffix == ".pt" and not args.file.exists():
        raise VidtempoError(f"{args.file}: no such checkpoint")
    if args.file.is_dir() or args.file.suffix == ".pt":
        return _inspect_model(args)

    summary = summarize(read_split(args.file))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    frames = summary["frames_per_video"]
    print(f"{summary['file']}: valid")
    print(f"  videos        {summary['num_videos']}")
    print(f"  frames        max {summary['max_frames']} (per video min {frames['min']}, mean {frames['mean']}, "
          f"max {frames['max']})")
    print(f"  feature dim   {summary['feature_dim']}")
    print(f"  multi-scale   {summary['multi_scale']}")
    print(f"  video ids     {'yes' if summary['has_video_ids'] else 'no'}")
    print("  classes")
    for name, count in summary["classes"].items():
        print(f"    {name:<24} {count}")
    if summary["extra_attributes"]:
        print("  extra attributes")
        for key, value in summary["extra_attributes"].items():
            print(f"    {key:<24} {value}")
    return 0


def _inspect_model(args) -> int:
    from ..ensemble.ensemble import Ensemble

    summary = Ensemble.from_checkpoints(checkpoint_source([args.file])).summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"{args.file}: a model of {len(summary['members'])} member(s), {summary['parameters']:,} parameters")
    for member in summary["members"]:
        config = member["model_config"]
        print(f"  {member['name']:<22} hidden {config['hidden_dim']} x {config['num_lstm_layers']} LSTM layer(s), "
              f"{config['num_attention_heads']} heads, {member['parameters']:,} parameters")
    print(f"  classes        {', '.join(summary['classes'])}")
    extraction = summary["extraction"]
    print("  extraction     " + (", ".join(f"{k} {v}" for k, v in extraction.items()) if extraction else
                                 "not recorded (features not extracted by vidtempo): classifies features only"))
    calibration = summary["calibration"]
    print(f"  calibration    temperature {calibration['temperature']:.3g} (TTA {calibration['tta_temperature']:.3g}), "
          f"fitted on {calibration['calibrated_on'] or 'not recorded'}; learned from "
          f"{' + '.join(calibration['learned_from'])}")
    rule = summary["early_exit"]
    if rule:
        stops = ", ".join(f"{stage} steps at confidence >= {threshold:.3f}" for stage, threshold in
                          zip(rule["stages"], rule["thresholds"]) if threshold is not None) or "no early stage"
        print(f"  early exit     {stops}; fitted on {rule['fitted_on']}: {100 * rule['agreement']:.1f}% of answers "
              f"equal to all steps', {rule['mean_steps']:.1f} of {rule['full_steps']:.1f} steps read on average")
    teacher = summary["distilled_from"]
    if teacher:
        agreement = teacher.get("agreement")
        scores = ("" if agreement is None else f"; agreement {agreement:.1f}%, accuracy {teacher['accuracy']:.1f}% "
                  f"(teacher {teacher['teacher_accuracy']:.1f}%) on {teacher['selection_videos']} held-out videos")
        print(f"  distilled from {teacher['teacher']['source']} ({teacher['teacher']['members']} members, "
              f"{teacher['teacher']['parameters']:,} parameters){scores}")
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub) -> None:
    try:
        from ..demo.run import run_demo
    except ImportError:  # the demo extracts features, which needs PyAV and the backbone weights package
        return
    p = sub.add_parser("demo", help="run the pipeline offline on a built-in default data set")
    p.add_argument("--output-dir", type=Path, default=Path("demo_output"),
                   help="where everything goes (default %(default)s)")
    p.add_argument("--epochs", type=int, default=default_of(run_demo, "epochs"),
                   help=with_default("maximum epochs per member", run_demo, "epochs"))
    p.add_argument("--num-models", type=int, default=default_of(run_demo, "num_models"),
                   help=with_default("ensemble members", run_demo, "num_models"))
    add_decode_limit_options(p)
    add_threads_option(p)
    add_quiet_option(p)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from ..demo.run import run_demo

    for flag, value in (("--epochs", args.epochs), ("--num-models", args.num_models)):
        if value < 1:
            raise VidtempoError(f"{flag} must be a positive integer, got {value}")
    limits = decode_limits(args)
    use_threads(args)
    run_demo(args.output_dir, epochs=args.epochs, num_models=args.num_models, quiet=args.quiet, **limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
