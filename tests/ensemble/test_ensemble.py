"""Ensemble: loading members, probabilities, TTA, and the seed system's checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import SEED_MODEL_CONFIG, _with_feature_settings, write_seed_checkpoint
from vidtempo import Ensemble, SuperEnhancedTemporalModel
from vidtempo.errors import CheckpointError

@pytest.fixture
def seed_checkpoints(tmp_path):
    models = [write_seed_checkpoint(tmp_path / f"best_ensemble_model_{i}.pt", i) for i in (1, 2)]
    (tmp_path / "ensemble_model_1_checkpoint_epoch_20.pt").write_bytes(b"periodic checkpoints are ignored")
    return tmp_path, models


def test_seed_checkpoints_load_strictly(seed_checkpoints):
    folder, models = seed_checkpoints
    # fp32: the seed computed in float32, and its probabilities are reproduced to float32 precision.
    ensemble = Ensemble.from_checkpoints(folder, device="cpu", precision="fp32")
    assert len(ensemble) == 2
    assert ensemble.class_names == ["Animation", "Flat_Content", "Gaming", "Natural_Content"]
    assert ensemble.names == ["ensemble_model_1", "ensemble_model_2"]
    torch.manual_seed(0)
    feats, lengths = torch.randn(5, 9, 12), torch.tensor([9, 3, 7, 1, 6])
    expected = torch.stack([torch.softmax(m.eval()(feats, lengths), -1) for m in models]).mean(0)
    torch.testing.assert_close(ensemble.predict_proba(feats, lengths), expected.detach())


def test_probabilities_and_tta(seed_checkpoints):
    folder, _ = seed_checkpoints
    ensemble = Ensemble.from_checkpoints([folder / "best_ensemble_model_1.pt", folder / "best_ensemble_model_2.pt"])
    torch.manual_seed(1)
    feats, lengths = torch.randn(4, 14, 12), torch.tensor([14, 11, 6, 2])
    for tta in (False, True):
        probs = ensemble.predict_proba(feats, lengths, tta=tta)
        assert probs.shape == (4, 4)
        torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    members = ensemble.member_probabilities(feats, lengths, tta=True)
    assert members.shape == (2, 4, 4)
    # A video of 2 frames has only the original and reversed views.
    from vidtempo.ensemble.ensemble import model_probabilities
    single = feats[3:4, :2]
    by_hand = torch.stack([model_probabilities(m, v, torch.tensor([2]), amp_dtype=ensemble.amp_dtype)
                           for m in ensemble.models
                           for v in (single, single.flip(1))]).reshape(2, 2, 1, 4).mean(1)
    torch.testing.assert_close(members[:, 3:4], by_hand)


def test_mismatched_members_are_refused(tmp_path):
    write_seed_checkpoint(tmp_path / "best_a.pt", 0)
    other = dict(SEED_MODEL_CONFIG, feature_dim=8)
    torch.save({"model_state_dict": SuperEnhancedTemporalModel(**other).state_dict(), "model_config": other},
               tmp_path / "best_b.pt")
    with pytest.raises(CheckpointError, match="best_b.pt"):
        Ensemble.from_checkpoints(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no best_"):
        Ensemble.from_checkpoints(empty)


def test_members_carry_their_extraction_settings(seed_checkpoints):
    from vidtempo.features.extract.settings import ExtractionSettings

    folder, _ = seed_checkpoints
    assert Ensemble.from_checkpoints(folder).extraction is None, "the seed's checkpoints record none"
    settings = ExtractionSettings(image_size=96, frames_per_video=8)
    for i in (1, 2):  # as training records them: the feature file's attributes
        _with_feature_settings(folder / f"best_ensemble_model_{i}.pt", {**settings.file_attrs(), "multi_scale": True})
    assert Ensemble.from_checkpoints(folder).extraction == settings


def test_members_with_different_extraction_settings_are_refused_in_one_line(seed_checkpoints):
    from vidtempo.features.extract.settings import ExtractionSettings

    folder, _ = seed_checkpoints
    _with_feature_settings(folder / "best_ensemble_model_1.pt", ExtractionSettings(image_size=96).to_dict())
    _with_feature_settings(folder / "best_ensemble_model_2.pt", ExtractionSettings(image_size=128).to_dict())
    with pytest.raises(CheckpointError) as info:
        Ensemble.from_checkpoints(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / "best_ensemble_model_2.pt"))
    assert "image_size 128 vs 96" in message
