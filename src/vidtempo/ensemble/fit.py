"""Decisions about an ensemble as a whole, made on the validation split and stored in its manifest.

- member weights: equal (the seed's behaviour), or proportional to validation accuracy, with members under
  a threshold dropped (weight 0);
- TTA views: starting from the original view, each other view is kept only if adding it raises validation
  accuracy, or keeps it and lowers the validation log-loss (the seed applied every view even when TTA
  lowered accuracy);
- temperature scaling of the combined probabilities (calibration);
- the trust-score threshold of the "uncertain" flag.

A cross-fitted ensemble (folds.py) makes all of them on out-of-fold predictions instead: every labelled
video (train and val) predicted by the member that did not train on it. That is several times the
validation split's videos, so calibration is fitted where validation alone would be too small to (see
calibration.MIN_CALIBRATION_VIDEOS), and it is the only held-out data there is: every member but one learned
from each validation video. The trust score's distance spread is refitted on the same predictions
(``trust.fit_distance_spread``). The manifest records which data calibration was fitted on, and which
splits the members learned from, so that scores on them are not shown as held-out ones.

Also the check for collapsed members (best validation accuracy within a margin of chance, or a class that
is hardly ever predicted right), and the assembly of trained members into an ensemble with its results.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .. import checkpoint
from .calibration import apply_temperature, expected_calibration_error, fit_calibration
from ..config import TrainingConfig
from .ensemble import Ensemble, EnsembleSettings, with_fitted_spread
from ..errors import ConfigError
from .early_exit import fit_exit_rule, staged_probabilities
from .evaluation import NOT_SCORES, evaluate_ensemble, write_evaluation_report
from ..files import write_json
from .folds import cross_fit_splits, cross_fits
from ..features.store import FeatureSplit
from .trust import fit_distance_spread, fit_uncertain_threshold
from .tta import TTA_VIEWS, average_member_views


def collapse_reason(val_metrics: Mapping[str, Any], num_classes: int, cfg: TrainingConfig) -> str | None:
    """Why a member counts as collapsed, or None. ``val_metrics`` are its best epoch's validation metrics.
    Only the classes that validation has count: an absent class's F1 of 0 says nothing about the member."""
    support = val_metrics.get("per_class_support") or {}
    present = {k: v for k, v in val_metrics["per_class_f1"].items() if support.get(k, 1) > 0}
    chance = 100.0 / max(len(present) if support else num_classes, 1)
    accuracy = float(val_metrics["accuracy"])
    if accuracy <= chance + cfg.collapse_margin:
        return f"validation accuracy {accuracy:.1f}% is within {cfg.collapse_margin:g} points of chance ({chance:.1f}%)"
    weak = {k: v for k, v in present.items() if v < cfg.collapse_min_class_f1}
    if weak:
        name, f1 = min(weak.items(), key=lambda kv: kv[1])
        return f"validation F1 of class {name} is {f1:.1f}% (< {cfg.collapse_min_class_f1:g}%)"
    return None


def view_probabilities(ensemble: Ensemble, split: FeatureSplit,
                       batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every member's probabilities for every TTA view ``[M, V, N, C]``, ``applies [V, N]``, and each
    member's distance ratio of every video to every class ``[M, N, C]`` (for the trust score)."""
    probs, applies, ratios = [], [], []
    for outputs in ensemble.split_view_outputs(split, TTA_VIEWS, batch_size):
        probs.append(torch.stack([o.view_probs for o in outputs]))
        applies.append(outputs[0].applies)
        ratios.append(ensemble.class_distance_ratios(outputs))
    return torch.cat(probs, dim=2), torch.cat(applies, dim=1), torch.cat(ratios, dim=1)


def _views_average(view_probs: torch.Tensor, applies: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    """``[M, V, N, C]`` -> ``[M, N, C]`` averaged over the chosen views that apply."""
    return average_member_views(view_probs[:, chosen], applies[chosen])


def _score(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    accuracy = float((probs.argmax(-1) == labels).float().mean())
    nll = float(-torch.log(probs.clamp_min(1e-12)).gather(1, labels[:, None]).mean())
    return accuracy, nll


def member_weights(member_accuracy: list[float], cfg: TrainingConfig) -> tuple[list[float] | None, list[str]]:
    notes = []
    weights = list(member_accuracy) if cfg.member_weighting == "val_accuracy" else [1.0] * len(member_accuracy)
    if cfg.drop_members_below is not None:
        dropped = [i for i, acc in enumerate(member_accuracy) if acc < cfg.drop_members_below]
        if len(dropped) == len(weights):
            notes.append(f"every member is below {cfg.drop_members_below}% validation accuracy; none dropped")
        else:
            for i in dropped:
                weights[i] = 0.0
                notes.append(f"member {i + 1} dropped: validation accuracy {member_accuracy[i]:.1f}% "
                             f"< {cfg.drop_members_below}%")
    if cfg.member_weighting == "equal" and all(w == 1.0 for w in weights):
        return None, notes
    return [float(w) for w in weights], notes


def _accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((probs.argmax(-1) == labels).float().mean())


def fit_ensemble_settings(ensemble: Ensemble, val: FeatureSplit, cfg: TrainingConfig,
                          views: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                          fallback_temperature: tuple[float, str] | None = None) -> EnsembleSettings:
    """Member weights, TTA views, and for plain and TTA predictions apart, temperature and trust threshold,
    all chosen on ``val``. ``views``: ``view_probabilities(ensemble, val)`` if already computed.
    ``fallback_temperature``: ``(temperature, how it was found)`` used where a temperature cannot be fitted on
    ``val``'s labels (a distilled student's, from its teacher's distributions)."""
    labels = torch.from_numpy(val.labels)
    view_probs, applies, class_ratios = views if views is not None else view_probabilities(ensemble, val)
    member_accuracy = [_accuracy(p, labels) for p in view_probs[:, 0]]
    weights, notes = member_weights(member_accuracy, cfg)
    ensemble.settings = EnsembleSettings(member_weights=weights)
    settings = _fit_settings(ensemble, view_probs, applies, class_ratios, labels, cfg, member_accuracy, notes,
                             "val", "validation", fallback_temperature)
    settings.learned_from = ["train"]
    if cfg.prefix_lengths:
        ensemble.settings = settings
        stages = sorted(set(cfg.prefix_lengths))
        staged, steps = staged_probabilities(ensemble, val, stages)
        settings.early_exit = fit_exit_rule(staged, steps, stages, f"validation, {val.num_videos} videos").to_dict()
    return settings


def fit_ensemble_settings_out_of_fold(ensemble: Ensemble, held_out: list[FeatureSplit],
                                      cfg: TrainingConfig) -> EnsembleSettings:
    """The same settings for a cross-fitted ensemble (folds.py), chosen on out-of-fold predictions: each
    labelled video (train and val) is predicted by the one member that did not train on it (member i on
    ``held_out[i]``). Member weights come from each member's accuracy on its own fold; TTA views,
    temperatures, the trust score's distance spread and its thresholds are fitted on the out-of-fold
    predictions, which stand in for the ensemble's on videos it never saw. Each member runs once over its
    fold, and every setting is fitted from that one pass."""
    members = [_single_member(ensemble, i) for i in range(len(ensemble.models))]
    parts = [view_probabilities(member, split) for member, split in zip(members, held_out)]
    fold_labels = [torch.from_numpy(split.labels) for split in held_out]
    member_accuracy = [_accuracy(probs[0, 0], labels) for (probs, _, _), labels in zip(parts, fold_labels)]
    weights, notes = member_weights(member_accuracy, cfg)
    view_probs = torch.cat([probs for probs, _, _ in parts], dim=2)  # [1, V, N, C]: one prediction per video
    applies = torch.cat([views for _, views, _ in parts], dim=1)
    labels = torch.cat(fold_labels)
    spread, spread_skipped = _fit_distance_spread(ensemble, parts, fold_labels)
    if spread_skipped:
        notes.append(spread_skipped)
    # The threshold is fitted on ratios to the refitted spread: the ratios inference will compute (a member
    # without representation statistics keeps its ratios of 1).
    class_ratios = torch.cat([ratios if stats is None else ratios / spread
                              for (_, _, ratios), stats in zip(parts, ensemble.representation_stats)], dim=1)
    settings = _fit_settings(members[0], view_probs, applies, class_ratios, labels, cfg, member_accuracy, notes,
                             "out_of_fold", "out-of-fold")
    settings.member_weights = weights
    settings.learned_from = ["train", "val"]
    settings.distance_q95 = [None if stats is None else (stats["distance_q95"].double() * spread).tolist()
                             for stats in ensemble.representation_stats]
    settings.report["distance_spread"] = {"factor": spread, "skipped": spread_skipped}
    settings.report["out_of_fold_accuracy"] = _accuracy(view_probs[0, 0], labels)
    if cfg.prefix_lengths:
        settings.early_exit = _fit_exit_rule_out_of_fold(members, held_out, settings, cfg)
    return settings


def _fit_exit_rule_out_of_fold(members: list[Ensemble], held_out: list[FeatureSplit], settings: EnsembleSettings,
                               cfg: TrainingConfig) -> dict[str, Any]:
    """The early-exit rule (early_exit.py) fitted on out-of-fold answers: each labelled video's stages read by
    the member that did not learn from it, calibrated with the ensemble's plain temperature."""
    stages = sorted(set(cfg.prefix_lengths))
    staged, steps = [], []
    for member, split in zip(members, held_out):
        member.settings = EnsembleSettings(temperature=settings.temperature)
        member_staged, member_steps = staged_probabilities(member, split, stages)
        staged.append(member_staged)
        steps.append(member_steps)
    count = sum(split.num_videos for split in held_out)
    return fit_exit_rule(torch.cat(staged, dim=1), np.concatenate(steps, axis=1), stages,
                         f"out-of-fold, {count} videos").to_dict()


def _fit_distance_spread(ensemble: Ensemble, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                         fold_labels: list[torch.Tensor]) -> tuple[float, str | None]:
    """The factor that widens the members' training spread to the out-of-fold videos' (trust.py), from the
    videos each member classified right (plain view). ``parts[i]``: ``view_probabilities`` of member i on
    fold i; a member without representation statistics has no spread to refit (its ratios are all 1)."""
    own = []
    for (view_probs, _, ratios), labels, stats in zip(parts, fold_labels, ensemble.representation_stats):
        if stats is not None:
            right = view_probs[0, 0].argmax(-1) == labels
            own.append(ratios[0].gather(1, labels[:, None])[:, 0][right])
    return fit_distance_spread(torch.cat(own).numpy() if own else np.zeros(0))


def _single_member(ensemble: Ensemble, index: int) -> Ensemble:
    return Ensemble([ensemble.models[index]], ensemble.category_mapping, names=[ensemble.names[index]],
                    representation_stats=[ensemble.representation_stats[index]], precision=ensemble.precision)


def _fit_settings(ensemble: Ensemble, view_probs: torch.Tensor, applies: torch.Tensor, class_ratios: torch.Tensor,
                  labels: torch.Tensor, cfg: TrainingConfig, member_accuracy: list[float], notes: list[str],
                  fitted_on: str, data: str, fallback_temperature: tuple[float, str] | None = None) -> EnsembleSettings:
    """TTA views, then temperature and trust threshold for plain and TTA predictions, for ``ensemble``
    (whose member weights are set) from its members' view probabilities ``[M, V, N, C]``. ``data`` names
    the predictions ("validation", "out-of-fold") in the reasons and in ``calibrated_on``."""
    plain = view_probs[:, 0]
    chosen, tried = _choose_views(ensemble, view_probs, applies, labels, cfg)
    calibration, report = {}, {}
    for mode, member_probs in (("plain", plain), ("tta", _views_average(view_probs, applies, chosen))):
        calibration[mode], report[mode] = _fit_calibration(ensemble, member_probs, class_ratios, labels, cfg, data,
                                                           fallback_temperature if mode == "plain" else None)
        for key in ("skipped", "fallback"):
            if report[mode][key]:
                notes.append(f"{mode} predictions: {report[mode][key]}")
    (temperature, uncertain_below), (tta_temperature, tta_uncertain_below) = calibration["plain"], calibration["tta"]
    return EnsembleSettings(
        member_weights=ensemble.settings.member_weights,
        tta_views=[TTA_VIEWS[i] for i in chosen],
        temperature=temperature,
        uncertain_below=uncertain_below,
        tta_temperature=tta_temperature,
        tta_uncertain_below=tta_uncertain_below,
        fitted_on=fitted_on,
        calibrated_on=f"{data}, {len(labels)} videos",
        report={"member_val_accuracy": member_accuracy, "tta_candidates": tried, "calibration": report,
                "notes": notes},
    )


def _choose_views(ensemble: Ensemble, view_probs: torch.Tensor, applies: torch.Tensor, labels: torch.Tensor,
                  cfg: TrainingConfig) -> tuple[list[int], dict[str, dict[str, float]]]:
    """Greedily add each TTA view that raises validation accuracy, or keeps it and lowers the log-loss."""
    chosen, tried = [0], {}
    best = _score(ensemble.combine(view_probs[:, 0], calibrated=False), labels)
    tried["original"] = {"accuracy": 100 * best[0], "nll": best[1]}
    for v in range(1, len(TTA_VIEWS)):
        candidate = chosen + [v]
        score = _score(ensemble.combine(_views_average(view_probs, applies, candidate), calibrated=False), labels)
        tried["+".join(TTA_VIEWS[i] for i in candidate)] = {"accuracy": 100 * score[0], "nll": score[1]}
        if not cfg.choose_tta_views or score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            chosen, best = candidate, score
    return chosen, tried


def _fit_calibration(ensemble: Ensemble, member_probs: torch.Tensor, class_ratios: torch.Tensor,
                     labels: torch.Tensor, cfg: TrainingConfig, data: str = "validation",
                     fallback_temperature: tuple[float, str] | None = None) -> tuple[tuple[float, float], dict[str, Any]]:
    """``(temperature, uncertain_below)`` for one inference mode, and how they were fitted: with the ECE
    before and after the temperature on the predictions it was fitted on (in-sample for its one parameter;
    the evaluation measures it on test). Where the labels cannot fit a temperature, ``fallback_temperature``
    (with the reason the labels could not, and how the fallback was found) is used when given."""
    uncalibrated = ensemble.combine(member_probs, calibrated=False)
    temperature, skipped = fit_calibration(uncalibrated, labels, data) if cfg.calibrate else (
        1.0, "calibration turned off (temperature 1)")
    fallback = None
    if skipped and cfg.calibrate and fallback_temperature is not None:
        temperature, how = fallback_temperature
        fallback = f"temperature {temperature:.3g} {how} ({data} labels could not fit one: {skipped.split(': ', 1)[1]})"
        skipped = None
    probs = apply_temperature(uncalibrated, temperature)
    signals = ensemble.trust_signals(member_probs, probs, class_ratios)
    correct = (probs.argmax(-1) == labels).numpy()
    threshold = fit_uncertain_threshold(signals["score"].numpy(), correct)
    return (temperature, threshold), {
        "temperature": temperature, "uncertain_below": threshold, "skipped": skipped, "fallback": fallback,
        "fitted_on": data,
        "videos": len(labels), "ece_before": expected_calibration_error(uncalibrated, labels),
        "ece_after": expected_calibration_error(probs, labels)}


def assemble_ensemble(
    checkpoint_dir: str | os.PathLike,
    splits: Mapping[str, FeatureSplit],
    cfg: TrainingConfig,
    num_models: int,
    results_dir: str | os.PathLike,
    device: torch.device,
    write: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[Ensemble, dict[str, Any]]:
    """Combine trained members ``ensemble_model_1..N``: fit the ensemble's settings on validation (on
    out-of-fold predictions for a cross-fitted ensemble), write ``ensemble.json``, score it on val and test
    (test only when cross-fitted: every member but one learned from each validation video), and write the
    results and the report (when ``write``)."""
    checkpoint_dir, results_dir = Path(checkpoint_dir), Path(results_dir)
    names = [checkpoint.member_name(i + 1) for i in range(num_models)]
    member_results = [_read_member_results(results_dir, name) for name in names]
    _check_strategy(member_results, cfg)
    member_files = [checkpoint.best_checkpoint_name(name) for name in names]
    ensemble = Ensemble.from_checkpoints([checkpoint_dir / f for f in member_files], device)
    computed = {}  # the members' view probabilities the fit ran, which the evaluation reuses
    if cross_fits(cfg.ensemble_strategy, num_models):
        folds = cross_fit_splits(splits, num_models, cfg.seed)
        ensemble.settings = fit_ensemble_settings_out_of_fold(ensemble, [fold["val"] for fold in folds], cfg)
        # Test scores and the saved manifest then use the spread fitted out-of-fold.
        ensemble.representation_stats = with_fitted_spread(ensemble.representation_stats, ensemble.settings)
        scored = ("test",)
    else:
        val_views = view_probabilities(ensemble, splits["val"])
        ensemble.settings = fit_ensemble_settings(ensemble, splits["val"], cfg, val_views)
        computed["val"] = (TTA_VIEWS, *val_views[:2])
        scored = ("val", "test")
    evaluation = evaluate_ensemble(ensemble, {s: splits[s] for s in scored}, computed=computed)
    results = _ensemble_results(num_models, ensemble, evaluation, member_results)
    report = results_dir / "report" / "report.md"
    if write:
        ensemble.save_manifest(checkpoint_dir, member_files)
        write_json(results, results_dir / checkpoint.ENSEMBLE_RESULTS_NAME)
        report = write_evaluation_report(
            results_dir / "report", evaluation, ensemble.class_names, splits["test"].labels,
            histories={r["model_name"]: r["history"] for r in member_results},
            best_epochs={r["model_name"]: r["best_epoch"] for r in member_results},
            notes=_ensemble_notes(member_results, ensemble), title=f"vidtempo ensemble of {num_models}")
    plain, tta, average = results["ensemble"]["test"], results["ensemble"]["test_tta"], results["members_average"]
    log(f"ensemble of {num_models}: test acc {plain['accuracy']:.2f}% (TTA {tta['accuracy']:.2f}%, views "
        f"{'+'.join(ensemble.settings.tta_views)}), members' average {average['accuracy']:.2f}%; report {report}")
    return ensemble, results


def _check_strategy(member_results: list[dict[str, Any]], cfg: TrainingConfig) -> None:
    """Members must have learned the way the ensemble is assembled (folds or seeds), with the same folds."""
    folds = len(member_results)
    for r in member_results:
        trained = r.get("training_config") or {}
        strategy = trained.get("ensemble_strategy", "seeds")
        if cross_fits(strategy, folds) != cross_fits(cfg.ensemble_strategy, folds):
            raise ConfigError(f"{r['model_name']} was trained with ensemble_strategy={strategy!r}; assemble it with "
                              f"the same, not {cfg.ensemble_strategy!r}")
        if cross_fits(strategy, folds) and r.get("cross_fit") != {"folds": folds, "seed": cfg.seed}:
            raise ConfigError(f"{r['model_name']} learned from other folds ({r.get('cross_fit')}) than an ensemble "
                              f"of {len(member_results)} with seed {cfg.seed} cuts")


def _read_member_results(results_dir: Path, name: str) -> dict[str, Any]:
    path = results_dir / checkpoint.results_name(name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{path}: missing or unreadable; train member {name} first") from None


def _ensemble_results(num_models: int, ensemble: Ensemble, evaluation: Mapping[str, Any],
                      member_results: list[dict[str, Any]]) -> dict[str, Any]:
    plain, tta = evaluation["test"]["plain"]["ensemble"], evaluation["test"]["tta"]["ensemble"]
    average = {
        "accuracy": float(np.mean([r["test"]["accuracy"] for r in member_results])),
        "accuracy_tta": float(np.mean([r["test_tta"]["accuracy"] for r in member_results])),
    }
    return {
        "num_models": num_models,
        "ensemble": {"test": plain, "test_tta": tta},
        "members": member_results,
        "members_average": average,
        "improvement_over_members_average": {
            "accuracy": plain["accuracy"] - average["accuracy"],
            "accuracy_tta": tta["accuracy"] - average["accuracy_tta"],
        },
        "ensemble_settings": dataclasses.asdict(ensemble.settings),
        # Per split, whether no member learned from it: scores on a split marked False are not held-out ones.
        "held_out": {split: ensemble.settings.held_out(split) for split in ("train", "val", "test")},
        "calibrated_on": ensemble.settings.calibrated_on,
        "calibration": evaluation["calibration"],
        "evaluation": {k: v for k, v in evaluation.items() if k not in NOT_SCORES},
    }


def _fit_data(settings: EnsembleSettings) -> str:
    return "out-of-fold predictions" if settings.fitted_on == "out_of_fold" else "validation"


def _ensemble_notes(member_results: list[dict[str, Any]], ensemble: Ensemble) -> list[str]:
    notes = []
    for r in member_results:
        for attempt in (r.get("collapse_check") or {}).get("attempts", []):
            if attempt["collapsed"]:
                notes.append(f"{r['model_name']} with seed {attempt['seed']} collapsed ({attempt['collapsed']}).")
    settings = ensemble.settings
    notes.append(f"TTA views chosen on {_fit_data(settings)}: {' + '.join(settings.tta_views)}.")
    if settings.calibrated_on:
        notes.append(f"Calibration (temperatures, trust thresholds) fitted on: {settings.calibrated_on}.")
    weights = "equal" if settings.member_weights is None else ", ".join(f"{w:.3g}" for w in settings.member_weights)
    notes.append(f"Member weights: {weights}.")
    notes.extend(settings.report.get("notes", []))
    return notes
