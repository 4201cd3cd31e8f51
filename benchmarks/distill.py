"""Distillation: one small student (``vidtempo distill``) against the ensemble it learned from (its teacher).

For each set and run seed: train the teacher (an ensemble of NUM_MEMBERS, the recipe of accuracy_real.py, or of
real_footage.py's small recipe for the real footage), then distil it into one student of each candidate size
(STUDENT_SIZES, the teacher's training settings, default DistillConfig), and score teacher and students on the
test split, which neither the students nor the teacher's selection ever read. Run:

    python benchmarks/distill.py [--sets BasicMotions,JapaneseVowels] [--seeds 1,2,3] [--jobs 2]
        [--cache-dir ~/.cache/vidtempo] [--epochs N] [--limit-seeds OSULeaf=2,ACSF1=2] [--report-only]

Sets. The six archive sets of accuracy_real.py plus JapaneseVowels (UEA multivariate archive: 270 train / 370
test items, 9 classes, 12 dimensions, 7 to 29 time points), read from the aeon wheel and turned into frame
features exactly as accuracy_real.py does (``write_archive_set``); and the features of real_footage.py's
default set (200 clips of at most 40 s, seed 0), already extracted in CACHE/real_footage, whose teacher is that
benchmark's small recipe (the demo's model and training, 40 epochs).

What is measured, per (set, seed), for the teacher and each student:

- test accuracy of the plain prediction (``Ensemble.split_member_probabilities`` then ``combine``: calibrated,
  no TTA; what ``vidtempo evaluate`` scores without ``--tta``);
- agreement with the teacher on the test split (% of videos whose top class is the teacher's);
- ECE of those probabilities (15 equal-width bins, vidtempo.ensemble.calibration);
- parameters (the teacher's: all members together) and the seconds to train (the teacher: its members and the
  assembly; a student: labelling the views, training and calibration);
- time per video of the model alone: a batch of the set's first 8 test items, ``model_outputs`` with the
  ensemble's autocast dtype (bf16 where the CPU has it), best of TIMING_REPEATS, one torch thread, measured in
  the main process after the training so that no other job of this benchmark shares the cores.

Then the model's share of the cost at vidtempo's default scale: the default ensemble (NUM_MEMBERS x
``ModelConfig()``, random weights) against each student size (random weights, same input: 8 videos of
DEFAULT_STEPS frames of 1280 features, bf16 autocast).

Everything is cached under CACHE/distill/, named by a hash of what decides it (the resolved TrainingConfig
included, so a new TrainingConfig field trains anew): a killed run continues, a changed setting trains anew.
Training jobs run ``--jobs`` at a time, one torch thread each. Cost on 2 shared cores (AMD EPYC,
benchmarks/RESULTS.md): about 70 minutes for every set with seeds 1-3 (OSULeaf with 2) at ``--jobs 2``.
"""

from __future__ import annotations

import os

# As vidtempo's commands do: waiting OpenMP threads sleep instead of spinning on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime
import hashlib
import json
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_real import (  # noqa: E402
    ARCHIVE_SETS, BANK_SEED, DILATIONS, FEATURE_KERNELS, KERNEL_LENGTH, MAX_STEPS, MODEL_CONFIG, NUM_MEMBERS,
    RUN_SEED_STRIDE, SPLIT_SEED, TRAINING_CONFIG, VAL_FRACTION, ArchiveSet, aeon_wheel, archive_check, choose,
    execute, machine, mean_std, write_archive_set,
)
from vidtempo._version import __version__  # noqa: E402
from vidtempo.config import DistillConfig, ModelConfig, TrainingConfig, make_config  # noqa: E402
from vidtempo.files import write_json  # noqa: E402
from vidtempo.features.store import detect_suffix, read_split, split_path  # noqa: E402

# UEA multivariate archive: sizes from the archive (270/370 cases, 12 dimensions, length 7-29, 9 classes);
# accuracy 1-NN DTW_D 0.949 (DTW_I 0.959) from Bagnall et al. 2018 (arXiv:1811.00075), as quoted in the table
# of github.com/pfmarteau/teNN, README.md (columns DTW-1NN-D, DTW-1NN-I), the source accuracy_real.py quotes
# for BasicMotions.
JAPANESE_VOWELS = ArchiveSet("JapaneseVowels", 270, 370, 9, 12, None, 0.949)
SETS = ARCHIVE_SETS + (JAPANESE_VOWELS,)
REAL_SET = "real footage"
# real_footage.py's default set (--seed 0, --clips 200 --max-seconds 40) and its small recipe's extraction.
REAL_FEATURES = Path("real_footage") / "seed0-v1-200clips-40s" / "features-6d7399c8a76b"
REAL_EPOCHS = 40  # real_footage.py recipe_settings("small")
SET_NAMES = tuple(s.name for s in SETS) + (REAL_SET,)

# The candidate students; dropout 0.3 for all.
STUDENT_SIZES: dict[str, dict[str, Any]] = {
    "h32 l1 a2": {"hidden_dim": 32, "num_lstm_layers": 1, "num_attention_heads": 2, "dropout": 0.3},
    "h64 l1 a4": {"hidden_dim": 64, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.3},
    "h128 l1 a4": {"hidden_dim": 128, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.3},
}
TEACHER = "teacher"
# The default student size rule: the smallest size whose mean difference to the teacher over all sets is within
# MEAN_TOLERANCE points and that is never more than WORST_TOLERANCE points behind it on one set.
MEAN_TOLERANCE = 0.5
WORST_TOLERANCE = 1.5
COST_GOAL = 8.0  # the student should be at least this many times cheaper than the default ensemble's model share

TIMING_BATCH = 8
TIMING_REPEATS = 5
DEFAULT_STEPS = 73
DEFAULT_FEATURE_DIM = 1280
DEFAULT_CLASSES = 4


def fail(message: str) -> None:
    print(f"distill.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------- data
def archive_data_id(wheel: Path) -> dict[str, Any]:
    return {"wheel": wheel.name, "max_steps": MAX_STEPS, "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED,
            "frames": {"kernels": FEATURE_KERNELS, "length": KERNEL_LENGTH, "dilations": DILATIONS,
                       "seed": BANK_SEED}}


def prepare_data(sets: list[str], cache_dir: Path, wheel_given: Path | None) -> dict[str, dict[str, Any]]:
    """set -> {dir, suffix, data_id, model, training (without seed)}; archive sets are written once into
    CACHE/distill/data/<set>-<key>."""
    data: dict[str, dict[str, Any]] = {}
    specs = [s for s in SETS if s.name in sets]
    if specs:
        wheel = aeon_wheel(wheel_given, cache_dir)
        data_id = archive_data_id(wheel)
        training = {**TRAINING_CONFIG}
        for spec in specs:
            folder = cache_dir / "distill" / "data" / f"{spec.name}-{digest(data_id)}"
            summary_path = folder / "summary.json"
            if not summary_path.is_file():
                tmp = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                summary = write_archive_set(spec, wheel, tmp)
                write_json(summary, tmp / "summary.json")
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            summary = json.loads(summary_path.read_text())
            summary["length"] = tuple(summary["length"])
            check = archive_check(spec, summary)
            if check != "ok":
                fail(f"{spec.name}: the data read differ from the archive's documented sizes: {check}")
            data[spec.name] = {"dir": str(folder), "suffix": "", "data_id": data_id, "model": dict(MODEL_CONFIG),
                               "training": training, "summary": summary}
    if REAL_SET in sets:
        from vidtempo.demo.run import DEMO_MODEL, DEMO_TRAINING

        folder = cache_dir / REAL_FEATURES
        if not split_path(folder, "train", detect_suffix(folder)).is_file():
            fail(f"{folder}: no features; run benchmarks/real_footage.py --recipe small first")
        suffix = detect_suffix(folder)
        train = read_split(split_path(folder, "train", suffix))
        data[REAL_SET] = {"dir": str(folder), "suffix": suffix, "data_id": {"features": str(REAL_FEATURES),
                                                                          "suffix": suffix},
                          "model": dict(DEMO_MODEL), "training": {**DEMO_TRAINING, "num_epochs": REAL_EPOCHS},
                          "summary": {"set": REAL_SET, "classes": train.num_classes, "frames": train.max_frames,
                                      "feature_dim": train.feature_dim}}
    return data


# ------------------------------------------------------------------------------------------- plan
def resolved(training: dict[str, Any], seed: int, epochs: int | None) -> dict[str, Any]:
    """The TrainingConfig of run seed ``seed`` as a full dict (accuracy_real.py: seed RUN_SEED_STRIDE * s)."""
    config = {**training, "seed": RUN_SEED_STRIDE * seed, **({"num_epochs": epochs} if epochs else {})}
    return dataclasses.asdict(make_config(TrainingConfig, config))


def plan_jobs(data: dict[str, dict[str, Any]], seeds: list[int], sizes: list[str], epochs: int | None,
              cache_dir: Path, limit: dict[str, int]) -> list[dict[str, Any]]:
    """One job per (set, seed): its teacher, then each student size. Seed-major order, so a run cut short
    misses the last seeds; OSULeaf and ACSF1 (the slowest sets) last within each seed."""
    jobs = []
    slow = {"OSULeaf": 2, "ACSF1": 1}
    for seed in seeds:
        for name in sorted(data, key=lambda n: (slow.get(n, 0), SET_NAMES.index(n))):
            if seed not in seeds[: limit.get(name, len(seeds))]:
                continue
            source = data[name]
            training = resolved(source["training"], seed, epochs)
            decided = {"data": source["data_id"], "model": source["model"], "members": NUM_MEMBERS,
                       "training": {k: v for k, v in training.items() if k != "num_workers"}}
            teacher_key = digest(decided)
            root = cache_dir / "distill" / "runs" / f"{name.replace(' ', '-')}__seed{seed}__{teacher_key}"
            students = {}
            for size in sizes:
                key = digest({"teacher": teacher_key, "model": STUDENT_SIZES[size], "training": decided["training"],
                              "distill": dataclasses.asdict(DistillConfig())})
                students[size] = str(root / f"student-{size.replace(' ', '-')}-{key}")
            jobs.append({"set": name, "seed": seed, "features_dir": source["dir"], "suffix": source["suffix"],
                         "model": source["model"], "training": training, "teacher_dir": str(root / "teacher"),
                         "students": students})
    return jobs


def job_done(job: dict[str, Any]) -> bool:
    return all((Path(d) / "result.json").is_file() for d in [job["teacher_dir"], *job["students"].values()])


# ------------------------------------------------------------------------------------------- scoring
def score(folder: Path, features_dir: str, suffix: str) -> dict[str, Any]:
    """Plain calibrated test predictions of the checkpoint folder's ensemble (a student: of one), as
    evaluate_ensemble scores a split."""
    from vidtempo.ensemble.calibration import expected_calibration_error
    from vidtempo.ensemble.ensemble import Ensemble

    ensemble = Ensemble.from_checkpoints(folder, device="cpu")
    test = read_split(split_path(features_dir, "test", suffix))
    probs = ensemble.combine(ensemble.split_member_probabilities(test)).float()
    predicted = probs.argmax(-1).numpy()
    return {
        "accuracy": 100.0 * float(np.mean(predicted == test.labels)),
        "ece": expected_calibration_error(probs, test.labels, n_bins=15),
        "y_pred": predicted.tolist(),
        "parameters": int(sum(p.numel() for m in ensemble.models for p in m.parameters())),
        "members": len(ensemble),
        "temperature": ensemble.settings.calibration(False)[0],
        "amp_dtype": str(ensemble.amp_dtype),
    }


def train_teacher(job: dict[str, Any]) -> dict[str, Any]:
    """Train the teacher as accuracy_real.py's run_training does (into a kept folder) and score it."""
    from vidtempo import EnhancedTemporalModelTrainer

    folder = Path(job["teacher_dir"])
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = EnhancedTemporalModelTrainer(job["features_dir"], folder / "checkpoints", device="cpu",
                                               model_config=job["model"], training_config=job["training"],
                                               quiet=True)
        _, results = trainer.train_ensemble(num_models=NUM_MEMBERS, feature_file_suffix=job["suffix"],
                                            results_dir=folder / "results")
    seconds = time.perf_counter() - started
    record = {"set": job["set"], "seed": job["seed"], "model": job["model"], "training": job["training"],
              "train_seconds": round(seconds, 1), **score(folder / "checkpoints", job["features_dir"], job["suffix"]),
              "train_ensemble_test_accuracy": results["ensemble"]["test"]["accuracy"],
              "member_runs": [{"best_epoch": m["best_epoch"], "epochs_trained": m["epochs_trained"]}
                              for m in results["members"]],
              "vidtempo_version": __version__, "torch_version": torch.__version__}
    write_json(record, result_path)
    return record


def train_student(job: dict[str, Any], size: str, teacher: dict[str, Any]) -> dict[str, Any]:
    """Distil the teacher into a student of ``size`` with the teacher's training settings; score it."""
    from vidtempo.training.distill import distill

    folder = Path(job["students"][size])
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _, results = distill(job["features_dir"], Path(job["teacher_dir"]) / "checkpoints", folder / "checkpoints",
                             model_config=STUDENT_SIZES[size], training_config=job["training"],
                             distill_config=DistillConfig(), feature_file_suffix=job["suffix"], device="cpu",
                             quiet=True, results_dir=folder / "results")
        caught = sorted({f"{w.category.__name__}: {w.message}" for w in seen})
    seconds = time.perf_counter() - started
    scored = score(folder / "checkpoints", job["features_dir"], job["suffix"])
    agreement = 100.0 * float(np.mean(np.asarray(scored["y_pred"]) == np.asarray(teacher["y_pred"])))
    record = {"set": job["set"], "seed": job["seed"], "size": size, "model": STUDENT_SIZES[size],
              "train_seconds": round(seconds, 1), **scored, "agreement": agreement,
              "held_out": results["held_out"], "best_epoch": results["best_epoch"],
              "epochs_trained": results["epochs_trained"], "stopped_early": results["stopped_early"],
              "warnings": caught, "vidtempo_version": __version__, "torch_version": torch.__version__}
    write_json(record, result_path)
    return record


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    teacher = train_teacher(job)
    students = {size: train_student(job, size, teacher) for size in job["students"]}
    return {"teacher": teacher, "students": students}


def run_missing(jobs: list[dict[str, Any]], parallel: int) -> None:
    todo = [job for job in jobs if not job_done(job)]
    print(f"\n{len(jobs)} (set, seed) jobs, {len(jobs) - len(todo)} done already; running {len(todo)} "
          f"({parallel} at a time, 1 torch thread each)", flush=True)
    started = time.perf_counter()
    for done, (job, outcome) in enumerate(execute(todo, parallel, run_job), 1):
        where = f"[{done}/{len(todo)} {(time.perf_counter() - started) / 60:.1f} min] {job['set']} seed {job['seed']}"
        if isinstance(outcome, BaseException):
            print(f"{where}: FAILED: {''.join(traceback.format_exception(outcome)).strip()}", flush=True)
            continue
        t = outcome["teacher"]
        parts = [f"teacher {t['accuracy']:.1f}% ({t['train_seconds']:.0f} s)"]
        for size, s in outcome["students"].items():
            parts.append(f"{size} {s['accuracy']:.1f}% agree {s['agreement']:.1f}% ({s['train_seconds']:.0f} s"
                         f"{', ' + str(len(s['warnings'])) + ' warnings' if s['warnings'] else ''})")
        print(f"{where}: " + "; ".join(parts), flush=True)


# ------------------------------------------------------------------------------------------- timing
def seconds_per_video(models: list[torch.nn.Module], features: torch.Tensor, lengths: torch.Tensor,
                      amp_dtype: torch.dtype | None) -> float:
    """Best of TIMING_REPEATS of running every model once over the batch, per video (after one warm-up)."""
    from vidtempo.ensemble.ensemble import model_outputs

    def once() -> None:
        for model in models:
            model_outputs(model, features, lengths, amp_dtype=amp_dtype)

    once()
    best = float("inf")
    for _ in range(TIMING_REPEATS):
        started = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - started)
    return best / features.shape[0]


def time_set(job: dict[str, Any]) -> dict[str, float]:
    """Model time per video (seconds) of the teacher and each student of one (set, seed), on the set's first
    TIMING_BATCH test items."""
    from vidtempo.ensemble.ensemble import Ensemble

    test = read_split(split_path(job["features_dir"], "test", job["suffix"]))
    lengths = torch.from_numpy(np.asarray(test.num_frames[:TIMING_BATCH])).long()
    features = torch.from_numpy(np.asarray(test.features[:TIMING_BATCH], dtype=np.float32))[:, : int(lengths.max())]
    out = {}
    for name, folder in [(TEACHER, job["teacher_dir"]), *job["students"].items()]:
        if not (Path(folder) / "result.json").is_file():
            continue
        ensemble = Ensemble.from_checkpoints(Path(folder) / "checkpoints", device="cpu")
        out[name] = seconds_per_video(ensemble.models, features, lengths, ensemble.amp_dtype)
    return out


def default_scale_costs(sizes: list[str]) -> dict[str, dict[str, Any]]:
    """The default ensemble's model share against each student size, random weights, same input."""
    from vidtempo.model.temporal import TemporalModel

    torch.manual_seed(0)
    features = torch.randn(TIMING_BATCH, DEFAULT_STEPS, DEFAULT_FEATURE_DIM)
    lengths = torch.full((TIMING_BATCH,), DEFAULT_STEPS, dtype=torch.long)
    configs = {"default ensemble": [ModelConfig(num_classes=DEFAULT_CLASSES)] * NUM_MEMBERS}
    configs.update({size: [ModelConfig(**{**STUDENT_SIZES[size], "num_classes": DEFAULT_CLASSES})] for size in sizes})
    out = {}
    for name, model_configs in configs.items():
        models = [TemporalModel(c).eval() for c in model_configs]
        out[name] = {"parameters": sum(p.numel() for m in models for p in m.parameters()),
                     "seconds_per_video": seconds_per_video(models, features, lengths, torch.bfloat16)}
        del models
    return out


# ------------------------------------------------------------------------------------------- report
def load(jobs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    """set -> seed -> model name -> result, for the results that exist."""
    found: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for job in jobs:
        teacher_path = Path(job["teacher_dir"]) / "result.json"
        if not teacher_path.is_file():
            continue
        runs = {TEACHER: json.loads(teacher_path.read_text())}
        for size, folder in job["students"].items():
            if (Path(folder) / "result.json").is_file():
                runs[size] = json.loads((Path(folder) / "result.json").read_text())
        found.setdefault(job["set"], {})[job["seed"]] = runs
    return found


def cell(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def per_set_table(results: dict, sets: list[str], sizes: list[str], timings: dict[str, dict[str, float]]) -> None:
    print("\nPer set: test accuracy % (plain, calibrated), agreement with the teacher on test %, ECE (15 bins), "
          "mean ± std over seeds\n")
    print("| set | model | seeds | test accuracy | student - teacher | agreement | ECE | parameters | ms / video "
          "| train s |")
    print("| --- |" + " --- |" * 9)
    for name in sets:
        runs = results.get(name, {})
        for model in [TEACHER, *sizes]:
            seeds = sorted(s for s, r in runs.items() if model in r)
            if not seeds:
                continue
            rows = [runs[s][model] for s in seeds]
            acc = [r["accuracy"] for r in rows]
            diff = "-" if model == TEACHER else f"{np.mean(acc) - np.mean([runs[s][TEACHER]['accuracy'] for s in seeds]):+.1f}"
            agree = "-" if model == TEACHER else cell([r["agreement"] for r in rows])
            ms = timings.get(name, {}).get(model)
            print(f"| {name} | {model} | {len(seeds)} | {cell(acc)} | {diff} | {agree} | "
                  f"{cell([r['ece'] for r in rows], 3)} | {rows[0]['parameters']:,} | "
                  f"{'-' if ms is None else f'{1000 * ms:.3f}'} | {np.mean([r['train_seconds'] for r in rows]):.0f} |")


def differences(results: dict, sets: list[str], size: str) -> dict[str, float]:
    """set -> mean over seeds of (student - teacher) test accuracy, over the seeds where both exist."""
    out = {}
    for name in sets:
        runs = results.get(name, {})
        seeds = [s for s, r in runs.items() if size in r]
        if seeds:
            out[name] = float(np.mean([runs[s][size]["accuracy"] - runs[s][TEACHER]["accuracy"] for s in seeds]))
    return out


def summary_table(results: dict, sets: list[str], sizes: list[str], costs: dict[str, dict[str, Any]]) -> None:
    default = costs["default ensemble"]
    print(f"\nSummary: student - teacher test accuracy (points), over {len(sets)} sets; model cost at the default "
          f"scale ({TIMING_BATCH} videos x {DEFAULT_STEPS} frames x {DEFAULT_FEATURE_DIM} features, bf16 autocast, "
          "1 thread)\n")
    print("| student | sets | mean difference | worst set (difference) | sets behind by > 1.5 | mean agreement | "
          "parameters | ms / video | default ensemble / student | meets the rule |")
    print("| --- |" + " --- |" * 9)
    chosen, misses = None, {}
    for size in sizes:
        diffs = differences(results, sets, size)
        if not diffs:
            continue
        mean, worst = float(np.mean(list(diffs.values()))), min(diffs, key=diffs.get)
        agreement = np.mean([r[size]["agreement"] for name in sets for r in results.get(name, {}).values()
                             if size in r])
        meets = mean >= -MEAN_TOLERANCE and diffs[worst] >= -WORST_TOLERANCE and len(diffs) == len(sets)
        if meets and chosen is None:
            chosen = size
        misses[size] = (max(0.0, -MEAN_TOLERANCE - mean), max(0.0, -WORST_TOLERANCE - diffs[worst]))
        behind = [n for n, d in diffs.items() if d < -WORST_TOLERANCE]
        cost = costs[size]
        print(f"| {size} | {len(diffs)} | {mean:+.2f} | {diffs[worst]:+.1f} ({worst}) | "
              f"{', '.join(behind) or 'none'} | {agreement:.1f} | {cost['parameters']:,} | "
              f"{1000 * cost['seconds_per_video']:.3f} | "
              f"{default['seconds_per_video'] / cost['seconds_per_video']:.1f}x | {'yes' if meets else 'no'} |")
    print(f"| default ensemble ({NUM_MEMBERS} x ModelConfig()) | - | - | - | - | - | {default['parameters']:,} | "
          f"{1000 * default['seconds_per_video']:.3f} | 1.0x | - |")
    print(f"\nRule: the smallest size whose mean difference is at least -{MEAN_TOLERANCE} points and that is never "
          f"more than {WORST_TOLERANCE} points behind the teacher on one set (cost goal: >= {COST_GOAL:.0f}x "
          "cheaper than the default ensemble's model share).")
    if chosen:
        ratio = default["seconds_per_video"] / costs[chosen]["seconds_per_video"]
        print(f"Meets it: {chosen} ({ratio:.1f}x cheaper than the default ensemble: goal "
              f"{'met' if ratio >= COST_GOAL else 'NOT met'}).")
    else:
        print("No size meets it. Short by (mean, worst set) points: " +
              "; ".join(f"{s} ({m:.2f}, {w:.2f})" for s, (m, w) in misses.items()))


def warnings_report(results: dict) -> None:
    seen: dict[str, list[str]] = {}
    for name, runs in results.items():
        for seed, models in runs.items():
            for model, r in models.items():
                for w in r.get("warnings", []):
                    seen.setdefault(w, []).append(f"{name} s{seed} {model}")
    if seen:
        print("\nWarnings during distillation:")
        for w, where in seen.items():
            print(f"- {w} ({len(where)}x, e.g. {', '.join(where[:3])})")
    else:
        print("\nNo warnings during distillation.")


def detail_table(results: dict, sets: list[str], sizes: list[str]) -> None:
    """Per (set, seed): accuracy of teacher and students, and the student's held-out agreement and epochs."""
    print("\nPer seed: test accuracy % (teacher | each student: test accuracy, test agreement; held-out "
          "agreement, best epoch / epochs trained)\n")
    print("| set | seed | teacher | " + " | ".join(sizes) + " |")
    print("| --- | --- | --- |" + " --- |" * len(sizes))
    for name in sets:
        for seed, models in sorted(results.get(name, {}).items()):
            cells = []
            for size in sizes:
                r = models.get(size)
                cells.append("-" if r is None else f"{r['accuracy']:.1f}, {r['agreement']:.1f}; "
                             f"{r['held_out']['agreement']:.0f}, {r['best_epoch'] + 1}/{r['epochs_trained']}")
            print(f"| {name} | {seed} | {models[TEACHER]['accuracy']:.1f} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path.home() / ".cache" / "vidtempo"
    parser.add_argument("--sets", default=",".join(SET_NAMES), help="comma-separated; default: all")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated run seeds")
    parser.add_argument("--sizes", default=",".join(STUDENT_SIZES), help="comma-separated student sizes")
    parser.add_argument("--jobs", type=int, default=1, help="(set, seed) jobs at the same time, in separate processes")
    parser.add_argument("--cache-dir", type=Path, default=cache)
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (a smoke run)")
    parser.add_argument("--limit-seeds", default="",
                        help="SET=N,...: run only the first N of --seeds on these sets (to fit a time budget)")
    parser.add_argument("--aeon-wheel", type=Path, default=None, help="default: downloaded into CACHE/aeon")
    parser.add_argument("--report-only", action="store_true", help="print the tables from the results there")
    args = parser.parse_args()
    args.sets = choose(args.sets, SET_NAMES, "--sets", parser)
    args.sizes = choose(args.sizes, tuple(STUDENT_SIZES), "--sizes", parser)
    args.sizes.sort(key=lambda s: STUDENT_SIZES[s]["hidden_dim"])
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.limit = {choose(k, SET_NAMES, "--limit-seeds", parser)[0]: int(v)
                      for k, v in (item.split("=") for item in args.limit_seeds.split(",") if item.strip())}
    except ValueError:
        parser.error("--seeds: comma-separated integers; --limit-seeds: SET=N,...")
    if not args.seeds or args.jobs < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--seeds needs a seed; --jobs and --epochs must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(f"date: {datetime.date.today().isoformat()}; command: python benchmarks/distill.py "
          + " ".join(sys.argv[1:]))
    print(f"teacher: {NUM_MEMBERS} members; archive sets: model {MODEL_CONFIG}, training {TRAINING_CONFIG} "
          f"(other settings: TrainingConfig defaults); run seed s trains with seed {RUN_SEED_STRIDE}*s")
    print(f"students: {', '.join(f'{s} {STUDENT_SIZES[s]}' for s in args.sizes)}; the teacher's training settings; "
          f"{DistillConfig()}")
    data = prepare_data(args.sets, args.cache_dir, args.aeon_wheel)
    if REAL_SET in data:
        d = data[REAL_SET]
        print(f"{REAL_SET}: {d['dir']} (suffix {d['suffix']!r}); model {d['model']}, training {d['training']}")
    jobs = plan_jobs(data, args.seeds, args.sizes, args.epochs, args.cache_dir, args.limit)
    if not args.report_only:
        run_missing(jobs, args.jobs)
    results = load(jobs)
    sets = [name for name in SET_NAMES if name in results]

    print("\ntiming (1 torch thread, nothing else of this benchmark running) ...", flush=True)
    timings = {}
    for name in sets:  # the first seed with the most finished models
        candidates = [j for j in jobs if j["set"] == name and (Path(j["teacher_dir"]) / "result.json").is_file()]
        job = max(candidates, key=lambda j: sum((Path(d) / "result.json").is_file() for d in j["students"].values()))
        timings[name] = time_set(job)
    costs = default_scale_costs(args.sizes)

    per_set_table(results, sets, args.sizes, timings)
    dtw = {s.name: s.dtw_accuracy for s in SETS}
    print("\n1-NN DTW (published): " + ", ".join(f"{n} {100 * dtw[n]:.1f}" for n in sets if dtw.get(n)))
    summary_table(results, sets, args.sizes, costs)
    detail_table(results, sets, args.sizes)
    warnings_report(results)


if __name__ == "__main__":
    main()
