"""Extraction settings: one plain-data form (to_dict / from_dict) for files, checkpoints and comparisons."""

from __future__ import annotations

import json

import pytest
import torch

from vidtempo.errors import VidtempoError
from vidtempo.features.extract.settings import ExtractionSettings

EXAMPLES = [
    ExtractionSettings(),
    ExtractionSettings(image_size=96, frames_per_video=8),
    ExtractionSettings(backbone="resnet50", multi_scale=False, weights="/weights/resnet50.pth"),
    ExtractionSettings(scales=(1.0, 0.5, 2.0)),
]


@pytest.mark.parametrize("settings", EXAMPLES, ids=["default", "small", "plain", "scales"])
def test_the_dict_round_trip_is_lossless(settings, tmp_path):
    assert ExtractionSettings.from_dict(settings.to_dict()) == settings
    # ... also through JSON and through a checkpoint that loads without pickle.
    assert ExtractionSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    torch.save({"feature_settings": settings.to_dict()}, tmp_path / "c.pt")
    assert ExtractionSettings.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["feature_settings"]) == settings


def test_a_feature_files_attributes_read_back_as_the_settings():
    settings = ExtractionSettings(image_size=96, frames_per_video=8)
    attrs = {**settings.file_attrs(), "multi_scale": True}  # what a file (and a checkpoint's copy) holds
    assert ExtractionSettings.from_dict(attrs) == settings


def test_differences_name_each_differing_setting():
    a, b = ExtractionSettings(image_size=96), ExtractionSettings(image_size=128, frames_per_video=8)
    assert a.differences(b) == ["image_size 96 vs 128", "frames_per_video 64 vs 8"]
    assert a.differences(ExtractionSettings(image_size=96)) == []


def test_settings_without_a_backbone_are_refused():
    with pytest.raises(VidtempoError, match="no extraction settings"):
        ExtractionSettings.from_dict({"multi_scale": True})
