"""Early exit on real footage: how many steps and decoded frames a video needs before its answer is settled.

The set is real_footage.py's (``--clips 200 --max-seconds 40``: 224 H.264 clips, held out by source; build it
with that script first). Two feature sets of it:

* ``default``: vidtempo's default extraction (``ExtractionSettings()``: 64 frames at 256 px, multi-scale, so
  73 steps a video), extracted here once into ``--cache-dir/features-default``;
* ``small``: the small recipe's features that real_footage.py extracted (16 frames at 160 px: 18 steps).

For each feature set and each ``--seeds`` seed, an ensemble of the small recipe's model (real_footage.py's
``small`` recipe: 3 members, cross_fit, its epochs and batch size) is trained twice: without prefix training,
and with ``TrainingConfig.prefix_lengths`` = the stages ([8, 16, 32] for 73 steps, [4, 8] for 18). For each:

1. ``staged_probabilities`` on val at those stages, and ``fit_exit_rule`` on val (target agreement 0.995);
2. on test: the accuracy from every step (full), the accuracy of the early-exit answers, their agreement with
   the full answer, the mean steps read and the mean distinct decoded frames those steps need. A step t of a
   multi-scale sequence averages frame ``scale_indices(F, s)[t]`` of every scale s whose index list is longer
   than t (features/extract/multiscale.py), F being the frames sampled from the clip (inverted from the file's
   step count with ``multiscale_length``); reading steps S needs the union of those frames over S.

Caveat of the val fit: a cross-fitted ensemble learned from val (each val video is in the folds of two of the
three members), so its confidences there are higher than on unseen videos. The ensemble's own rule
(``fit_ensemble_settings_out_of_fold``: each labelled video read by the one member that did not learn from
it) is reported beside it, for the runs with and without prefix training alike.

Everything is cached under --cache-dir (default ~/.cache/vidtempo/early_exit): the features, each run's
checkpoints and its scores (``runs/<name>/result.json``); a killed run continues (an interrupted ensemble with
``train_ensemble(resume=True)``). Run:

    python benchmarks/early_exit.py [--seeds 1 2 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import multiprocessing
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_footage  # noqa: E402  (benchmarks/real_footage.py: the set and its small recipe)

SET = real_footage.CACHE / "seed0-v1-200clips-40s"
CACHE = Path.home() / ".cache" / "vidtempo" / "early_exit"
SPLITS = ("train", "val", "test")
# The early stages of each feature set, in steps of the coarse-to-fine order; they are also the prefix lengths
# that training draws with prefix training on.
STAGES = {"default": [8, 16, 32], "small": [4, 8]}
TARGET = 0.995
MEMBERS = 3


# ------------------------------------------------------------------------------------------- features
def default_features(cache: Path, videos: Path, say) -> tuple[Path, float]:
    """The set's features with vidtempo's default extraction, extracted once into ``cache/features-default``
    (a split already written is kept: a killed extraction continues from the next split)."""
    import torch

    from vidtempo.features.extract import ExtractionSettings, RunOptions, extract_features
    from vidtempo.features.store import split_path

    settings = ExtractionSettings()
    folder = cache / "features-default"
    if all(split_path(folder, s, settings.suffix).is_file() for s in SPLITS):
        kept = folder / "extract_seconds.txt"
        return folder, float(kept.read_text()) if kept.is_file() else float("nan")
    say(f"extract: {settings.to_dict()} -> {folder}")
    torch.set_num_threads(1)
    started = time.perf_counter()
    report = extract_features(videos, folder, settings, RunOptions(device="cpu", quiet=True, workers=1))
    seconds = time.perf_counter() - started
    (folder / "extract_seconds.txt").write_text(f"{seconds:.1f}\n")
    failed = [f for split in report.splits.values() for f in split.failed]
    if failed:
        say(f"extract: {len(failed)} videos failed: {failed[:5]}")
    return folder, seconds


def small_features(root: Path) -> Path:
    """The small recipe's features as real_footage.py extracted them (its folder name is a digest of the
    extraction settings)."""
    from vidtempo.features.extract import ExtractionSettings
    from vidtempo.features.store import split_path

    extraction = real_footage.recipe_settings(real_footage.SMALL)[0]
    settings = ExtractionSettings(**extraction)
    folder = root / f"features-{real_footage.digest(settings.to_dict())}"
    if not all(split_path(folder, s, settings.suffix).is_file() for s in SPLITS):
        real_footage.fail(f"{folder}: no small-recipe features; run benchmarks/real_footage.py --clips 200 "
                          "--max-seconds 40 --recipe small first")
    return folder


# ------------------------------------------------------------------------------------------- frames
def frames_sampled(steps: int, scales: tuple[float, ...]) -> tuple[int, bool]:
    """(F, ambiguous): the frames sampled from a clip whose multi-scale sequence has ``steps`` steps (the
    largest F with that many; ambiguous when several F give it, which only happens for 5 steps or fewer)."""
    from vidtempo.features.extract.multiscale import multiscale_length

    matches = [f for f in range(1, steps + 1) if multiscale_length(f, scales) == steps]
    if not matches:
        raise ValueError(f"no frame count gives {steps} multi-scale steps with scales {scales}")
    return matches[-1], len(matches) > 1


def frames_needed(steps_read: np.ndarray, frames: int, scales: tuple[float, ...]) -> int:
    """Distinct sampled frames that the multi-scale steps ``steps_read`` average (the module's docstring)."""
    from vidtempo.features.extract.multiscale import scale_indices

    needed: set[int] = set()
    for scale in scales:
        rows = scale_indices(frames, scale)
        needed.update(int(rows[t]) for t in steps_read if t < len(rows))
    return len(needed)


def frames_per_stage(split, stages: list[int]) -> tuple[np.ndarray, int]:
    """``[S + 1, N]``: the decoded frames each video needs at each stage and with every step; and how many
    videos' frame counts were ambiguous."""
    from vidtempo.features.frame_order import prefix_steps

    scales = tuple(float(s) for s in split.attrs.get("scales", (1.0,))) if split.multi_scale else (1.0,)
    out = np.zeros((len(stages) + 1, split.num_videos), dtype=np.int64)
    ambiguous = 0
    for i, length in enumerate(split.num_frames.astype(int)):
        frames, unsure = frames_sampled(int(length), scales) if split.multi_scale else (int(length), False)
        ambiguous += unsure
        for k, stage in enumerate((*stages, None)):
            out[k, i] = frames_needed(prefix_steps(int(length), stage or int(length)), frames, scales)
    return out, ambiguous


# ------------------------------------------------------------------------------------------- runs
def run_plan(features: dict[str, Path], seeds: list[int], cache: Path) -> list[dict[str, Any]]:
    _, model, training, epochs = real_footage.recipe_settings(real_footage.SMALL)
    jobs = []
    for name, folder in features.items():
        for seed in seeds:
            for prefix in (False, True):
                config = {**training, "num_epochs": epochs, "seed": seed, "ensemble_strategy": "cross_fit",
                          "prefix_lengths": list(STAGES[name]) if prefix else None}
                key = real_footage.digest({"features": str(folder), "model": model, "training": config,
                                           "members": MEMBERS})
                jobs.append({"features": name, "folder": str(folder), "seed": seed, "prefix": prefix,
                             "model": model, "training": config,
                             "out": str(cache / "runs" / f"{name}-{'prefix' if prefix else 'plain'}-seed{seed}-{key}")})
    return jobs


def run_job(job: dict[str, Any], rescore: bool = False) -> dict[str, Any]:
    """Train (or continue) one ensemble and score it; the scores are kept in ``out/result.json`` (with
    ``rescore``, a kept run is scored again from its checkpoints, its training kept)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    out = Path(job["out"])
    result_path = out / "result.json"
    if result_path.is_file():
        kept = json.loads(result_path.read_text())
        if not rescore:
            return kept
        from vidtempo.files import write_json

        record = {**score(job, out / "checkpoints"), "train_seconds": kept["train_seconds"],
                  "torch_threads": kept["torch_threads"]}
        write_json(record, result_path)
        return record
    from vidtempo import EnhancedTemporalModelTrainer
    from vidtempo.features.store import split_path

    suffix = "_multiscale"
    started = time.perf_counter()
    checkpoints = out / "checkpoints"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = EnhancedTemporalModelTrainer(job["folder"], checkpoints, device="cpu", model_config=job["model"],
                                               training_config=job["training"], quiet=True)
        trainer.train_ensemble(num_models=MEMBERS, feature_file_suffix=suffix, results_dir=out / "results",
                               resume=checkpoints.exists())
    train_seconds = time.perf_counter() - started
    assert split_path(job["folder"], "test", suffix).is_file()
    record = {**score(job, checkpoints), "train_seconds": round(train_seconds, 1),
              "torch_threads": torch.get_num_threads()}
    from vidtempo.files import write_json

    write_json(record, result_path)
    return record


def score(job: dict[str, Any], checkpoints: Path) -> dict[str, Any]:
    """The staged answers on val and test, the rule fitted on val, the ensemble's out-of-fold rule, and what
    each does on test."""
    import torch

    from vidtempo.ensemble.early_exit import fit_exit_rule, staged_probabilities
    from vidtempo.ensemble.ensemble import Ensemble, EnsembleSettings
    from vidtempo.ensemble.fit import _single_member
    from vidtempo.ensemble.folds import cross_fit_splits
    from vidtempo.features.store import read_split, split_path

    stages = STAGES[job["features"]]
    splits = {s: read_split(split_path(job["folder"], s, "_multiscale")) for s in SPLITS}
    ensemble = Ensemble.from_checkpoints(checkpoints, device="cpu")
    with torch.no_grad():
        staged_val, steps_val = staged_probabilities(ensemble, splits["val"], stages)
        rule_val = fit_exit_rule(staged_val, steps_val, stages, f"val split, {splits['val'].num_videos} videos",
                                 target_agreement=TARGET)
        # The ensemble's own rule, as assembly fits it when prefix training is on (fit.py,
        # _fit_exit_rule_out_of_fold): each labelled video's stages read by the member that did not learn from
        # it, with the ensemble's plain temperature. Fitted here for the runs without prefix training too.
        folds = cross_fit_splits(splits, MEMBERS, job["training"]["seed"])
        oof_staged, oof_steps, oof_labels = [], [], []
        for i, fold in enumerate(folds):
            member = _single_member(ensemble, i)
            member.settings = EnsembleSettings(temperature=ensemble.settings.temperature)
            member_staged, member_steps = staged_probabilities(member, fold["val"], stages)
            oof_staged.append(member_staged)
            oof_steps.append(member_steps)
            oof_labels.append(fold["val"].labels)
        oof_staged = torch.cat(oof_staged, dim=1)
        oof_labels = np.concatenate(oof_labels)
        rule_oof = fit_exit_rule(oof_staged, np.concatenate(oof_steps, axis=1), stages,
                                 f"out-of-fold, {len(oof_labels)} videos", target_agreement=TARGET)
        stored = ensemble.settings.early_exit
        if stored is not None and stored["thresholds"] != rule_oof.thresholds:
            raise RuntimeError(f"out-of-fold rule {rule_oof.thresholds} differs from the stored {stored['thresholds']}")
        staged_test, steps_test = staged_probabilities(ensemble, splits["test"], stages)
    oof_full = oof_staged[-1].argmax(-1).numpy()
    frames_test, ambiguous = frames_per_stage(splits["test"], stages)
    test = splits["test"]
    labels = test.labels
    full = staged_test[-1].argmax(-1).numpy()
    record: dict[str, Any] = {
        "features": job["features"], "seed": job["seed"], "prefix": job["prefix"], "stages": stages,
        "training": job["training"], "model": job["model"], "test_videos": int(test.num_videos),
        "val_videos": int(splits["val"].num_videos), "ambiguous_frame_counts": int(ambiguous),
        "full_accuracy": 100.0 * float(np.mean(full == labels)),
        "full_steps": float(np.mean(steps_test[-1])), "full_frames": float(np.mean(frames_test[-1])),
        "stage_accuracy": [100.0 * float(np.mean(staged_test[k].argmax(-1).numpy() == labels))
                           for k in range(len(stages) + 1)],
        "stage_agreement": [100.0 * float(np.mean(staged_test[k].argmax(-1).numpy() == full))
                            for k in range(len(stages) + 1)],
        "stage_steps": [float(np.mean(steps_test[k])) for k in range(len(stages) + 1)],
        "stage_confidence": [float(staged_test[k].max(-1).values.mean()) for k in range(len(stages) + 1)],
        "stage_min_confidence": [float(staged_test[k].max(-1).values.min()) for k in range(len(stages) + 1)],
        "oof_videos": int(len(oof_labels)),
        "oof_stage_accuracy": [100.0 * float(np.mean(oof_staged[k].argmax(-1).numpy() == oof_labels))
                               for k in range(len(stages) + 1)],
        "oof_stage_agreement": [100.0 * float(np.mean(oof_staged[k].argmax(-1).numpy() == oof_full))
                                for k in range(len(stages) + 1)],
        "oof_stage_confidence": [float(oof_staged[k].max(-1).values.mean()) for k in range(len(stages) + 1)],
        "stage_frames": [float(np.mean(frames_test[k])) for k in range(len(stages) + 1)],
        "stored_rule": stored,
        "rules": {},
        "test": {"labels": labels.tolist(), "video_ids": list(test.video_ids or []),
                 "staged": staged_test.numpy().round(6).tolist(), "steps": steps_test.tolist(),
                 "frames": frames_test.tolist()},
        "val_staged": staged_val.numpy().round(6).tolist(), "val_labels": splits["val"].labels.tolist(),
    }
    for name, rule in (("val", rule_val), ("out_of_fold", rule_oof)):
        answers, stopped, used = rule.apply(staged_test, steps_test)
        early = answers.argmax(-1).numpy()
        frames = frames_test[stopped, np.arange(len(stopped))]
        record["rules"][name] = {
            "rule": rule.to_dict(),
            "accuracy": 100.0 * float(np.mean(early == labels)),
            "agreement": 100.0 * float(np.mean(early == full)),
            "disagreements": int(np.sum(early != full)),
            "mean_steps": float(np.mean(used)), "mean_frames": float(np.mean(frames)),
            "stopped_at": [int(np.sum(stopped == k)) for k in range(len(stages) + 1)],
        }
    return record


# ------------------------------------------------------------------------------------------- tables
def mean_std(values: list[float], digits: int = 1) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


FEATURE_NAMES = {"default": "default (64 frames, 256 px: 73 steps)", "small": "small (16 frames, 160 px: 18 steps)"}


def groups(results: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    out = []
    for name in ("default", "small"):
        for prefix in (False, True):
            rows = [r for r in results if r["features"] == name and r["prefix"] == prefix]
            if rows:
                training = f"prefix {STAGES[name]}" if prefix else "no prefix training"
                out.append((FEATURE_NAMES[name], training, sorted(rows, key=lambda r: r["seed"])))
    return out


def main_table(results: list[dict[str, Any]], rule: str) -> list[str]:
    lines = ["| features | training | seeds | full accuracy % | early-exit accuracy % | agreement with full % "
             "| steps read / full | decoded frames / full |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for features, training, rows in groups(results):
        scores = [r["rules"][rule] for r in rows]
        disagreements = sum(s["disagreements"] for s in scores)
        videos = sum(r["test_videos"] for r in rows)
        lines.append(
            f"| {features} | {training} | {len(rows)} | {mean_std([r['full_accuracy'] for r in rows])} | "
            f"{mean_std([s['accuracy'] for s in scores])} | {mean_std([s['agreement'] for s in scores])} "
            f"({disagreements} of {videos} answers differ) | "
            f"{mean_std([s['mean_steps'] for s in scores])} / {rows[0]['full_steps']:.1f} "
            f"({mean_std([100 * s['mean_steps'] / r['full_steps'] for s, r in zip(scores, rows)], 0)}%) | "
            f"{mean_std([s['mean_frames'] for s in scores])} / {rows[0]['full_frames']:.1f} "
            f"({mean_std([100 * s['mean_frames'] / r['full_frames'] for s, r in zip(scores, rows)], 0)}%) |")
    return lines


def threshold_table(results: list[dict[str, Any]], rule: str) -> list[str]:
    lines = ["| features | training | seed | fitted on | thresholds (per stage) | agreement there % "
             "| test: videos stopped per stage (last: all steps) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for features, training, rows in groups(results):
        for r in rows:
            fitted = r["rules"][rule]["rule"]
            stages = r["stages"]
            cells = ", ".join(f"{s}: {'-' if t is None else f'{t:.3f}'}" for s, t in zip(stages, fitted["thresholds"]))
            stopped = ", ".join(f"{s}: {n}" for s, n in zip([*stages, "all"], r["rules"][rule]["stopped_at"]))
            lines.append(f"| {features.split(' ')[0]} | {training} | {r['seed']} | {fitted['fitted_on']} | {cells} | "
                         f"{100 * fitted['agreement']:.1f} | {stopped} |")
    return lines


def stage_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| features | training | stage (steps of the order) | steps read | decoded frames | test accuracy % "
             "| test agreement with full % | test confidence (mean; min) | out-of-fold accuracy % "
             "| out-of-fold agreement with full % | out-of-fold confidence (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for features, training, rows in groups(results):
        stages = rows[0]["stages"]
        for k, stage in enumerate([*stages, "all"]):
            lines.append(f"| {features.split(' ')[0]} | {training} | {stage} | {rows[0]['stage_steps'][k]:.1f} | "
                         f"{rows[0]['stage_frames'][k]:.1f} | {mean_std([r['stage_accuracy'][k] for r in rows])} | "
                         f"{mean_std([r['stage_agreement'][k] for r in rows])} | "
                         f"{mean_std([r['stage_confidence'][k] for r in rows], 3)}; "
                         f"{min(r['stage_min_confidence'][k] for r in rows):.3f} | "
                         f"{mean_std([r['oof_stage_accuracy'][k] for r in rows])} | "
                         f"{mean_std([r['oof_stage_agreement'][k] for r in rows])} | "
                         f"{mean_std([r['oof_stage_confidence'][k] for r in rows], 3)} |")
    return lines


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=SET, help="real_footage.py's set folder (default %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--features", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--workers", type=int, default=2, help="ensembles trained at once, one thread each")
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--rescore", action="store_true", help="score kept runs again from their checkpoints")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    say = functools.partial(print, flush=True)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = "python benchmarks/early_exit.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    header = [f"Machine: {real_footage.machine()}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
              f"Python {platform.python_version()}, torch {real_footage.torch_version()}", f"Command: `{command}`"]
    say("\n".join(header))
    videos = args.set / "videos"
    if not videos.is_dir():
        real_footage.fail(f"{videos}: no clips; build the set with benchmarks/real_footage.py --clips 200 "
                          "--max-seconds 40 --build-only")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    features: dict[str, Path] = {}
    extract_seconds = 0.0
    if "default" in args.features:
        features["default"], extract_seconds = default_features(args.cache_dir, videos, say)
    if args.extract_only:
        say(f"extract: {extract_seconds / 60:.1f} min")
        return
    if "small" in args.features:
        features["small"] = small_features(args.set)
    jobs = run_plan(features, args.seeds, args.cache_dir)
    results: list[dict[str, Any]] = []
    todo = [j for j in jobs if not (Path(j["out"]) / "result.json").is_file()]
    say(f"runs: {len(jobs)} ({len(jobs) - len(todo)} kept), {args.workers} at once")
    results += [run_job(j, args.rescore) for j in jobs if j not in todo]
    if todo:
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, min(2, args.workers)), maxtasksperchild=1) as pool:
            for record in pool.imap_unordered(run_job, todo):
                say(f"run: {record['features']} seed {record['seed']} prefix {record['prefix']}: full "
                    f"{record['full_accuracy']:.1f}%, early {record['rules']['val']['accuracy']:.1f}%, "
                    f"trained in {record['train_seconds']:.0f} s")
                results.append(record)

    per_run = sum(r["train_seconds"] for r in results) / max(1, len(results))
    report = [
        *header, "",
        f"Set: {args.set} ({results[0]['val_videos']} val, {results[0]['test_videos']} test clips). Model and "
        f"training: real_footage.py's small recipe ({MEMBERS} members, cross_fit, {results[0]['training']['num_epochs']} "
        f"epochs, batch {results[0]['training']['batch_size']}), one torch thread per run, {args.workers} runs at once "
        f"on a shared machine; {per_run:.0f} s of training a run on average. The default extraction "
        f"took {extract_seconds / 60:.1f} min (when it ran; one torch thread and one decoder process). Target agreement {TARGET}.",
        "",
        "Test split, rule fitted on val (mean ± std over seeds):", "", *main_table(results, "val"), "",
        "Test split, the ensemble's out-of-fold rule (each labelled video read by the member that did not learn "
        "from it):", "", *main_table(results, "out_of_fold"), "",
        "Each stage alone (every video read to that stage), on test and out of fold (train + val, each video "
        "read by the member that did not learn from it; min confidence: over all seeds):", "",
        *stage_table(results), "",
        "Thresholds fitted on val:", "", *threshold_table(results, "val"), "",
        "Thresholds fitted out of fold:", "", *threshold_table(results, "out_of_fold"), "",
        f"Wall time {(time.perf_counter() - started) / 60:.1f} min (shared machine).",
    ]
    ambiguous = sum(r["ambiguous_frame_counts"] for r in results)
    if ambiguous:
        report.insert(-1, f"Frame counts ambiguous (5 steps or fewer) in {ambiguous} test videos over all runs.")
    text = "\n".join(report) + "\n"
    (args.cache_dir / "reports").mkdir(exist_ok=True)
    (args.cache_dir / "reports" / f"{datetime.datetime.now():%Y%m%d-%H%M%S}.md").write_text(text)
    say("\n" + "\n".join(report[len(header) + 1:]))


if __name__ == "__main__":
    main()
