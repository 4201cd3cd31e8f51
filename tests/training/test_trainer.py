"""EnhancedTemporalModelTrainer: the seed's API as written, files left, exact resume, learning."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import Ensemble, EnhancedTemporalModelTrainer
from vidtempo.checkpoint import RESUME_KEYS, SEED_KEYS, VIDTEMPO_KEYS
from vidtempo.features.synthetic import write_synthetic_features


def make_trainer(features, output, **training):
    return EnhancedTemporalModelTrainer(features, output, device="cpu", model_config=TINY_MODEL,
                                        training_config={**TINY_TRAINING, **training}, quiet=True)


def test_seed_import_path_and_cuda_fallback(small_features, tmp_path):
    from model_train_new import EnhancedTemporalModelTrainer as SeedName

    assert SeedName is EnhancedTemporalModelTrainer
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so there is no fallback to see")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = SeedName(features_dir=str(small_features), output_dir=str(tmp_path / "checkpoints"), device="cuda")
    assert trainer.device.type == "cpu"
    assert len([w for w in caught if "CUDA" in str(w.message)]) == 1


@pytest.mark.slow
def test_single_model_leaves_the_seed_files(small_features, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = make_trainer(small_features, "checkpoints", checkpoint_every=2)
    model, results = trainer.train_single_model(num_epochs=10, batch_size=48, learning_rate=1e-3,
                                                model_name="ensemble_model_1", feature_file_suffix="_multiscale",
                                                results_dir="results")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best_ensemble_model_1.pt", "ensemble_model_1_checkpoint_epoch_4.pt",
                     "ensemble_model_1_checkpoint_epoch_6.pt", "ensemble_model_1_checkpoint_epoch_8.pt",
                     "ensemble_model_1_config.json"]
    saved = json.loads((tmp_path / "results" / "ensemble_model_1_results.json").read_text())
    assert {"best_epoch", "best_val_acc", "stopped_early", "test", "test_tta", "history"} <= set(saved)
    assert len(saved["history"]["val_acc"]) == 10
    assert saved["best_val_acc"] == max(saved["history"]["val_acc"])
    # Ties in accuracy are broken by validation loss (the default selection).
    history = saved["history"]
    tied = [e for e, acc in enumerate(history["val_acc"]) if acc == saved["best_val_acc"]]
    assert saved["best_epoch"] == min(tied, key=lambda e: history["val_loss"][e])
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        payload = torch.load(path, weights_only=True)
        for key in (*SEED_KEYS, *RESUME_KEYS, *VIDTEMPO_KEYS):
            assert key in payload, (path.name, key)
    best = torch.load(tmp_path / "checkpoints" / "best_ensemble_model_1.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model_state_dict"][name]), "the returned model holds the best weights"
    config = json.loads((tmp_path / "checkpoints" / "ensemble_model_1_config.json").read_text())
    assert config["training_config"]["checkpoint_every"] == 2 and config["model_config"]["hidden_dim"] == 32


@pytest.mark.slow
def test_early_stopping_after_patience(small_features, tmp_path):
    # The seed's strict rule: only a higher validation accuracy counts as improvement.
    trainer = make_trainer(small_features, tmp_path / "c", patience=2, learning_rate=1e-7, selection="accuracy")
    _, results = trainer.train_single_model(num_epochs=30, model_name="m", results_dir=tmp_path / "r")
    assert results["stopped_early"]
    assert results["epochs_trained"] == results["best_epoch"] + 3


def _final_state(trainer, name, **kwargs):
    model, results = trainer.train_single_model(model_name=name, **kwargs)
    last = torch.load(trainer.output_dir / f"{name}_checkpoint_epoch_8.pt", weights_only=True)
    return model.state_dict(), results, last


@pytest.mark.slow
def test_resume_ends_exactly_where_the_uncut_run_ends(small_features, tmp_path):
    settings = dict(checkpoint_every=2, num_workers=2)
    uncut_state, uncut, uncut_last = _final_state(make_trainer(small_features, tmp_path / "a", **settings), "m",
                                                  num_epochs=10, results_dir=tmp_path / "ra")
    # The cut run stops after epoch 5 (0-based 4), as a crash right after that checkpoint would.
    cut = make_trainer(small_features, tmp_path / "b", **settings)
    cut.train_single_model(model_name="m", num_epochs=5, results_dir=tmp_path / "rb")
    torch.manual_seed(1234)  # whatever ran before in the process must not matter
    np.random.seed(99)
    resumed_trainer = make_trainer(small_features, tmp_path / "b", **settings)
    resumed_state, resumed, resumed_last = _final_state(
        resumed_trainer, "m", num_epochs=10, results_dir=tmp_path / "rb",
        resume_from=tmp_path / "b" / "m_checkpoint_epoch_4.pt")
    assert _same_history(resumed, uncut)
    assert resumed["best_epoch"] == uncut["best_epoch"]
    for name in uncut_state:
        assert torch.equal(resumed_state[name], uncut_state[name]), name
        assert torch.equal(resumed_last["model_state_dict"][name], uncut_last["model_state_dict"][name]), name


def _same_history(a, b):
    # epoch_time differs between runs; everything else must be identical.
    return all(a["history"][k] == b["history"][k] for k in a["history"] if k != "epoch_time")


@pytest.mark.slow
def test_same_seed_gives_the_same_weights(small_features, tmp_path):
    first, _ = make_trainer(small_features, tmp_path / "a").train_single_model(
        num_epochs=2, model_name="m", results_dir=tmp_path / "r")
    torch.manual_seed(7)
    torch.randn(100)
    second, _ = make_trainer(small_features, tmp_path / "b").train_single_model(
        num_epochs=2, model_name="m", results_dir=tmp_path / "r")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_ensemble_members_and_results(small_features, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = make_trainer(small_features, "checkpoints", collapse_retries=0)
    ensemble, results = trainer.train_ensemble(num_models=2, num_epochs=3, batch_size=48, learning_rate=1e-3,
                                               feature_file_suffix="_multiscale", results_dir="results")
    assert isinstance(ensemble, Ensemble) and len(ensemble) == 2
    assert (tmp_path / "checkpoints" / "best_ensemble_model_1.pt").is_file()
    assert (tmp_path / "checkpoints" / "best_ensemble_model_2.pt").is_file()
    saved = json.loads((tmp_path / "results" / "ensemble_final_results.json").read_text())
    assert {"ensemble", "members", "members_average", "improvement_over_members_average"} <= set(saved)
    assert [m["training_config"]["seed"] for m in saved["members"]] == [42, 43]
    manifest = json.loads((tmp_path / "checkpoints" / "ensemble.json").read_text())
    assert manifest["members"] == ["best_ensemble_model_1.pt", "best_ensemble_model_2.pt"]
    # Cross-fitted by default: settings fitted on out-of-fold predictions, scored on test only.
    assert manifest["settings"]["fitted_on"] == "out_of_fold" and 0 <= manifest["settings"]["uncertain_below"] <= 1
    assert set(saved["evaluation"]) == {"test"}
    loaded = Ensemble.from_checkpoints(tmp_path / "checkpoints")
    assert loaded.settings.uncertain_below == manifest["settings"]["uncertain_below"]
    feats = torch.from_numpy(trainer.splits["test"].features)
    lengths = torch.from_numpy(trainer.splits["test"].num_frames)
    torch.testing.assert_close(loaded.predict_proba(feats, lengths), ensemble.predict_proba(feats, lengths))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["seeds", "cross_fit"])
def test_assembly_runs_each_member_once_per_split_and_view(small_features, tmp_path, monkeypatch, strategy):
    from vidtempo.ensemble.evaluation import evaluate_ensemble
    from vidtempo.model.temporal import TemporalModel
    from vidtempo.ensemble.tta import TTA_VIEWS

    trainer = make_trainer(small_features, tmp_path / "ckpt", collapse_retries=0, ensemble_strategy=strategy)
    for index in (1, 2):
        trainer.train_member(index, 2, num_epochs=2, results_dir=tmp_path / "results")
    rows = []
    encode = TemporalModel.encode

    def counting_encode(model, features, lengths=None):
        rows.append(features.shape[0])
        return encode(model, features, lengths)

    monkeypatch.setattr(TemporalModel, "encode", counting_encode)
    ensemble, results = trainer.assemble_ensemble(2, results_dir=tmp_path / "results")
    val, test = trainer.splits["val"], trainer.splits["test"]
    test_rows = 2 * len(ensemble.settings.tta_views) * test.num_videos  # test once, over the chosen views
    if strategy == "seeds":
        # Fitting runs every view over val; the evaluation reuses them (its plain scores are the original view's).
        assert sum(rows) == 2 * len(TTA_VIEWS) * val.num_videos + test_rows
    else:
        # Each labelled video, once per view, by the one member that held its fold out; val is not scored.
        assert sum(rows) == len(TTA_VIEWS) * (trainer.splits["train"].num_videos + val.num_videos) + test_rows
    monkeypatch.setattr(TemporalModel, "encode", encode)
    scored = {"val": val, "test": test} if strategy == "seeds" else {"test": test}
    rerun = evaluate_ensemble(Ensemble.from_checkpoints(tmp_path / "ckpt"), scored)
    assert all(rerun[split] == results["evaluation"][split] for split in scored)
    assert rerun["calibration"] == results["calibration"]


@pytest.mark.slow
@pytest.mark.parametrize("kept", ["raw", "averaged"])
def test_a_best_last_epoch_is_written_once_with_what_inference_needs(small_features, tmp_path, monkeypatch, kept):
    from vidtempo import checkpoint

    if kept == "averaged":  # the epoch keeps the average of the weights
        monkeypatch.setattr("vidtempo.training.run.scores_better", lambda candidate, incumbent, selection: True)
    writes = []
    save = checkpoint.save_checkpoint

    def recording_save(payload, path):
        writes.append((path.name, payload["epoch"], "representation_stats" in payload and "run_history" in payload))
        return save(payload, path)

    monkeypatch.setattr(checkpoint, "save_checkpoint", recording_save)
    trainer = make_trainer(small_features, tmp_path / "c", weight_averaging="ema" if kept == "averaged" else "none")
    model, _ = trainer.train_single_model(num_epochs=1, model_name="m", results_dir=tmp_path / "r")
    assert writes == [("best_m.pt", 0, True)]
    best = torch.load(tmp_path / "c" / "best_m.pt", weights_only=True)
    assert best.get("kept_weights", "raw") == kept and len(best["run_history"]["val_acc"]) == 1
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model_state_dict"][name]), "the returned model holds the best weights"
    if kept == "averaged":
        raw = best["training_state_dict"]
        assert not all(torch.equal(raw[k], v) for k, v in best["model_state_dict"].items()), "raw weights kept apart"


@pytest.mark.slow
def test_every_improvement_is_on_disk_and_the_end_adds_what_inference_needs(small_features, tmp_path, monkeypatch):
    from vidtempo import checkpoint
    from vidtempo.training.run import scores_better

    writes = []
    save = checkpoint.save_checkpoint

    def recording_save(payload, path):
        writes.append((path.name, payload["epoch"], "representation_stats" in payload))
        return save(payload, path)

    monkeypatch.setattr(checkpoint, "save_checkpoint", recording_save)
    trainer = make_trainer(small_features, tmp_path / "c", checkpoint_every=2)
    _, results = trainer.train_single_model(num_epochs=5, model_name="m", results_dir=tmp_path / "r")
    history, best = results["history"], {"accuracy": -1.0, "loss": float("inf")}
    improved = []
    for epoch, (acc, loss) in enumerate(zip(history["val_acc"], history["val_loss"])):
        if scores_better({"accuracy": acc, "loss": loss}, best, "accuracy_then_loss"):
            best = {"accuracy": acc, "loss": loss}
            improved.append(epoch)
    expected = [("best_m.pt", e, False) for e in improved]
    expected += [("m_checkpoint_epoch_2.pt", 2, False), ("m_checkpoint_epoch_4.pt", 4, False)]
    expected.append(("best_m.pt", improved[-1], True))  # the last epoch writes a periodic checkpoint: no deferral
    assert sorted(writes) == sorted(expected)
    assert writes[-1] == ("best_m.pt", improved[-1], True)


@pytest.mark.slow
def test_collapsed_members_are_caught_and_retrained(small_features, tmp_path):
    # A learning rate this small leaves the model at chance: every attempt collapses.
    trainer = make_trainer(small_features, tmp_path / "c", learning_rate=1e-9, collapse_retries=2)
    with pytest.warns(RuntimeWarning, match="collapsed") as caught:
        _, results = trainer.train_ensemble(num_models=2, num_epochs=2, results_dir=tmp_path / "r")
    messages = [str(w.message) for w in caught]
    assert any("retraining with seed 44" in m for m in messages), messages  # 42 + member 0 + 1 attempt x 2
    assert any("every attempt collapsed" in m for m in messages), messages
    first = results["members"][0]["collapse_check"]
    assert [a["seed"] for a in first["attempts"]] == [42, 44, 46]
    assert all("chance" in a["collapsed"] for a in first["attempts"])
    assert [a["seed"] for a in results["members"][1]["collapse_check"]["attempts"]] == [43, 45, 47]
    kept_seed = results["members"][0]["training_config"]["seed"]
    best = torch.load(tmp_path / "c" / "best_ensemble_model_1.pt", weights_only=True)
    assert best["training_config"]["seed"] == kept_seed, "the kept attempt's weights are the member's"
    assert not list((tmp_path / "c").glob(".best_*")), "no stashed attempt is left behind"
    saved = json.loads((tmp_path / "r" / "ensemble_model_1_results.json").read_text())
    assert saved["collapse_check"]["collapsed"]


@pytest.mark.slow
def test_a_healthy_member_is_not_retrained(small_features, tmp_path):
    trainer = make_trainer(small_features, tmp_path / "c", collapse_min_class_f1=0.0, collapse_margin=-100.0)
    _, results = trainer.train_ensemble(num_models=1, num_epochs=1, results_dir=tmp_path / "r")
    assert results["members"][0]["collapse_check"] == {
        "attempts": [{"seed": 42, "best_val_acc": results["members"][0]["best_val_acc"], "collapsed": None}],
        "collapsed": None}


@pytest.mark.slow
def test_tensorboard_logging(small_features, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    trainer = EnhancedTemporalModelTrainer(small_features, tmp_path / "c", device="cpu", model_config=TINY_MODEL,
                                           training_config=TINY_TRAINING, quiet=True,
                                           tensorboard_dir=tmp_path / "tb")
    _, results = trainer.train_single_model(num_epochs=3, model_name="m", results_dir=tmp_path / "r")
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "m"))
    events.Reload()
    assert {"loss/train", "accuracy/val", "learning_rate"} <= set(events.Tags()["scalars"])
    logged = [e.value for e in events.Scalars("accuracy/val")]
    assert logged == pytest.approx(results["history"]["val_acc"])


@pytest.mark.slow
def test_precision_auto_and_bf16_training(tmp_path):
    from vidtempo.runtime import cpu_has_fast_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None and resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) is (torch.bfloat16 if cpu_has_fast_bf16() else None)
    write_synthetic_features(tmp_path / "f", videos_per_split={"train": 256, "val": 64, "test": 128})
    trainer = make_trainer(tmp_path / "f", tmp_path / "c", precision="bf16")
    _, results = trainer.train_single_model(num_epochs=15, model_name="m", results_dir=tmp_path / "r")
    assert results["test"]["accuracy"] >= 90.0, results["history"]["val_acc"]
    config = json.loads((tmp_path / "c" / "m_config.json").read_text())
    assert config["precision"] == "bf16" and config["precision_reason"].startswith("requested: bf16 autocast")
    assert "grad_scaler_state_dict" not in torch.load(tmp_path / "c" / "best_m.pt", weights_only=True)


@pytest.mark.slow
def test_the_run_record_says_what_auto_chose_and_why(small_features, tmp_path):
    from vidtempo.runtime import cpu_has_fast_bf16

    make_trainer(small_features, tmp_path / "c", precision="auto").train_single_model(
        num_epochs=1, model_name="m", results_dir=tmp_path / "r")
    config = json.loads((tmp_path / "c" / "m_config.json").read_text())
    assert config["training_config"]["precision"] == "auto"
    assert config["precision"] == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert config["precision_reason"].startswith("auto: ")


@pytest.mark.slow
def test_it_learns_what_a_frame_mean_cannot(tmp_path):
    write_synthetic_features(tmp_path / "f", videos_per_split={"train": 256, "val": 64, "test": 128})
    started = time.perf_counter()
    trainer = make_trainer(tmp_path / "f", tmp_path / "c")
    _, results = trainer.train_single_model(num_epochs=15, model_name="m", results_dir=tmp_path / "r")
    elapsed = time.perf_counter() - started
    assert results["test"]["accuracy"] >= 90.0, results["history"]["val_acc"]
    print(f"reached {results['test']['accuracy']:.1f}% test accuracy in {elapsed:.1f}s")
    # A mean over frames carries no class information in this task.
    split = trainer.splits["test"]
    means = np.stack([split.features[i, :n].mean(0) for i, n in enumerate(split.num_frames)])
    centroids = np.stack([means[split.labels == c].mean(0) for c in range(4)])
    spread = np.linalg.norm(centroids - centroids.mean(0), axis=1).max()
    assert spread < 0.2 * np.linalg.norm(centroids, axis=1).mean()


@pytest.mark.slow
def test_a_manifest_fitted_for_other_weights_is_refused(small_features, tmp_path):
    from vidtempo.errors import CheckpointError

    trainer = make_trainer(small_features, tmp_path / "ckpt", collapse_retries=0)
    trainer.train_ensemble(num_models=2, num_epochs=2, results_dir=tmp_path / "results")
    assert len(Ensemble.from_checkpoints(tmp_path / "ckpt")) == 2
    # Retraining one member leaves ensemble.json describing the old weights.
    trainer.train_member(2, 2, num_epochs=3, results_dir=tmp_path / "results")
    with pytest.raises(CheckpointError, match=r"best_ensemble_model_2\.pt.*--assemble"):
        Ensemble.from_checkpoints(tmp_path / "ckpt")
    trainer.assemble_ensemble(2, results_dir=tmp_path / "results")
    assert len(Ensemble.from_checkpoints(tmp_path / "ckpt")) == 2
    # A manifest written before members were fingerprinted cannot be checked: loading says so.
    manifest_path = tmp_path / "ckpt" / "ensemble.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["checkpoint_ids"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match="cannot check"):
        Ensemble.from_checkpoints(tmp_path / "ckpt")


@pytest.mark.slow
def test_leftovers_of_an_older_run_do_not_prune_the_new_run(small_features, tmp_path):
    trainer = make_trainer(small_features, tmp_path / "ckpt", checkpoint_every=2, keep_last_checkpoints=2)
    older = [tmp_path / "ckpt" / f"m_checkpoint_epoch_{e}.pt" for e in (100, 120, 140)]
    for path in older:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an older run's checkpoint")
    with pytest.warns(RuntimeWarning, match="earlier run"):
        trainer.train_single_model(num_epochs=8, model_name="m", results_dir=tmp_path / "r")
    names = sorted(p.name for p in (tmp_path / "ckpt").glob("m_checkpoint_epoch_*.pt"))
    assert names == ["m_checkpoint_epoch_100.pt", "m_checkpoint_epoch_120.pt", "m_checkpoint_epoch_140.pt",
                     "m_checkpoint_epoch_4.pt", "m_checkpoint_epoch_6.pt"]
    # A resumed run prunes the files of the run it continues.
    resumed = make_trainer(small_features, tmp_path / "ckpt", checkpoint_every=2, keep_last_checkpoints=2)
    resumed.train_single_model(num_epochs=12, model_name="m", results_dir=tmp_path / "r",
                               resume_from=tmp_path / "ckpt" / "m_checkpoint_epoch_6.pt")
    names = sorted(p.name for p in (tmp_path / "ckpt").glob("m_checkpoint_epoch_*.pt"))
    assert names == ["m_checkpoint_epoch_10.pt", "m_checkpoint_epoch_100.pt", "m_checkpoint_epoch_120.pt",
                     "m_checkpoint_epoch_140.pt", "m_checkpoint_epoch_8.pt"]


def write_easy_split(path, labels, seed):
    """Features whose class is written in one channel: a tiny model learns them in a few epochs."""
    from vidtempo.features.store import write_split

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    features = rng.normal(0, 0.3, (len(labels), 10, 8)).astype(np.float32)
    features[np.arange(len(labels)), :, labels] += 3.0
    write_split(path, features, labels, np.full(len(labels), 10), {f"c{i}": i for i in range(4)}, multi_scale=False)


@pytest.mark.slow
def test_a_class_missing_from_validation_is_named_once_and_not_retrained(tmp_path):
    features = tmp_path / "features"
    write_easy_split(features / "train_features.h5", np.arange(64) % 4, 0)
    write_easy_split(features / "val_features.h5", np.arange(24) % 3, 1)  # no videos of class c3
    write_easy_split(features / "test_features.h5", np.arange(16) % 4, 2)
    trainer = make_trainer(features, tmp_path / "ckpt", learning_rate=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = trainer.train_member(1, 1, num_epochs=5, feature_file_suffix="", results_dir=tmp_path / "r")
    absent = [w for w in caught if "no validation videos" in str(w.message)]
    assert len(absent) == 1 and "class c3" in str(absent[0].message)
    assert results["best_val_acc"] == 100.0
    assert results["collapse_check"]["collapsed"] is None
    assert len(results["collapse_check"]["attempts"]) == 1, "not retrained"


@pytest.mark.slow
def test_member_scores_and_trust_centroids_use_the_ensembles_precision(small_features, tmp_path):
    from vidtempo.training.data import make_loader
    from vidtempo.ensemble.ensemble import model_outputs
    from vidtempo.ensemble.trust import representation_stats

    from vidtempo.ensemble.ensemble import inference_amp_dtype

    # Train in the other precision than the one inference uses on this machine.
    training_precision = "fp32" if inference_amp_dtype("cpu") is not None else "bf16"
    trainer = make_trainer(small_features, tmp_path / "ckpt", precision=training_precision)
    model, results = trainer.train_single_model(num_epochs=2, model_name="m", results_dir=tmp_path / "r")
    ensemble = Ensemble.from_checkpoints([tmp_path / "ckpt" / "best_m.pt"])
    train = trainer.splits["train"]
    pooled = torch.cat([model_outputs(ensemble.models[0], f, n, amp_dtype=ensemble.amp_dtype).pooled
                        for f, _, n in make_loader(train, 32, 0)])
    expected = representation_stats(pooled, torch.from_numpy(train.labels), train.num_classes)
    stored = ensemble.representation_stats[0]
    torch.testing.assert_close(stored["centroids"], expected["centroids"], atol=1e-6, rtol=1e-5)
    test = trainer.splits["test"]
    predicted = ensemble.predict_proba(test.features, test.num_frames).argmax(-1).numpy()
    assert results["test"]["accuracy"] == pytest.approx(100.0 * float((predicted == test.labels).mean()))


def test_loader_workers_default_to_what_the_machine_has(monkeypatch):
    from vidtempo.config import TrainingConfig

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert TrainingConfig().num_workers == 0, "workers only compete with training on 2 cores"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert TrainingConfig().num_workers == 4, "the seed's 4 where the cores allow"
    assert TrainingConfig(num_workers=3).num_workers == 3, "an explicit value is kept"


def test_missing_multiscale_files_name_the_unsuffixed_ones(tmp_path):
    from vidtempo.errors import FeatureStoreError

    write_synthetic_features(tmp_path / "f", videos_per_split={"train": 8, "val": 8, "test": 8}, feature_dim=4,
                             min_frames=4, max_frames=6, suffix="")
    trainer = make_trainer(tmp_path / "f", tmp_path / "ckpt")
    with pytest.raises(FeatureStoreError, match=r"train_features_multiscale\.h5.*train_features\.h5"):
        trainer.train_single_model(num_epochs=1, model_name="m", results_dir=tmp_path / "r")


@pytest.mark.slow
def test_checkpoints_written_in_the_background_hold_their_own_epoch(small_features, tmp_path, monkeypatch):
    """Each checkpoint is written while the next epoch already trains: its weights and optimiser state are
    those at the end of its own epoch, and the run returns only once every file is whole."""
    import threading

    from vidtempo import checkpoint
    from vidtempo.training.run import TrainingRun

    at_epoch_end, trained = {}, {epoch: threading.Event() for epoch in range(4)}
    train_epoch, save = TrainingRun.train_epoch, checkpoint.save_checkpoint

    def recording_train_epoch(run, epoch):
        metrics = train_epoch(run, epoch)
        at_epoch_end[epoch] = ({k: v.clone() for k, v in run.model.state_dict().items()},
                               [s["exp_avg"].clone() for s in run.optimizer.state.values()])
        trained[epoch].set()
        return metrics

    def save_once_the_next_epoch_trained(payload, path):
        # A periodic checkpoint of epoch e is written only after epoch e + 1 changed the weights in place
        # (the last epoch's is not held back): without a snapshot it would hold epoch e + 1's weights.
        if "checkpoint_epoch" in Path(path).name and payload["epoch"] < 3:
            assert trained[payload["epoch"] + 1].wait(timeout=60)
        return save(payload, path)

    monkeypatch.setattr(TrainingRun, "train_epoch", recording_train_epoch)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save_once_the_next_epoch_trained)
    trainer = make_trainer(small_features, tmp_path / "ckpt", checkpoint_every=1, keep_last_checkpoints=2)
    trainer.train_single_model(num_epochs=4, model_name="m", results_dir=tmp_path / "r")
    periodic = checkpoint.periodic_checkpoints(tmp_path / "ckpt", "m")
    assert [epoch for epoch, _ in periodic] == [2, 3]  # epoch 1's, pruned once epoch 3's was written
    best = checkpoint.load_checkpoint(tmp_path / "ckpt" / "best_m.pt")
    for epoch, payload in [(e, checkpoint.load_checkpoint(p)) for e, p in periodic] + [(best["epoch"], best)]:
        weights, exp_avg = at_epoch_end[epoch]
        assert all(torch.equal(payload["model_state_dict"][k], v) for k, v in weights.items()), epoch
        saved_exp_avg = [s["exp_avg"] for s in payload["optimizer_state_dict"]["state"].values()]
        assert all(torch.equal(a, b) for a, b in zip(saved_exp_avg, exp_avg, strict=True)), epoch
    assert not list((tmp_path / "ckpt").glob(".*tmp*"))
