"""Helpers that tests in several folders share: the command line in a new process, damaged feature files, and
checkpoints as the seed system wrote them."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import torch

from vidtempo import SuperEnhancedTemporalModel


def vidtempo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vidtempo", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def assert_refused(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidtempo: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _damage(path, what):
    with h5py.File(path, "r+") as f:
        if what == "nan":
            f["features"][1, 0, 0] = np.nan
        elif what == "inf":
            f["features"][2, 0, 3] = np.inf
        elif what == "label":
            labels = f["labels"][()]
            labels[0] = 7
            f["labels"][...] = labels
        elif what == "zero_frames":
            nf = f["num_frames"][()]
            nf[0] = 0
            f["num_frames"][...] = nf
        elif what == "too_many_frames":
            nf = f["num_frames"][()]
            nf[0] = f["features"].shape[1] + 1
            f["num_frames"][...] = nf
        elif what == "no_mapping":
            del f.attrs["category_mapping"]
        elif what == "bad_mapping":
            f.attrs["category_mapping"] = "{not json"
        elif what == "gap_mapping":
            f.attrs["category_mapping"] = json.dumps({"a": 0, "b": 2, "c": 3, "d": 4})
        elif what == "no_labels":
            del f["labels"]


SEED_MODEL_CONFIG = {"feature_dim": 12, "hidden_dim": 16, "num_classes": 4, "num_lstm_layers": 2,
                     "num_attention_heads": 4, "dropout": 0.4, "bidirectional": True}


def write_seed_checkpoint(path, seed):
    """A checkpoint with only the keys the seed system's trainer saves."""
    torch.manual_seed(seed)
    model = SuperEnhancedTemporalModel(**SEED_MODEL_CONFIG)
    torch.save({
        "epoch": 40, "model_state_dict": model.state_dict(), "optimizer_state_dict": {},
        "metrics": {"accuracy": np.float64(91.9)}, "train_metrics": {}, "history": {}, "best_val_acc": 91.9,
        "best_epoch": 40, "patience_counter": 0, "model_config": SEED_MODEL_CONFIG,
        "training_config": {"learning_rate": 0.001, "batch_size": 48, "num_epochs": 150, "patience": 25},
    }, path)
    return model


def _with_feature_settings(path, settings):
    from vidtempo.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    torch.save({**payload, "feature_settings": settings}, path)
